"""The one wait of the tests: a check tried until it gives something true, or a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 5.0,
               what: str | Callable[[], str] = "", poll: float = 0.05) -> T:
    """``check()``'s first true value, tried every ``poll`` s; after ``timeout`` s an
    AssertionError saying ``what`` (or what ``what()`` says then) and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"not within {timeout:g} s{': ' + said if said else ''} "
                                 f"(last: {value!r})")
        time.sleep(poll)
