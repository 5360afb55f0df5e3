"""Run Python as if this project were not installed: ``python tests/without_project.py -m MODULE ...``
or ``python tests/without_project.py SCRIPT ...``.

Removes the editable install's import hooks and the checkout from ``sys.path``, checks that
``serving``, ``features`` and ``recsys`` can no longer be imported, then runs the module or
script. Tests use it to prove that a logged model carries the code it needs (``code_paths``):
a subprocess, and the Python workers of a Spark session (``spark.pyspark.python``), load the
model where only its pinned requirements are installed.
"""

import importlib.util
import runpy
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("serving", "features", "recsys", "training")


def hide_project() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != PROJECT]
    sys.path_importer_cache.clear()
    for name in PACKAGES:
        sys.modules.pop(name, None)
        if (spec := importlib.util.find_spec(name)) is not None:
            raise SystemExit(f"without_project: {name!r} is still importable from {spec.origin}")


if __name__ == "__main__":
    hide_project()
    args = sys.argv[1:]
    while args and args[0].startswith("-") and args[0] != "-m":  # interpreter flags such as -u
        args = args[1:]
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")
