"""Real public data (../shared/data): MovieLens 100K through the importer, the splits and the pipeline."""

import polars as pl
import pytest

from recsys.dataset import Dataset
from recsys.split import split_interactions

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def movielens(shared_data) -> Dataset:
    from recsys.importers.movielens import import_movielens

    src = shared_data / "movielens-100k"
    tables, _ = import_movielens(src / "ml-100k", descriptions=[src / "movielens100k_imdb_details.csv"])
    return Dataset.from_frames(**tables, source="ml100k")


def test_movielens_loads_whole(movielens):
    summary = movielens.summary()
    assert (summary["n_interactions"], summary["n_users"], summary["n_items"]) == (100_000, 943, 1682)
    assert sum(movielens.skipped.values()) == 0
    assert movielens.interactions["timestamp"].min().year == 1997


def test_movielens_stratified_split_is_75_25_per_user(movielens):
    split = split_interactions(movielens.interactions, kind="stratified", test_fraction=0.25, seed=1)
    share = split.test.height / movielens.interactions.height
    assert 0.24 < share < 0.26
    assert split.train["user_id"].n_unique() == 943
    per_user = split.test.group_by("user_id").len().join(
        movielens.interactions.group_by("user_id").len(), on="user_id", suffix="_all")
    assert per_user.select((pl.col("len") / pl.col("len_all")).min()).item() > 0.2


def test_leave_last_out_tests_each_users_last_rating(movielens):
    split = split_interactions(movielens.interactions, kind="leave-last-out")
    assert split.test.height == 943
    last = movielens.interactions.group_by("user_id").agg(pl.col("timestamp").max())
    assert split.test.join(last, on=["user_id", "timestamp"]).height == 943


@pytest.fixture(scope="module")
def movielens_runs(movielens, tmp_path_factory):
    """One stratified run and one cold-items run on ML-100K with the documented config (seed 0)."""
    import os
    from pathlib import Path

    from recsys.cli import load_config
    from training.pipeline import train

    work = tmp_path_factory.mktemp("ml100k")
    config_file = str(Path(__file__).resolve().parents[1] / "configs" / "movielens-100k.json")
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        runs = {}
        for name, extra in (("plain", {}), ("cold", {"cold_item_fraction": 0.2})):
            config = load_config(config_file, seed=0, **extra)
            runs[name] = train(movielens, config, experiment=f"ml100k-{name}", register_name=None, workdir=work,
                               progress=False).metrics
        return runs
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.mark.slow
def test_movielens_ranker_beats_every_baseline_including_ease(movielens_runs):
    m = movielens_runs["plain"]
    # With this config seeds 0-5 gave 0.4859-0.4979 (P@10 0.4224-0.4248 as 3-seed means) and paired
    # lifts over EASE of +0.0025 to +0.0083 (seed 0: +0.0066 to +0.0069 over three runs, intervals above
    # 0); runs are not bit-reproducible (BPR's Hogwild threads, CPU fine-tuning), so the floors sit
    # below those figures.
    assert m["ranker"]["ndcg@10"] > 0.47
    assert m["ranker"]["precision@10"] > 0.41
    assert m["ranker"]["ndcg@10"] > m["popularity"]["ndcg@10"] + 0.2
    for baseline in ("ease", "als", "bpr", "cooccurrence", "text", "random"):
        assert m["ranker"]["ndcg@10"] > m[baseline]["ndcg@10"], baseline
    assert m["ranker"]["lift_vs_best_baseline/ndcg@10"] > 0
    # The session-aware EDLAE item-to-item model is above the plain EASE of earlier sessions (0.4675 on seed 0).
    assert m["ease"]["ndcg@10"] > 0.475


@pytest.mark.slow
def test_movielens_fine_tuned_text_beats_pretrained_text(movielens_runs):
    m = movielens_runs["plain"]
    assert m["text"]["ndcg@10"] > m["text_pretrained"]["ndcg@10"]


@pytest.mark.slow
def test_movielens_cold_items_are_found_through_text(movielens_runs):
    cold = movielens_runs["cold"]
    recall = {name: cold[name]["cold_items/recall@10"] for name in ("ranker", "ranker_no_text", "random")}
    # "3x random" alone does not show that text finds the items: the ranker without text features met
    # it too (README, 3 seeds: no-text 0.1017 = 3.5x random 0.0288). What text adds is measured
    # against the no-text ablation on the same run: ranker - no-text was +0.050 / +0.036 / +0.076 on
    # seeds 0-2 (ranker 5.3-5.7x random). The margin, half of random's recall (~0.014), sits well
    # below those gaps and well above a tie, so the test fails when text adds nothing.
    assert recall["ranker"] >= recall["ranker_no_text"] + 0.5 * recall["random"], recall
    assert recall["ranker"] >= 4 * recall["random"], recall
