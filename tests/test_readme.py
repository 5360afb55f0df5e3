"""The README works as written.

Runnable blocks: a fenced ```` ```bash ```` block whose previous line is exactly ``<!-- runnable -->`` is
run by ``test_runnable_readme_blocks_exit_0``, in README order, each block as its own ``bash`` script
that starts with ``set -euo pipefail``. All blocks share one temporary copy of the repository (its
tracked and untracked-but-not-ignored files, as a fresh clone has them, with ``.venv`` linked in), so
a later block sees what an earlier one wrote, as the reader's shell would. The environment is the
README's own setup: ``.venv/bin`` first on ``PATH``, ``HF_HUB_OFFLINE=1``, no ``MLFLOW_TRACKING_URI``;
a port a block serves on (``--port N`` and ``127.0.0.1:N``) is swapped for one free on this machine.
Every block must exit 0; a failure shows the block and its output. Background processes a block
starts (``recsys serve ... &``) are stopped with the block's process group.

Mark a block runnable only when it is quick (the whole test stays near 90 s on two idle cores; under
`make test` it shares them with the other worker) and needs
nothing outside the repository. Blocks without the marker are documentation only.

``test_relative_links_exist`` checks that every relative link (and image) in README.md and docs/*.md
names a file that exists, and that a ``#fragment`` names a heading of the target Markdown file.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from serving import server_process
from tests.conftest import all_cores

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = "<!-- runnable -->"
BLOCK_TIMEOUT_S = 300


def runnable_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```bash block right after a MARKER line, in order."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[i + 1].strip() if i + 1 < len(lines) else ""
        assert fence in ("```bash", "```sh"), f"README.md:{i + 1}: {MARKER} must be followed by a ```bash fence"
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"README.md:{i + 2}: the runnable block is never closed"
        blocks.append((i + 3, "\n".join(lines[i + 2:end]) + "\n"))
    return blocks


def test_readme_has_runnable_blocks():
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    assert blocks, f"no {MARKER} blocks in README.md"
    assert all(code.strip() for _, code in blocks), "an empty runnable block"


def _copy_checkout(dst: Path) -> None:
    """The files a fresh clone of the working tree has (tracked + untracked, not ignored), .venv linked."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split("\0")
        files = [name for name in listed if name and (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but the usual outputs
        skip = {".git", ".venv", "mlflow.db", "mlruns", "mlartifacts", "demo_out", "data", "__pycache__",
                ".pytest_cache", ".ruff_cache", ".hypothesis"}
        files = [str(path.relative_to(ROOT)) for path in ROOT.rglob("*")
                 if path.is_file() and not skip.intersection(path.relative_to(ROOT).parts)
                 and path.suffix != ".parquet" and ".egg-info" not in str(path)]
    for name in files:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dst / name)
    (dst / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the block's process group (a server it left behind), then SIGKILL what remains."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.mark.slow
def test_runnable_readme_blocks_exit_0(tmp_path):
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    must_run = os.environ.get("CI", "").lower() in ("1", "true", "yes")  # CI fails where a laptop skips
    if not (ROOT / ".venv" / "bin" / "recsys").exists():
        (pytest.fail if must_run else pytest.skip)(".venv/bin/recsys is absent: run `make install` first")
    # Each port a block serves on (and curls) becomes a free one here: on a shared machine another
    # job may hold the README's port, and that says nothing about the README.
    for port in sorted({int(p) for _, code in blocks for p in re.findall(r"--port[ =](\d+)", code)}):
        free = str(server_process.free_port())
        blocks = [(line, re.sub(rf"(?<=--port[ =]){port}\b|(?<=127\.0\.0\.1:){port}\b", free, code))
                  for line, code in blocks]

    work = tmp_path / "clone"
    work.mkdir()
    _copy_checkout(work)
    # A store in a parent folder would be found instead of the one the README's commands create.
    stray = [parent / "mlflow.db" for parent in work.parents if (parent / "mlflow.db").is_file()]
    assert not stray, f"an mlflow.db above the temporary folder would capture the README's runs: {stray}"

    # Without what earlier tests in this process set: the blocks run as a new shell would.
    env = {key: value for key, value in os.environ.items()
           if key not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "VIRTUAL_ENV", "PYTHONPATH",
                          "MLFLOW_LOGGING_LEVEL", "HF_HUB_DISABLE_PROGRESS_BARS",
                          "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env.update(PATH=f"{work / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1")

    timings = []
    for line, code in blocks:
        log = tmp_path / f"block-{line}.log"
        started = time.monotonic()
        with open(log, "wb") as out:
            # Output to a file, not a pipe: a server the block leaves running must not hold the test.
            with all_cores():  # as a user's shell would run it, also under `make test`
                process = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + code], cwd=work, env=env,
                                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            try:
                returncode = process.wait(timeout=BLOCK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                _stop_group(process)
        elapsed = time.monotonic() - started
        timings.append(f"README.md:{line}: {elapsed:.1f} s")
        if returncode != 0:
            output = log.read_text(encoding="utf-8", errors="replace")[-12_000:]
            status = f"timed out after {BLOCK_TIMEOUT_S} s" if returncode is None else f"exit status {returncode}"
            pytest.fail(f"README.md block at line {line}: {status}\n--- block ---\n{code}--- output (tail) ---\n"
                        f"{output}\n--- blocks so far ---\n" + "\n".join(timings), pytrace=False)
    print("\n".join(timings))
    shutil.rmtree(work, ignore_errors=True)  # the models (~100 MB each) go; the logs stay for a look


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(markdown: Path) -> set[str]:
    anchors, in_code = set(), False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6}\s+(.*)", line)):
            anchors.add(_slug(match.group(1)))
    return anchors


def _outside_code(text: str) -> str:
    """The Markdown without fenced blocks and inline code, where a ]( is not a link."""
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    return re.sub(r"(`+).*?\1", "", text, flags=re.S)


@pytest.mark.parametrize("markdown", [README, *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_exist(markdown):
    broken = []
    for target in LINK.findall(_outside_code(markdown.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        file = (markdown.parent / path).resolve() if path else markdown
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif fragment and file.suffix == ".md" and fragment not in _anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.relative_to(ROOT)}")
    assert not broken, f"broken links in {markdown.relative_to(ROOT)}:\n" + "\n".join(broken)
