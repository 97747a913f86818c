"""What the node's OVS client and the OVN Northbound client share on top of ovsdbapp."""

from __future__ import annotations

from typing import Any


class OwnConnection:
    """A mixin giving an ovsdbapp API class one connection per instance.

    ovsdbapp keeps an API class's connection in a *class* attribute and ignores
    any later one, so a second instance (another database) would silently
    share the first instance's connection; this property keeps it per instance.
    Put it before the ovsdbapp API class among the bases.
    """

    @property
    def ovsdb_connection(self) -> Any:
        """The connection of this instance."""
        return self._own_connection

    @ovsdb_connection.setter
    def ovsdb_connection(self, connection: Any) -> None:
        self._own_connection = connection
