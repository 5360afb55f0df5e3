"""BPR here against implicit's BPR, on the same MovieLens 100K split and evaluation.

    .venv/bin/python benchmarks/bpr_check.py [--seeds 0 1 2] [--data data/ml100k]

`--data` is a folder made by `recsys import movielens` (see the README). Per seed: the
stratified 75/25 split of `recsys train --split stratified`, both models fitted on the training
side, full ranking of the items each user has not rated there, nDCG@10 on the test side (the
pipeline's single-model baseline protocol). implicit's BPR is run over a grid of learning rates
and epochs (its best per seed is printed); ours with the defaults of `recsys/config.py`. The
figures say why `features/bpr.py` exists.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=Path("data/ml100k"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from threadpoolctl import threadpool_limits

    from features.cf import fit_cf
    from features.user_items import build_user_items
    from recsys import metrics, windows
    from recsys.config import PipelineConfig
    from recsys.dataset import load_folder
    from recsys.idmap import IdMap

    dataset = load_folder(args.data)
    defaults = PipelineConfig(split="stratified")
    grid = [(lr, epochs) for lr in (0.01, 0.05) for epochs in (25, 50, 100, 200)]
    print(f"ours: {defaults.bpr_factors} factors, {defaults.bpr_iterations} epochs, learning rate "
          f"{defaults.bpr_learning_rate} (linear decay), L2 {defaults.bpr_regularization}; implicit: same factors "
          f"and L2, learning rate x epochs over {grid}")
    rows = []
    for seed in args.seeds:
        config = PipelineConfig(split="stratified", seed=seed)
        split, _ = windows.test_cut(dataset.interactions, None, config)
        users = IdMap(kind="user").fit(split.train["user_id"].unique().sort())
        items = IdMap(kind="item").fit(dataset.items["item_id"].sort())
        train = build_user_items(split.train, users, items)
        train.data[:] = 1.0
        test = build_user_items(split.test.filter(split.test["user_id"].is_in(users.ids.implode())), users, items)
        test = test - test.multiply(train > 0)
        test.eliminate_zeros()
        user_idx = np.flatnonzero(np.diff(test.indptr) > 0)
        relevant = [test.indices[test.indptr[u]:test.indptr[u + 1]] for u in user_idx]

        def ndcg(user_f: np.ndarray, item_f: np.ndarray, train=train, user_idx=user_idx, relevant=relevant) -> float:
            scores = user_f[user_idx] @ item_f.T
            scores[train[user_idx].toarray() > 0] = -np.inf
            top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
            return metrics.topk_metrics(top, relevant, 10)["ndcg@10"]

        started = time.perf_counter()
        ours = fit_cf("bpr", train, n_users=train.shape[0], n_items=train.shape[1], factors=config.bpr_factors,
                      iterations=config.bpr_iterations, learning_rate=config.bpr_learning_rate,
                      regularization=config.bpr_regularization, seed=seed)
        ours_s = time.perf_counter() - started
        ours_ndcg = ndcg(ours.user_factors, ours.item_factors)
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        theirs = {}
        for lr, epochs in grid:
            with threadpool_limits(limits=1, user_api="blas"):
                model = BayesianPersonalizedRanking(factors=config.bpr_factors, learning_rate=lr,
                                                    regularization=config.bpr_regularization, iterations=epochs,
                                                    random_state=seed, num_threads=1)
                model.fit(train, show_progress=False)
            theirs[(lr, epochs)] = ndcg(np.asarray(model.user_factors), np.asarray(model.item_factors))
        best = max(theirs, key=theirs.get)
        rows.append((ours_ndcg, theirs[best]))
        curve = ", ".join(f"lr {lr} x {e}: {v:.4f}" for (lr, e), v in theirs.items())
        print(f"seed {seed}: ours nDCG@10 {ours_ndcg:.4f} ({ours_s:.1f} s); implicit best {theirs[best]:.4f} "
              f"(lr {best[0]}, {best[1]} epochs) [{curve}]", flush=True)
    ours, theirs = np.array(rows).T
    print(f"mean over seeds {args.seeds}: ours {ours.mean():.4f}, implicit's best {theirs.mean():.4f} "
          f"(published BPR on this protocol: 0.442)")


if __name__ == "__main__":
    main()
