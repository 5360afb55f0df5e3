"""How long polars' memory allocator keeps freed pages before handing them back to the kernel.

Polars' jemalloc hands freed pages back after 0.5-1 s: ``polars/__init__.py`` sets
``_RJEM_MALLOC_CONF`` to ``dirty_decay_ms:500,muzzy_decay_ms:1000`` followed by whatever the
variable already held, before it loads its library, and jemalloc keeps the last value of each
option. A training run's data stages free and allocate gigabytes seconds apart: the load's
temporaries, then the cuts' pair hashes and hash tables (``recsys.data_checks``,
``recsys.split``). Pages handed back in between are written fresh again, and the kernel's time
for that (zeroing, and on a virtual machine the host backing them again) grows with the process
(``benchmarks/data_stages.py`` prints it as the stages' system CPU seconds). Keeping freed pages
10 s as dirty (jemalloc's default for those) and 10 s more as lazily freed (jemalloc's default
there is 0) lets the next stage reuse them. The cost is memory: freed pages stay resident for up
to about 20 s after the work that freed them. ``docs/scaling.md`` ("Freed pages kept 10 s") gives
what it bought and cost at scales 1 and 10.

``recsys.cli`` calls :func:`configure_polars_allocator` before anything imports polars, so it
applies to every ``recsys`` command and the processes they start (they inherit the variable).
Options already in ``_RJEM_MALLOC_CONF`` come after the CLI's and win: set
``_RJEM_MALLOC_CONF=dirty_decay_ms:500,muzzy_decay_ms:0`` to hand pages back sooner.
"""

from __future__ import annotations

import os
import sys

ALLOCATOR_ENV = "_RJEM_MALLOC_CONF"
KEEP_FREED_PAGES = "dirty_decay_ms:10000,muzzy_decay_ms:10000"  # milliseconds
POLARS_OWN = "dirty_decay_ms:500,muzzy_decay_ms:1000"  # what polars puts first (polars 1.x-2.x)


def configure_polars_allocator() -> bool:
    """Put ``KEEP_FREED_PAGES`` first in ``_RJEM_MALLOC_CONF`` for the polars this process will
    import, before the options the variable already holds (which win where they set the same
    option). A value that begins with polars' own setting was left by a parent process that
    imported polars, not chosen: those options are dropped, so the child still keeps freed pages
    (to get polars' values on purpose, give them in another order or on their own).

    Returns whether it set the variable: not when polars is already imported (its allocator is
    configured once, at import).
    """
    if "polars" in sys.modules:
        return False
    held = [option for option in os.environ.get(ALLOCATOR_ENV, "").split(",") if option]
    for left in (POLARS_OWN, KEEP_FREED_PAGES):  # a parent's polars' setting, then a parent recsys' own
        options = left.split(",")
        if held[:len(options)] == options:
            held = held[len(options):]
    os.environ[ALLOCATOR_ENV] = ",".join([KEEP_FREED_PAGES, *held])
    return True
