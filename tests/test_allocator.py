"""recsys.allocator: the CLI keeps polars' freed pages longer unless the user says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recsys.allocator import ALLOCATOR_ENV, KEEP_FREED_PAGES, POLARS_OWN, configure_polars_allocator


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != ALLOCATOR_ENV}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**clean, **env})


SHOW = "import os, recsys.cli, polars; print(os.environ['_RJEM_MALLOC_CONF'])"


def test_the_cli_sets_the_decay_before_polars_reads_it():
    # polars puts its own setting first; jemalloc keeps the last value of each option (next test)
    assert _python(SHOW).stdout.strip() == f"{POLARS_OWN},{KEEP_FREED_PAGES}"


def test_a_child_of_a_process_that_imported_polars_still_gets_it():
    # what such a parent leaves in the environment: polars' setting, then the parent's own options
    assert _python(SHOW, **{ALLOCATOR_ENV: POLARS_OWN}).stdout.strip() == f"{POLARS_OWN},{KEEP_FREED_PAGES}"
    inherited = f"{POLARS_OWN},{KEEP_FREED_PAGES}"  # a parent recsys command's
    assert _python(SHOW, **{ALLOCATOR_ENV: inherited}).stdout.strip() == f"{POLARS_OWN},{KEEP_FREED_PAGES}"


def test_jemalloc_keeps_the_last_value_of_an_option():
    # The string polars ends up with after the CLI's setting, plus a stats dump at exit.
    run = _python("import polars as pl; pl.DataFrame({'a': [1]})",
                  **{ALLOCATOR_ENV: f"{KEEP_FREED_PAGES},stats_print:true"})
    stats = run.stdout + run.stderr
    assert "opt.dirty_decay_ms: 10000" in stats and "opt.muzzy_decay_ms: 10000" in stats
    run = _python("import polars as pl; pl.DataFrame({'a': [1]})",
                  **{ALLOCATOR_ENV: f"{KEEP_FREED_PAGES},dirty_decay_ms:500,stats_print:true"})
    assert "opt.dirty_decay_ms: 500" in run.stdout + run.stderr  # a user's option after ours wins


@pytest.mark.parametrize(("held", "result"), [
    (None, KEEP_FREED_PAGES),
    ("dirty_decay_ms:0", f"{KEEP_FREED_PAGES},dirty_decay_ms:0"),  # the user's option comes last: it wins
    (f"{POLARS_OWN},background_thread:false", f"{KEEP_FREED_PAGES},background_thread:false"),
    # not polars' string, though it begins like it: kept whole, after the CLI's
    ("dirty_decay_ms:500,muzzy_decay_ms:10000", f"{KEEP_FREED_PAGES},dirty_decay_ms:500,muzzy_decay_ms:10000"),
    ("muzzy_decay_ms:1000,dirty_decay_ms:500", f"{KEEP_FREED_PAGES},muzzy_decay_ms:1000,dirty_decay_ms:500"),
])
def test_options_in_the_environment_come_after_the_clis(monkeypatch, held, result):
    monkeypatch.delitem(sys.modules, "polars", raising=False)  # as if polars were not imported yet
    if held is None:
        monkeypatch.delenv(ALLOCATOR_ENV, raising=False)
    else:
        monkeypatch.setenv(ALLOCATOR_ENV, held)
    assert configure_polars_allocator() is True
    assert os.environ[ALLOCATOR_ENV] == result


def test_too_late_once_polars_is_imported(monkeypatch):
    import polars  # noqa: F401

    monkeypatch.delenv(ALLOCATOR_ENV, raising=False)
    assert configure_polars_allocator() is False
    assert ALLOCATOR_ENV not in os.environ
