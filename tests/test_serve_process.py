"""`recsys serve` as a process: the guarded endpoint answers over HTTP, and SIGTERM (what a process
manager sends) stops the server and every worker, leaving nothing on the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from serving import server_process

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc; Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    """Nothing listens on the port: a connection is refused, and a new server could bind it."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        pass
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does; TIME_WAIT is not a listener
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc (Linux)")
def test_sigterm_stops_the_server_and_its_workers_and_frees_the_port(small_pyfunc, small_bundle, tmp_path):
    _, model_dir = small_pyfunc
    port = server_process.free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    log = tmp_path / "serve.log"  # a file, not a pipe nobody reads while the server runs
    with log.open("wb") as sink:
        try:  # in its own session, so that whatever happens the finally below can stop the whole tree
            process = server_process.start(
                [sys.executable, "-m", "recsys.cli", "serve", "--model", str(model_dir), "--port", str(port),
                 "--workers", "2"], health_url=f"http://127.0.0.1:{port}/ping", cwd=tmp_path, env=env, stdout=sink,
                stderr=subprocess.STDOUT)
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{log.read_text(errors='replace')[-3000:]}")
    workers: set[int] = set()
    try:
        user = small_bundle.state.users.ids[0]
        item = small_bundle.state.items.ids[0]
        good = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=60,
                             json={"dataframe_records": [{"user_id": user, "k": 2}]})
        assert good.status_code == 200 and len(good.json()["predictions"][0]["item_ids"]) == 2
        typo = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=60,
                             json={"dataframe_records": [{"user_id": user, "k": 2, "exlude": [item]}]})
        assert typo.status_code == 400 and "unknown request field(s) ['exlude']" in typo.json()["message"]

        workers = _descendants(process.pid)
        assert workers, "uvicorn with --workers 2 runs worker processes"
        process.send_signal(signal.SIGTERM)  # to the recsys process only, as systemd or a shell's kill would
        # Stopped within 30 s (wait raises TimeoutExpired otherwise) and cleanly: uvicorn's
        # supervisor handles SIGTERM, so a -15 would mean the handler was lost.
        assert process.wait(timeout=30) == 0
        # Helpers such as multiprocessing's resource tracker leave once they see the parent gone.
        deadline = time.time() + 15
        while [pid for pid in workers if _alive(pid)] and time.time() < deadline:
            time.sleep(0.2)
        assert [pid for pid in workers if _alive(pid)] == []
        assert _port_free(port)
    finally:
        try:  # the session this test started: the server and anything it left
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
