"""What writing fresh memory costs on this machine, by how much a process grows.

    .venv/bin/python benchmarks/guest_memory.py [--gb 0.5 1 2 4] [--pause 10]

Each size (GB = 10^9 bytes) is written by a fresh process, one byte per 4 KiB page, with numpy's
huge-page advice off (``NUMPY_MADVISE_HUGEPAGE=0``: 4 KiB faults where transparent huge pages
are ``madvise``, as here; the script prints the setting, and the faults show the page size),
``--pause`` seconds after the one before. It prints the seconds per GB and the kernel's system
time per page fault, and before each process the free memory and the guest kernel's free page
reporting counter (``reported_kib`` in ``/sys/module/page_reporting/parameters``, with the
other settings there printed once).

Why: on a virtual machine with free page reporting, the guest hands memory that stays free back
to the host, and the host backs a page again only when the guest next writes it, at several
times the cost of a page the guest still holds. ``max_waiting_mib`` (1024 here; not an upstream
Linux parameter, so its meaning is inferred from its name and from these probes) presumably
lets about that much free memory wait unreported. A process that grows by less than that then
gets backed pages, and one that grows by gigabytes pays the host's cost for most of them; a
stage that takes a process from nothing to gigabytes at ten times the data (load, data_checks at
scale 10) grows faster than its own work does (``benchmarks/data_stages.py`` splits its CPU into
user and system time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PAGE = 4096
REPORTING = Path("/sys/module/page_reporting/parameters")
HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def write_fresh(gigabytes: float) -> dict:
    """Write one byte per 4 KiB page of ``gigabytes`` GB (10^9 bytes) of new memory in this
    process: seconds, seconds per GB, system CPU seconds and minor page faults."""
    import numpy as np

    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    block = np.empty(int(gigabytes * 1e9), dtype=np.uint8)
    block[::PAGE] = 1
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    del block
    return {"gb": gigabytes, "seconds": seconds, "s_per_gb": seconds / gigabytes,
            "system_s": after.ru_stime - before.ru_stime, "faults": after.ru_minflt - before.ru_minflt}


def in_fresh_process(gigabytes: float) -> dict:
    """``write_fresh(gigabytes)`` in a child process."""
    if gigabytes <= 0:
        raise ValueError(f"gigabytes must be positive, got {gigabytes}")
    result = subprocess.run([sys.executable, __file__, "--child", str(gigabytes)], capture_output=True, text=True,
                            env={**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"writing {gigabytes:g} GB failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def describe(result: dict) -> str:
    per_fault = 1e6 * result["system_s"] / max(result["faults"], 1)
    return (f"{result['gb']:g} GB in {result['seconds']:.2f} s ({result['s_per_gb']:.2f} s/GB; "
            f"{result['faults']:,} faults, {per_fault:.1f} us of system time each)")


def page_reporting() -> dict[str, str]:
    """The guest kernel's free page reporting parameters, {} where it has none."""
    if not REPORTING.is_dir():
        return {}
    return {p.name: p.read_text().strip() for p in sorted(REPORTING.iterdir()) if p.is_file()}


def free_and_reported() -> str:
    """The guest's free memory and the pages it has reported to the host so far, one line."""
    free = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemFree:")), "?")
    reported = page_reporting().get("reported_kib", "?")
    return f"free {int(free) / 2**20:.1f} GiB, reported to the host so far {reported} KiB" if free != "?" else \
        f"reported to the host so far {reported} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0],
                        help="GB (10^9 bytes) each fresh process writes, in order")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between the processes")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(write_fresh(args.child)))
        return
    if min(args.gb) <= 0 or args.pause < 0:
        parser.error("--gb sizes must be positive and --pause 0 or more")
    settings = page_reporting()
    print("free page reporting: " + (", ".join(f"{k} {v}" for k, v in settings.items()) if settings
                                     else "none found (no /sys/module/page_reporting)"))
    if HUGE_PAGES.exists():
        print(f"transparent huge pages: {HUGE_PAGES.read_text().strip()}")
    for i, gigabytes in enumerate(args.gb):
        if i:
            time.sleep(args.pause)
        print(f"  before: {free_and_reported()}")
        print(f"a fresh process writes {describe(in_fresh_process(gigabytes))}", flush=True)
    print(f"rerun: .venv/bin/python benchmarks/guest_memory.py --gb {' '.join(f'{g:g}' for g in args.gb)} "
          f"--pause {args.pause:g}")


if __name__ == "__main__":
    main()
