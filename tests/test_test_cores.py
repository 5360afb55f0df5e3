"""The test runner's core sharing (tests/conftest.py): what `all_cores` gives a pinned worker back."""

import os

import torch

from tests import conftest


def test_all_cores_gives_a_pinned_worker_every_core_and_torch_threads_then_puts_both_back(monkeypatch):
    affinity = {0}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(affinity))
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: (affinity.clear(), affinity.update(cores)))
    monkeypatch.setenv(conftest.ALL_CORES_ENV, "0,1,2")
    threads = torch.get_num_threads()
    with conftest.all_cores():
        assert affinity == {0, 1, 2}
        assert torch.get_num_threads() == 3
    assert affinity == {0}
    assert torch.get_num_threads() == threads


def test_all_cores_changes_nothing_outside_a_pinned_worker(monkeypatch):
    monkeypatch.delenv(conftest.ALL_CORES_ENV, raising=False)
    calls = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: calls.append(cores))
    threads = torch.get_num_threads()
    with conftest.all_cores():
        assert torch.get_num_threads() == threads
    assert calls == []
