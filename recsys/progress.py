"""Progress with counts and rate: a tqdm bar on a terminal, periodic log lines otherwise.

When stderr is not a terminal (CI, a log file, a service manager), a redrawn bar only leaves
carriage-return noise, so ``progress`` returns a ``LogProgress`` instead: one line through the
``recsys.progress`` logger (the CLI's log format) at most every ``LOG_INTERVAL_S`` seconds and
one when the work ends, e.g. ``evaluate: 4,096/10,000 users (41%), 812 users/s, about 7 s left``.

``quiet_progress()`` (a context) turns every bar off for the code inside it, e.g. a training run
started with ``progress=False``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm.auto import tqdm

log = logging.getLogger("recsys.progress")
LOG_INTERVAL_S = 10.0
_enabled: ContextVar[bool] = ContextVar("recsys_progress_enabled", default=True)


@contextmanager
def quiet_progress(quiet: bool = True) -> Iterator[None]:
    """Inside the block, ``progress`` bars are off when ``quiet``."""
    token = _enabled.set(_enabled.get() and not quiet)
    try:
        yield
    finally:
        _enabled.reset(token)


class LogProgress:
    """The part of tqdm's interface this project uses (``update``, ``set_postfix``, ``close``, a
    context manager), written as log lines: every ``interval`` seconds and once at the end."""

    def __init__(self, *, total: int, desc: str, unit: str, interval: float = LOG_INTERVAL_S):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            log.info("%s", self.line(now))

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            log.info("%s", self.line(time.monotonic(), done=True))

    def line(self, now: float, done: bool = False) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        text = f"{self.desc}: {self.n:,}/{self.total:,} {self.unit}s{share}, {rate:,.1f} {self.unit}s/s"
        if done:
            text += f", done in {elapsed:.1f} s"
        elif rate > 0 and self.total:
            text += f", about {max(self.total - self.n, 0) / rate:.0f} s left"
        return text + (f" [{self.postfix}]" if self.postfix else "")


def progress(*, total: int, desc: str, unit: str, enabled: bool = True):
    """A tqdm bar on a terminal, a ``LogProgress`` otherwise; a disabled tqdm (does nothing) when
    ``enabled`` is False or inside ``quiet_progress``."""
    if not (enabled and _enabled.get()):
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, mininterval=0.5)
    return LogProgress(total=total, desc=desc, unit=unit)
