"""benchmarks/text_tries.py: every dropped try still applies to the commit it was measured on."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("text_tries", ROOT / "benchmarks" / "text_tries.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docstring_lists_every_try():
    module = _module()
    listed = re.findall(r"^  (\w+) {2,}", module.__doc__, flags=re.MULTILINE)
    assert listed == ["warm_item_vectors", "follower_negatives", "recent_cosines", "pretrained_content_features",
                      "pretrained_interest_too", "scale_free_text"]
    assert sorted(listed) == module.tries()


@pytest.mark.parametrize("name", ["warm_item_vectors", "follower_negatives", "recent_cosines",
                                  "pretrained_content_features", "pretrained_interest_too", "scale_free_text"])
def test_each_patch_applies_to_its_base(tmp_path, name):
    module = _module()
    if not module.has_base():
        pytest.skip(f"this clone lacks {module.BASE} (a shallow clone?): the tries apply to that commit only")
    env = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / "index"), "LC_ALL": "C"}
    subprocess.run(["git", "read-tree", module.BASE], cwd=ROOT, env=env, check=True)
    check = subprocess.run(["git", "apply", "--check", "--cached", str(module.PATCHES / f"{name}.patch")],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # ... and not to a tree that already has it: the patch changes BASE.
    subprocess.run(["git", "apply", "--cached", str(module.PATCHES / f"{name}.patch")], cwd=ROOT, env=env, check=True)
    again = subprocess.run(["git", "apply", "--check", "--cached", str(module.PATCHES / f"{name}.patch")],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "patch does not apply" in again.stderr
