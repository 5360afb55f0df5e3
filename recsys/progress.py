"""Progress bars with counts and rate: frequent on a terminal, sparse in logs (CI, files)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(*, total: int, desc: str, unit: str, enabled: bool = True) -> tqdm:
    """A tqdm bar; when stderr is not a terminal it redraws at most every 10 s, so logs stay short."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled,
                mininterval=0.5 if interactive else 10.0, maxinterval=10.0 if interactive else 60.0)
