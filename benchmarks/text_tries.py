"""Changes to the text model tried against issue 15's ranker comparison and dropped, run again on demand.

    .venv/bin/python benchmarks/text_tries.py --try NAME [--seed S] [--sets office games]
        [--shared ../shared/data] [--json-out FILE]

Each try is a patch in ``benchmarks/text_tries/`` against ``BASE``, the commit it was measured
on. The script checks ``BASE`` out into a temporary git worktree, applies the patch there, and
runs that tree's ``benchmarks/defaults_check.py`` with this checkout's virtual environment
(``PYTHONPATH`` puts the worktree first), so a figure comes from the code that was measured,
whatever ``main`` has become (the installed packages are this checkout's). ``--try none`` runs
``BASE`` unpatched: the baseline of the same protocol. The worktree is removed afterwards, also
when the run fails or is stopped (Ctrl-C or SIGTERM). Needs a clone with ``BASE`` in its history
(not a shallow one: ``git fetch --unshallow``), the shared data and the MiniLM package that
``make install`` installs. The settings in the patches (10 negatives, 20% left out, 3 recent
items) were fixed before the runs, not chosen on them.

Tries (what the fine-tuned-text variant gets instead of the default):
  warm_item_vectors            the user tower learns a vector per catalog item, added to the
                               item's adapted text vector (items added later keep the text
                               alone; 20% of a batch's items leave theirs out in training steps)
  follower_negatives           the tower's softmax also holds, per target, the 10 items that most
                               often followed the item before it (the behaviour sources' usual
                               candidates) as negatives
  recent_cosines               two ranker columns for both text variants: the candidate's cosine
                               to the user's last item and its best cosine over the 3 most recent
  pretrained_content_features  the fine-tuned-text variant takes its text neighbours and text
                               popularity from the pretrained vectors; only its interest score
                               is the tower's
  pretrained_interest_too      the fine-tuned-text variant keeps all its columns and adds the
                               pretrained encoder's interest score (raw cosine, query rank and
                               z-score): both encoders' views in one ranker
  scale_free_text              neither text variant splits on the raw text interest score (its
                               query rank and z-score stay): the fine-tuned cosine's scale comes
                               from a model fitted per window, so the ranker learns thresholds on
                               the feature window's model and meets the training window's on test
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATCHES = ROOT / "benchmarks" / "text_tries"
BASE = "e9c53edf720189ab7f145e1986cfeca211aeacbe"  # the commit every patch was written and measured against


def tries() -> list[str]:
    """The names of the patches, sorted."""
    return sorted(p.stem for p in PATCHES.glob("*.patch"))


def git(*args: str, cwd: Path = ROOT, check: bool = True) -> int:
    return subprocess.run(["git", *args], cwd=cwd, check=check, stdout=subprocess.DEVNULL).returncode


def has_base() -> bool:
    """Whether this clone's history holds ``BASE``."""
    return subprocess.run(["git", "cat-file", "-e", f"{BASE}^{{commit}}"], cwd=ROOT,
                          capture_output=True).returncode == 0


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C, so the worktree is removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--try", dest="name", required=True, choices=["none", *tries()])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", default=["office"], choices=["office", "games"])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    if not has_base():  # also false outside a git checkout
        sys.exit(f"this checkout is not a git clone whose history holds commit {BASE}, which the tries "
                 "apply to: run it from a full clone (git fetch --unshallow)")
    if not args.shared.is_dir():
        sys.exit(f"no shared data at {args.shared}: pass --shared with the folder holding amazon-office-2014")
    signal.signal(signal.SIGTERM, _stop)
    with tempfile.TemporaryDirectory(prefix="text-try-") as tmp:
        tree = Path(tmp) / "tree"
        try:
            git("worktree", "add", "--detach", str(tree), BASE)
            if args.name != "none":
                git("apply", str(PATCHES / f"{args.name}.patch"), cwd=tree)
            command = [sys.executable, str(tree / "benchmarks" / "defaults_check.py"), "--seed", str(args.seed),
                       "--sets", *args.sets, "--shared", str(args.shared.resolve())]
            if args.json_out:
                command += ["--json-out", str(args.json_out.resolve())]
            env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
            print(f"try {args.name} on {BASE}, seed {args.seed}: {' '.join(command[1:])}", flush=True)
            sys.exit(subprocess.run(command, cwd=tree, env=env).returncode)
        finally:
            git("worktree", "remove", "--force", str(tree), check=False)
            git("worktree", "prune", check=False)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("stopped; the temporary worktree was removed")
