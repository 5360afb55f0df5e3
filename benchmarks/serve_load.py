"""Load test of the real MLflow model server, with a trivial pyfunc served the same way as the floor.

Run from a folder that holds the MLflow store with the model (after `make demo`):

    .venv/bin/python benchmarks/serve_load.py [--model models:/recsys-demo@champion] [--duration 60]
    .venv/bin/python benchmarks/serve_load.py --mixed 0.3 --concurrency 8 --duration 60
    .venv/bin/python benchmarks/serve_load.py --history 5 --concurrency 1 --duration 30

For each model (ours, then a trivial pyfunc that echoes its input) it starts the server
`recsys serve` runs (uvicorn with the guarded MLflow scoring app) on 127.0.0.1, waits for /ping, and sends POST
/invocations (top-10 for one random known user per request) from a separate client process at
each concurrency (default 1 and 8) for ``--duration`` seconds. The loop is bounded in time and
stops by itself; the servers are stopped at the end. Prints p50/p95/p99 latency (ms),
throughput (requests/s) and errors per run. ``--history N`` adds N random catalog items as the
request's ``history``, so the user vector is computed per request: the user tower reads the
stored last items followed by these; without a tower the stored vector is blended with theirs.

``--mixed SHARE`` is the robustness run: our model only, each request bad with probability SHARE
(a misspelled field, k out of range, k = Infinity, broken or deeply nested JSON, a JSON array, a
missing or wrong Content-Type, a request over the work bound). It reports errors on good requests
(anything but 200; must be 0), bad requests not answered with a 4xx (must be 0), p50/p99 of the good
ones, and the server's resident memory before and after the run (must stay flat).
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
import sys
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


def _start(model_uri: str, port: int, workers: int, plain: bool = False) -> subprocess.Popen:
    """The same command `recsys serve` runs (recsys.cli.serve_command), for either model; ``plain``:
    MLflow's own `mlflow models serve` without the request guard (the guard's cost, same run)."""
    from recsys.cli import serve_command, serve_env

    command, env = serve_command(port, workers), serve_env(os.environ["MLFLOW_TRACKING_URI"], model_uri)
    if plain:
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                   "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)]
        # MLflow starts `uvicorn` by name: this interpreter's scripts folder (the venv) must be on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return server_process.start(command, health_url=f"http://127.0.0.1:{port}/ping", env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _bad_requests(user: str) -> list[tuple[str, dict]]:
    """(body, headers) of requests a careless or hostile client sends; each must get a 4xx."""
    json_type = {"Content-Type": "application/json"}
    row = {"user_id": user, "k": 10}
    return [
        (json.dumps({"dataframe_records": [{**row, "exlude": ["X"]}]}), json_type),
        (json.dumps({"dataframe_records": [{**row, "k": 1000}]}), json_type),
        (json.dumps({"dataframe_records": [row]}).replace('"k": 10', '"k": Infinity'), json_type),
        ('{"dataframe_records": [{"user_id": ', json_type),
        ("[" * 20_000 + "]" * 20_000, json_type),
        (json.dumps([row]), json_type),
        (json.dumps({"dataframe_records": [row]}), {}),
        (json.dumps({"dataframe_records": [row]}), {"Content-Type": "text/plain"}),
        (json.dumps({"dataframe_records": [{"user_id": f"u{i}"} for i in range(1001)]}), json_type),
    ]


def _rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (KiB), from /proc (Linux)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) != pid and int(stat[1]) != pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


def _client(port: int, users: list[str], k: int, concurrency: int, duration: float, queue,
            bad_share: float = 0.0, items: list[str] | None = None, history: int = 0) -> None:
    """Runs in its own process: ``concurrency`` threads with keep-alive connections; a share
    ``bad_share`` of the requests are bad ones (``_bad_requests``)."""
    latencies: list[float] = []
    errors = [0]
    bad_counts = [0, 0]  # bad requests sent, bad requests not answered with a 4xx
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
        bad = sent_bad = unhandled_bad = 0
        bad_requests = _bad_requests(rng.choice(users))
        while time.perf_counter() < stop_at:
            user = rng.choice(users)
            is_bad = rng.random() < bad_share
            if is_bad:
                body, headers = rng.choice(bad_requests)
            else:
                row = {"user_id": user, "k": k}
                if history:
                    row["history"] = rng.sample(items, history)
                body, headers = json.dumps({"dataframe_records": [row]}), {"Content-Type": "application/json"}
            start = time.perf_counter()
            response = None
            try:
                conn.request("POST", "/invocations", body, headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = 0
                conn = connect()
            if response is not None and response.getheader("connection", "").lower() == "close":
                conn = connect()
            if is_bad:
                sent_bad += 1
                unhandled_bad += not 400 <= status < 500
            else:
                mine.append(time.perf_counter() - start)
                bad += status != 200
        with lock:
            latencies.extend(mine)
            errors[0] += bad
            bad_counts[0] += sent_bad
            bad_counts[1] += unhandled_bad

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((latencies, errors[0], time.perf_counter() - begin, bad_counts))


def _measure(port: int, users: list[str], k: int, concurrency: int, duration: float, bad_share: float = 0.0,
             items: list[str] | None = None, history: int = 0) -> dict:
    queue = mp.get_context("spawn").Queue()
    process = mp.get_context("spawn").Process(target=_client, args=(port, users, k, concurrency, duration, queue,
                                                                    bad_share, items, history))
    process.start()
    latencies, errors, elapsed, (sent_bad, unhandled_bad) = queue.get(timeout=duration + 120)
    process.join()
    ms = np.array(latencies) * 1000
    return {"requests": len(ms), "errors": errors, "rps": len(ms) / elapsed,
            "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "bad_sent": sent_bad, "bad_unhandled": unhandled_bad}


def _post_timed(port: int, payload: dict) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    conn.request("POST", "/invocations", json.dumps(payload), {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - start


def _largest_allowed(port: int, users: list[str], items: list[str]) -> dict:
    """The largest request the bounds let through (1,000 users x 450 explicit candidates), and the
    wait of a 1-user request sent while it runs."""
    from serving.requests import MAX_PAIRS_PER_REQUEST, MAX_USERS_PER_REQUEST

    per_user = MAX_PAIRS_PER_REQUEST // MAX_USERS_PER_REQUEST
    big = {"dataframe_records": [{"user_id": users[i % len(users)] + ("" if i < len(users) else f"#{i}"),
                                  "candidates": items[(i * 7) % len(items):][:per_user] or items[:per_user]}
                                 for i in range(MAX_USERS_PER_REQUEST)]}
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(big=_post_timed(port, big)))
    thread.start()
    time.sleep(0.2)
    result["small"] = _post_timed(port, {"dataframe_records": [{"user_id": users[0], "k": 10}]})
    thread.join()
    return result


def _mixed(model: str, users: list[str], items: list[str], args) -> None:
    """The robustness run: good and bad requests mixed, memory before and after."""
    port = server_process.free_port()
    server = _start(model, port, args.workers)
    try:
        warm = _measure(port, users, args.k, 2, 5.0)  # first requests build caches: not part of "before"
        before = _rss_kib(server.pid)
        runs = [_measure(port, users, args.k, c, args.duration, args.mixed) for c in args.concurrency]
        after = _rss_kib(server.pid)
        largest = _largest_allowed(port, users, items)
        after_largest = _rss_kib(server.pid)
    finally:
        server_process.stop(server)
    print(f"\nmixed load, {args.mixed:.0%} bad requests, {args.duration:.0f} s per run, {args.workers} worker(s); "
          f"warm-up {warm['requests']} requests")
    print(f"{'conc':>4} {'good':>7} {'good errors':>11} {'bad':>6} {'bad not 4xx':>11} {'good req/s':>10} "
          f"{'p50 ms':>7} {'p99 ms':>7}")
    for concurrency, r in zip(args.concurrency, runs, strict=True):
        print(f"{concurrency:>4} {r['requests']:>7} {r['errors']:>11} {r['bad_sent']:>6} {r['bad_unhandled']:>11} "
              f"{r['rps']:>10.1f} {r['p50']:>7.1f} {r['p99']:>7.1f}")
    print(f"server resident memory: {before / 1024:.0f} MiB before, {after / 1024:.0f} MiB after "
          f"({(after - before) / 1024:+.0f} MiB)")
    (big_status, big_s), (small_status, small_s) = largest["big"], largest["small"]
    print(f"largest allowed request (1,000 users x 400 candidates): HTTP {big_status} in {big_s:.2f} s; a 1-user "
          f"request sent meanwhile: HTTP {small_status} in {small_s:.2f} s; memory after "
          f"{after_largest / 1024:.0f} MiB")
    print(f"rerun: .venv/bin/python benchmarks/serve_load.py --model {model} --mixed {args.mixed} --concurrency "
          f"{' '.join(map(str, args.concurrency))} --duration {args.duration:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/recsys-demo@champion")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per (model, concurrency) run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server")
    parser.add_argument("--plain", action="store_true",
                        help="also serve our model with plain `mlflow models serve` (no request guard)")
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help="each request carries N random catalog items as its history")
    parser.add_argument("--mixed", type=float, default=None, metavar="SHARE",
                        help="robustness run: this share of bad requests, our model only")
    args = parser.parse_args()
    if args.history < 0 or (args.history and args.mixed is not None):
        parser.error("--history takes a count of 0 or more, and does not apply to --mixed")
    warnings.filterwarnings("ignore")
    import mlflow

    from training.tracking import configure_tracking

    os.environ["MLFLOW_TRACKING_URI"] = configure_tracking()
    state = mlflow.pyfunc.load_model(args.model).unwrap_python_model().bundle.state
    users = state.users.ids.to_list()
    items = state.items.ids.to_list()
    if args.history > len(items):
        parser.error(f"--history {args.history} is more than the model's {len(items)} items")
    if args.mixed is not None:
        return _mixed(args.model, users, items, args)
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "echo.py"
        code.write_text(TRIVIAL_MODEL)
        trivial = str(Path(tmp) / "trivial")
        mlflow.pyfunc.save_model(trivial, python_model=str(code))
        rows = []
        servers = [("recsys", args.model, False), ("trivial pyfunc", trivial, False)]
        if args.plain:
            servers.insert(1, ("recsys, unguarded", args.model, True))
        for name, uri, plain in servers:
            port = server_process.free_port()
            server = _start(uri, port, args.workers, plain)
            try:
                for concurrency in args.concurrency:
                    rows.append((name, concurrency, _measure(port, users, args.k, concurrency, args.duration,
                                                             items=items, history=args.history)))
            finally:
                server_process.stop(server)
    with_history = f" with {args.history} history items" if args.history else ""
    print(f"\nserving load test, {args.duration:.0f} s per run, top-{args.k} for one user{with_history} per request, "
          f"{args.workers} worker(s)")
    print(f"{'model':18} {'conc':>4} {'requests':>9} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8}")
    for name, concurrency, r in rows:
        print(f"{name:18} {concurrency:>4} {r['requests']:>9} {r['errors']:>6} {r['rps']:>8.1f} {r['p50']:>8.1f} "
              f"{r['p95']:>8.1f} {r['p99']:>8.1f}")
    print(f"rerun: .venv/bin/python benchmarks/serve_load.py --model {args.model} --duration {args.duration:.0f} "
          f"--workers {args.workers}" + (" --plain" if args.plain else "")
          + (f" --history {args.history}" if args.history else ""))


if __name__ == "__main__":
    main()
