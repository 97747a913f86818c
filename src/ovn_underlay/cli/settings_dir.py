"""A directory of settings, one file per option (a mounted ConfigMap), as a command reads it.

Each file is named as a long option without its dashes (``cluster-subnet``) and holds one
value, surrounding whitespace dropped; the values are parsed by the command's own options,
so they are checked as on the command line.  Entries whose names start with a dot (a
ConfigMap volume's ``..data`` and ``..timestamp``) and anything that is not a file are
passed over.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ovn_underlay.config import ConfigError

NOT_FROM_FILES = ("config_dir", "log_file")
"""Options a settings directory cannot give: where it is, and where the log goes."""


def read_settings_dir(directory: Path, add_arguments: Callable[[argparse.ArgumentParser], None],
                      command: str) -> dict[str, Any]:
    """The values of ``directory``'s files by option dest, parsed by the options that
    ``add_arguments`` declares (an option no file gives is None); {} when ``directory`` is
    not a directory.

    A file named as no option of ``command``, or as one of :data:`NOT_FROM_FILES`, is
    refused with :class:`~ovn_underlay.config.ConfigError`, so a typo in a ConfigMap key
    does not pass unseen; so is a value its option does not take.
    """
    if not directory.is_dir():
        return {}
    parser = argparse.ArgumentParser(prog=f"settings in {directory}", add_help=False,
                                     exit_on_error=False)
    add_arguments(parser)
    known = {a.dest for a in parser._actions}
    argv: list[str] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        dest = path.name.replace("-", "_")
        if dest not in known or dest in NOT_FROM_FILES:
            raise ConfigError(f"{path}: no {command} setting is called {path.name!r} "
                              f"(see 'ovn-k8s-underlay {command} --help')")
        argv += [f"--{path.name}", path.read_text(encoding="utf-8").strip()]
    try:
        return vars(parser.parse_args(argv))
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ConfigError(f"settings in {directory}: {exc}") from None
