"""Starting and stopping local servers (model server, MLflow UI) as child process groups.

Used by the tests and benchmarks that talk to a real server on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], *, health_url: str, timeout: float = 180.0, **popen) -> subprocess.Popen:
    """Start ``command`` in its own process group and wait until ``health_url`` answers 200.

    Raises RuntimeError (after stopping it) when the process exits or does not answer in time;
    the message carries the end of its output when stdout was captured.
    """
    process = subprocess.Popen(command, start_new_session=True, **popen)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace")[-3000:] if process.stdout else ""
            raise RuntimeError(f"{command[:4]} exited with {process.returncode} before answering: {output}")
        try:
            with urllib.request.urlopen(health_url, timeout=2) as reply:
                if reply.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise RuntimeError(f"{command[:4]} did not answer {health_url} within {timeout:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group (uvicorn workers included), SIGKILL after 20 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
