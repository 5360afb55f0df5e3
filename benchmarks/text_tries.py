"""Changes to the text model tried against issue 15's ranker comparison and dropped, run again on demand.

    .venv/bin/python benchmarks/text_tries.py --try NAME [--seed S] [--sets office games]
        [--shared ../shared/data] [--json-out FILE]

Each try is a patch in ``benchmarks/text_tries/`` against ``BASE``, the commit it was measured
on. The script checks ``BASE`` out into a temporary git worktree, applies the patch there, and
runs that tree's ``benchmarks/defaults_check.py`` with this checkout's virtual environment
(``PYTHONPATH`` puts the worktree first), so a figure comes from exactly the code that was
measured, whatever ``main`` has become. ``--try none`` runs ``BASE`` unpatched: the baseline of
the same protocol. The worktree is removed afterwards, also when the run fails or is interrupted.

Tries (what the fine-tuned-text variant gets instead of the default):
  warm_item_vectors            the user tower learns a vector per item of its window, added to
                               the item's adapted text vector (new items keep the text alone;
                               20% of a batch's items leave theirs out while training)
  follower_negatives           the tower's softmax also holds, per target, the 10 items that most
                               often followed the item before it (the behaviour sources' usual
                               candidates) as negatives
  recent_cosines               two ranker columns for both text variants: the candidate's cosine
                               to the user's last item and its best cosine over the 3 most recent
  pretrained_content_features  the fine-tuned-text variant takes its text neighbours and text
                               popularity from the pretrained vectors; only its interest score
                               is the tower's
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATCHES = ROOT / "benchmarks" / "text_tries"
BASE = "e9c53ed"  # the commit every patch was written and measured against


def tries() -> list[str]:
    """The names of the patches, sorted."""
    return sorted(p.stem for p in PATCHES.glob("*.patch"))


def git(*args: str, cwd: Path = ROOT) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def prepared_tree(name: str, folder: Path) -> Path:
    """``BASE`` checked out under ``folder`` with the try's patch applied (``none``: unpatched)."""
    tree = folder / "tree"
    git("worktree", "add", "--detach", str(tree), BASE)
    if name != "none":
        git("apply", str(PATCHES / f"{name}.patch"), cwd=tree)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--try", dest="name", required=True, choices=["none", *tries()])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", default=["office"], choices=["office", "games"])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    if not (ROOT / ".git").exists():
        sys.exit(f"{ROOT} is not a git clone: the tries check out {BASE} from its history")
    with tempfile.TemporaryDirectory(prefix="text-try-") as tmp:
        tree = prepared_tree(args.name, Path(tmp))
        try:
            command = [sys.executable, str(tree / "benchmarks" / "defaults_check.py"), "--seed", str(args.seed),
                       "--sets", *args.sets, "--shared", str(args.shared.resolve())]
            if args.json_out:
                command += ["--json-out", str(args.json_out.resolve())]
            env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
            print(f"try {args.name} on {BASE}, seed {args.seed}: {' '.join(command[1:])}", flush=True)
            sys.exit(subprocess.run(command, cwd=tree, env=env).returncode)
        finally:
            git("worktree", "remove", "--force", str(tree))


if __name__ == "__main__":
    main()
