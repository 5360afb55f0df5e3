"""Tree compilers for the ranker, measured against LightGBM's predict on one model, in one run.

Run from a folder that holds the MLflow store with the model (after `make demo`):

    .venv/bin/python benchmarks/compiled_trees.py [--model models:/recsys-demo@champion] [--users 2048]

The rows are the real ranking frame of the model's first ``--users`` users (every candidate of
each), and one request's frame (one user's candidates). For LightGBM's ``predict``, lleaves
(what ``features/compiled_trees.py`` uses) and treelite + tl2cgen (when installed: `pip install
treelite tl2cgen`; it needs a C compiler), it prints the compile time, rows/s on the batch frame
on 1 and 2 threads (best of 3), the time of one request's frame on 1 thread (mean of 300), and
the largest difference from LightGBM's scores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _mean_ms(fn, n: int = 300) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/recsys-demo@champion")
    parser.add_argument("--users", type=int, default=2048)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import mlflow

    from features.ranking_frame import feature_matrix
    from training.tracking import configure_tracking

    configure_tracking()
    bundle = mlflow.pyfunc.load_model(args.model).unwrap_python_model().bundle
    booster = bundle.booster
    users = np.arange(min(args.users, bundle.state.n_users), dtype=np.int32)
    _, arrays = bundle.candidate_features(users)
    batch = np.ascontiguousarray(feature_matrix(arrays, bundle.feature_columns), dtype=np.float64)
    _, one_arrays = bundle.candidate_features(users[:1])
    one = np.ascontiguousarray(feature_matrix(one_arrays, bundle.feature_columns), dtype=np.float64)
    reference = booster.predict(batch)
    print(f"model {args.model}: {booster.num_trees()} trees, {batch.shape[1]} features; batch frame "
          f"{batch.shape[0]:,} rows ({len(users)} users), one request {one.shape[0]} rows")

    predictors: dict[str, tuple[float, object, object]] = {
        "LightGBM predict": (0.0, lambda X, t: booster.predict(X, num_threads=t), None)}
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "model.txt"
        booster.save_model(str(model_file))
        try:
            import lleaves

            start = time.perf_counter()
            model = lleaves.Model(model_file=str(model_file))
            model.compile()
            predictors["lleaves"] = (time.perf_counter() - start, lambda X, t, m=model: m.predict(X, n_jobs=t), None)
        except Exception as exc:  # report and go on with what is there
            print(f"lleaves unavailable: {type(exc).__name__}: {exc}")
        try:
            import tl2cgen
            import treelite

            start = time.perf_counter()
            library = Path(tmp) / "tl2cgen.so"
            tl2cgen.export_lib(treelite.frontend.load_lightgbm_model(str(model_file)), toolchain="gcc",
                               libpath=str(library), params={"parallel_comp": 2}, nthread=2)
            compile_s = time.perf_counter() - start
            by_threads = {t: tl2cgen.Predictor(str(library), nthread=t) for t in (1, 2)}
            predictors["treelite + tl2cgen"] = (
                compile_s, lambda X, t, p=by_threads: p[t].predict(tl2cgen.DMatrix(X)).reshape(-1), None)
        except ImportError as exc:
            print(f"treelite/tl2cgen not installed ({exc}): pip install treelite tl2cgen to compare")

        base = {}
        for name, (compile_s, predict, _) in predictors.items():
            rows = {t: batch.shape[0] / _best(lambda p=predict, t=t: p(batch, t)) for t in (1, 2)}
            request_ms = _mean_ms(lambda p=predict: p(one, 1))
            diff = float(np.abs(predict(batch, 1) - reference).max())
            base.setdefault("rows", rows[2])
            base.setdefault("ms", request_ms)
            print(f"{name:20s} compile {compile_s:5.2f} s | batch {rows[1]:>12,.0f} rows/s (1 thread) "
                  f"{rows[2]:>12,.0f} rows/s (2 threads, {rows[2] / base['rows']:.1f}x LightGBM) | one request "
                  f"{request_ms:.3f} ms ({base['ms'] / request_ms:.1f}x) | max |diff| {diff:.1e}")
    print(f"rerun: .venv/bin/python benchmarks/compiled_trees.py --model {args.model} --users {args.users}")


if __name__ == "__main__":
    main()
