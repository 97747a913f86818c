"""Log files: they name pods and namespaces, so they are created 0600 like the rest of the state."""

from __future__ import annotations

import logging
import os

__all__ = ["private_file_handler"]


def private_file_handler(path: str) -> logging.FileHandler:
    """A handler appending to ``path``, created 0600 if missing (an existing file keeps its mode).

    Raises OSError when the file cannot be opened.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
    return logging.FileHandler(path, encoding="utf-8")
