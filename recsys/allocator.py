"""How long polars' memory allocator keeps freed pages before handing them back to the kernel.

Polars' jemalloc returns freed pages after 0.5-1 s (``dirty_decay_ms:500,muzzy_decay_ms:1000``,
which ``polars/__init__.py`` sets before it loads its library, appending whatever the variable
``_RJEM_MALLOC_CONF`` already holds; jemalloc keeps the last value of each option). A training
run's data stages free and allocate gigabytes seconds apart: the load's temporaries, then the
cuts' pair hashes and hash tables (``recsys.data_checks``, ``recsys.split``). Pages handed back
in between are written fresh again, and the kernel's time for that (zeroing, and on a virtual
machine the host backing them again) grows with the process (``benchmarks/data_stages.py``
prints it as the stages' system CPU seconds; ``benchmarks/guest_memory.py`` what a fresh page
costs here). jemalloc's own default, 10 s, lets the next stage reuse them. The cost is memory:
freed pages stay resident for up to 10 s after the work that freed them (``docs/scaling.md``
gives what it bought and cost at scale 10).

``recsys.cli`` calls :func:`configure_polars_allocator` before anything imports polars. A
``_RJEM_MALLOC_CONF`` already in the environment wins (set ``dirty_decay_ms:500,muzzy_decay_ms:1000``
there to get polars' own setting back).
"""

from __future__ import annotations

import os
import sys

ALLOCATOR_ENV = "_RJEM_MALLOC_CONF"
KEEP_FREED_PAGES = "dirty_decay_ms:10000,muzzy_decay_ms:10000"  # jemalloc's default decay, in ms


def configure_polars_allocator() -> bool:
    """Set ``_RJEM_MALLOC_CONF`` to ``KEEP_FREED_PAGES`` for the polars this process will import.

    Returns whether it did: not when the environment already sets the variable (the user's
    choice) or when polars is already imported (its allocator is configured once, at import).
    """
    if "polars" in sys.modules or ALLOCATOR_ENV in os.environ:
        return False
    os.environ[ALLOCATOR_ENV] = KEEP_FREED_PAGES
    return True
