"""Load test of the real MLflow model server, with a trivial pyfunc served the same way as the floor.

Run from a folder that holds the MLflow store with the model (after `make demo`):

    .venv/bin/python benchmarks/serve_load.py [--model models:/recsys-demo@champion] [--duration 60]

For each model (ours, then a trivial pyfunc that echoes its input) it starts
`mlflow models serve --env-manager local` on 127.0.0.1, waits for /ping, and sends POST
/invocations (top-10 for one random known user per request) from a separate client process at
each concurrency (default 1 and 8) for ``--duration`` seconds. The loop is bounded in time and
stops by itself; the servers are stopped at the end. Prints p50/p95/p99 latency (ms),
throughput (requests/s) and errors per run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from serving import server_process

TRIVIAL_MODEL = '''
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
'''


def _start(model_uri: str, port: int, workers: int) -> subprocess.Popen:
    """The same command `recsys serve` runs (recsys.cli.serve_command), for either model."""
    from recsys.cli import serve_command, serve_env

    return server_process.start(serve_command(model_uri, port, workers), health_url=f"http://127.0.0.1:{port}/ping",
                                env=serve_env(os.environ["MLFLOW_TRACKING_URI"]), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)


def _client(port: int, users: list[str], k: int, concurrency: int, duration: float, queue) -> None:
    """Runs in its own process: ``concurrency`` threads with keep-alive connections."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as curl and most clients do
        return conn

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn = connect()
        mine = []
        bad = 0
        while time.perf_counter() < stop_at:
            body = json.dumps({"dataframe_records": [{"user_id": rng.choice(users), "k": k}]})
            start = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn = connect()
            mine.append(time.perf_counter() - start)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((latencies, errors[0], time.perf_counter() - begin))


def _measure(port: int, users: list[str], k: int, concurrency: int, duration: float) -> dict:
    queue = mp.get_context("spawn").Queue()
    process = mp.get_context("spawn").Process(target=_client, args=(port, users, k, concurrency, duration, queue))
    process.start()
    latencies, errors, elapsed = queue.get(timeout=duration + 120)
    process.join()
    ms = np.array(latencies) * 1000
    return {"requests": len(ms), "errors": errors, "rps": len(ms) / elapsed,
            "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/recsys-demo@champion")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per (model, concurrency) run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import mlflow

    from training.tracking import configure_tracking

    os.environ["MLFLOW_TRACKING_URI"] = configure_tracking()
    users = mlflow.pyfunc.load_model(args.model).unwrap_python_model().bundle.state.users.ids.to_list()
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "echo.py"
        code.write_text(TRIVIAL_MODEL)
        trivial = str(Path(tmp) / "trivial")
        mlflow.pyfunc.save_model(trivial, python_model=str(code))
        rows = []
        for name, uri in (("recsys", args.model), ("trivial pyfunc", trivial)):
            port = server_process.free_port()
            server = _start(uri, port, args.workers)
            try:
                for concurrency in args.concurrency:
                    rows.append((name, concurrency, _measure(port, users, args.k, concurrency, args.duration)))
            finally:
                server_process.stop(server)
    print(f"\nserving load test, {args.duration:.0f} s per run, top-{args.k} for one user per request, "
          f"{args.workers} worker(s)")
    print(f"{'model':16} {'conc':>4} {'requests':>9} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8}")
    for name, concurrency, r in rows:
        print(f"{name:16} {concurrency:>4} {r['requests']:>9} {r['errors']:>6} {r['rps']:>8.1f} {r['p50']:>8.1f} "
              f"{r['p95']:>8.1f} {r['p99']:>8.1f}")
    print(f"rerun: .venv/bin/python benchmarks/serve_load.py --model {args.model} --duration {args.duration:.0f} "
          f"--workers {args.workers}")


if __name__ == "__main__":
    main()
