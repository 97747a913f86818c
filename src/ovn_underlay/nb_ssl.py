"""The client's files for OVN Northbound over SSL (``ssl:HOST:PORT`` remotes).

An ovsdb-server listening on ``pssl:`` shows a certificate, which the client checks
against the CA certificate it has, and asks the client for one signed by its own CA.
So a client of an ``ssl:`` remote needs three files, as ovn-nbctl's ``-p/--private-key``,
``-c/--certificate`` and ``-C/--ca-cert``: :class:`NbSsl`.  Every command taking
``--nb`` takes them as ``--nb-private-key``, ``--nb-certificate`` and ``--nb-ca-cert``;
:func:`nb_ssl` checks a remote and the files given with it together.

Files given with a remote that has no ``ssl:`` part are refused (:class:`ConfigError`),
not ignored: that is a remote written ``tcp:`` by mistake, or files left over from one.
"""

from __future__ import annotations

import ssl
from dataclasses import astuple, dataclass

from ovn_underlay.config import ConfigError

OPTIONS = ("--nb-private-key", "--nb-certificate", "--nb-ca-cert")
"""The command-line options of the three files, in :class:`NbSsl`'s order."""
HELP = ("the client's private key (PEM; as ovn-nbctl's -p)",
        "the client's certificate (PEM), signed by a CA the NB server trusts (as "
        "ovn-nbctl's -c)",
        "the CA certificate (PEM) that signed the NB server's certificate (as ovn-nbctl's "
        "-C)")
"""What each of :data:`OPTIONS` is, for ``--help``."""
NODE_OPTIONS = ("node-init --nb-private-key", "node-init --nb-certificate",
                "node-init --nb-ca-cert")
"""How a node's settings of the three files are given (and named in errors)."""


def ssl_targets(remote: str) -> list[str]:
    """The ``ssl:`` servers of a comma-separated NB remote ("tcp:a:6641,ssl:b:6641")."""
    return [t.strip() for t in remote.split(",") if t.strip().startswith("ssl:")]


@dataclass(frozen=True)
class NbSsl:
    """The client's private key, its certificate and the CA certificate (PEM files)."""

    private_key: str
    certificate: str
    ca_cert: str

    def check(self, options: tuple[str, str, str] = OPTIONS) -> None:
        """Raise ConfigError, naming the option and the file, unless each file can be read
        and together they make a client SSL context: the CA file holds a certificate, the
        certificate file one, and the private key is that certificate's.

        python-ovs loads the files only when it opens a connection, and then raises
        from inside the connection (its reconnecting thread included); checked here,
        a bad file is reported before any connection is tried.
        """
        for option, path in zip(options, astuple(self), strict=True):
            try:
                with open(path, "rb") as readable:
                    readable.read(1)
            except OSError as exc:
                raise ConfigError(f"{option} {path!r}: cannot read it ({exc.strerror})") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_verify_locations(cafile=self.ca_cert)
        except ssl.SSLError as exc:
            raise ConfigError(f"{options[2]} {self.ca_cert}: holds no PEM CA certificate "
                              f"({exc.reason or exc})") from None
        try:
            context.load_cert_chain(self.certificate, self.private_key)
        except ssl.SSLError as exc:
            raise ConfigError(f"{options[0]} {self.private_key} is not the private key of "
                              f"{options[1]} {self.certificate}, or either is no PEM file of "
                              f"one ({exc.reason or exc})") from None


def nb_ssl(remote: str, private_key: str, certificate: str, ca_cert: str,
           options: tuple[str, str, str] = OPTIONS) -> NbSsl | None:
    """The checked SSL files for the NB ``remote`` (:meth:`NbSsl.check`), None when it has
    no ``ssl:`` server and none are given ("" is not given).

    Raises ConfigError, naming ``options``: an ``ssl:`` remote without all three files,
    or files given for a remote without ``ssl:``.
    """
    values = (private_key, certificate, ca_cert)
    given = [option for option, value in zip(options, values, strict=True) if value]
    if not ssl_targets(remote):
        if given:
            raise ConfigError(f"{', '.join(given)} given, but the OVN NB connection "
                              f"{remote!r} has no ssl: server, and the files are for one "
                              "only: write the NB connection as ssl:HOST:PORT, or leave them "
                              "out")
        return None
    missing = [option for option, value in zip(options, values, strict=True) if not value]
    if missing:
        raise ConfigError(f"the OVN NB connection {remote!r} is ssl:, which needs the "
                          "client's private key, certificate and CA certificate: give "
                          f"{', '.join(missing)} (PEM files, as ovn-nbctl's -p, -c and -C)")
    files = NbSsl(*values)
    files.check(options)
    return files
