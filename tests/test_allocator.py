"""recsys.allocator: the CLI keeps polars' freed pages 10 s unless the user says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

from recsys.allocator import ALLOCATOR_ENV, KEEP_FREED_PAGES, configure_polars_allocator


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != ALLOCATOR_ENV}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**clean, **env})


def test_the_cli_sets_the_decay_before_polars_reads_it():
    shown = _python("import os, recsys.cli, polars; print(os.environ['_RJEM_MALLOC_CONF'])").stdout.strip()
    # polars puts its own setting first; jemalloc keeps the last value of each option (next test)
    assert shown == "dirty_decay_ms:500,muzzy_decay_ms:1000," + KEEP_FREED_PAGES


def test_jemalloc_keeps_the_last_value_of_an_option():
    # The string polars ends up with after the CLI's setting, plus a stats dump at exit.
    stats = _python("import polars as pl; pl.DataFrame({'a': [1]})",
                    **{ALLOCATOR_ENV: KEEP_FREED_PAGES + ",stats_print:true"})
    stats = stats.stdout + stats.stderr
    assert "opt.dirty_decay_ms: 10000" in stats and "opt.muzzy_decay_ms: 10000" in stats


def test_a_setting_in_the_environment_wins(monkeypatch):
    monkeypatch.delitem(sys.modules, "polars")  # as if polars were not imported yet
    monkeypatch.setenv(ALLOCATOR_ENV, "dirty_decay_ms:0")
    assert configure_polars_allocator() is False
    assert os.environ[ALLOCATOR_ENV] == "dirty_decay_ms:0"
    monkeypatch.delenv(ALLOCATOR_ENV)
    assert configure_polars_allocator() is True
    assert os.environ[ALLOCATOR_ENV] == KEEP_FREED_PAGES


def test_too_late_once_polars_is_imported(monkeypatch):
    import polars  # noqa: F401

    monkeypatch.delenv(ALLOCATOR_ENV, raising=False)
    assert configure_polars_allocator() is False
    assert ALLOCATOR_ENV not in os.environ
