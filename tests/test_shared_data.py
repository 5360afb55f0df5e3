"""Real public data (../shared/data): MovieLens 100K through the importer, the splits and the pipeline."""

import polars as pl
import pytest

from recsys.dataset import Dataset
from recsys.split import split_interactions
from tests.conftest import all_cores

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


def by_variant(result) -> dict[str, dict[str, float]]:
    """A run's test table with the shipped variant also under its own name (it is ``ranker`` there)."""
    return {**result.metrics, result.shipped_variant: result.metrics["ranker"]}


@pytest.fixture(scope="module")
def movielens_runs(movielens, tmp_path_factory):
    """Seed 0 with the defaults (no config): a stratified run, the same run again on a catalog whose
    rows are shuffled (registered as models 'a' and 'b'), and a cold-items run (one ranker). Values are
    ``TrainResult``s; ``runs["rankings"]`` holds each registered model's batch ranking of every user."""
    import os
    from dataclasses import replace

    from recsys.cli import load_config
    from training.pipeline import train

    work = tmp_path_factory.mktemp("ml100k")
    shuffled = replace(movielens, items=movielens.items.sample(fraction=1.0, shuffle=True, seed=5))
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with all_cores():  # the multi-core paths (variants at once, ranking in parts), also under `make test`
            runs = {}
            for name, data, extra, register in (("plain", movielens, {}, "a"), ("shuffled", shuffled, {}, "b"),
                                                # One ranker (no fold ensemble): the cold-item checks do not
                                                # depend on it, and its five fits would lengthen CI.
                                                ("cold", movielens,
                                                 {"cold_item_fraction": 0.2, "ranker": {"folds": 1}}, None)):
                config = load_config(None, split="stratified", seed=0, **extra)
                runs[name] = train(data, config, experiment=f"ml100k-{name}", register_name=register,
                                   workdir=work, progress=False)
            runs["rankings"] = {name: _rank_everyone(runs[name].model_uri, work / f"{name}.parquet")
                                for name in ("plain", "shuffled")}
        return runs
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def _rank_everyone(model_uri: str, out) -> bytes:
    """The registered model's top-10 for every user it knows, as Parquet bytes (the batch path)."""
    import mlflow

    from serving.recommend import recommend_users

    bundle = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().bundle
    recommend_users(bundle, bundle.state.users.ids.to_list(), 10).write_parquet(out)
    return out.read_bytes()


@pytest.mark.slow
def test_movielens_ranker_quality(movielens_runs):
    m = movielens_runs["plain"].metrics
    # Runs are deterministic: `benchmarks/movielens_quality.py --seeds 0` prints this run's figures.
    # Floors for the defaults (no config), with room for small, deliberate changes; the figures
    # the README states come from the benchmark, on seeds never used to choose the defaults.
    assert m["ranker"]["ndcg@10"] > 0.44
    assert m["ranker"]["precision@10"] > 0.38
    assert m["ranker"]["ndcg@10"] > m["popularity"]["ndcg@10"] + 0.15
    for baseline in ("cooccurrence", "text", "newest", "random"):
        assert m["ranker"]["ndcg@10"] > m[baseline]["ndcg@10"], baseline
    # The stage-1 models at their published strength on this protocol (BPR 0.442 published).
    assert m["bpr"]["ndcg@10"] > 0.42
    assert m["als"]["ndcg@10"] > 0.42
    assert m["ease"]["ndcg@10"] > 0.44


@pytest.mark.slow
def test_movielens_shipped_variant_is_the_best_on_validation_unless_its_text_does_not_pay(movielens_runs):
    result = movielens_runs["plain"]
    validation = {name: values["ndcg@10"] for name, values in result.validation_metrics.items()
                  if name.startswith("ranker")}
    if validation["ranker"] != max(validation.values()):  # the leader's text did not earn its place
        assert ("no text variant earns its place" in result.shipped_reason if result.shipped_variant == "ranker_no_text"
                else "whose text did not earn its place" in result.shipped_reason)
    assert result.shipped_reason.startswith(f"{result.shipped_variant} is shipped")
    leader = max(validation, key=validation.get)
    if (result.shipped_variant if leader == "ranker" else leader) != "ranker_no_text":
        assert "paired lift over ranker_no_text" in result.shipped_reason
    assert set(by_variant(result)) >= {"ranker_finetuned_text", "ranker_pretrained_text", "ranker_no_text"}


@pytest.mark.slow
def test_movielens_runs_repeat_exactly_whatever_the_catalog_row_order(movielens_runs):
    """Same data (rows of items shuffled), config and seed: every metric identical (the issue asks for
    nDCG@10 within 0.002) and the two registered models rank every user byte-identically."""
    plain, shuffled = movielens_runs["plain"], movielens_runs["shuffled"]
    assert abs(plain.metrics["ranker"]["ndcg@10"] - shuffled.metrics["ranker"]["ndcg@10"]) <= 0.002
    from tests.test_determinism import _differences

    differ = _differences(plain.metrics_document(), shuffled.metrics_document())
    assert not differ, differ[:20]
    rankings = movielens_runs["rankings"]
    assert len(rankings["plain"]) > 1000 and rankings["plain"] == rankings["shuffled"]


@pytest.mark.slow
def test_movielens_fine_tuned_text_beats_pretrained_text(movielens_runs):
    m = movielens_runs["plain"].metrics
    assert m["text"]["ndcg@10"] > m["text_pretrained"]["ndcg@10"]


@pytest.mark.slow
def test_movielens_cold_items_are_found_through_text_and_not_through_catalog_order(movielens_runs):
    cold = by_variant(movielens_runs["cold"])
    names = ("ranker_finetuned_text", "ranker_pretrained_text", "ranker_no_text", "random")
    recall = {name: cold[name]["cold_items/recall@10"] for name in names}
    n_cold = cold["random"]["cold_items/n_items"]
    chance = 10 / n_cold  # expected Recall@10 of a random order of the cold set
    # Without text a cold item has nothing but ties: no catalog order may order them (it was worth
    # 3.5x chance before the tie rule).
    assert recall["ranker_no_text"] <= 1.5 * chance, recall
    # A run that takes items without behaviour ships a text variant: the better one on validation
    # over the whole catalog, where cold items are a minority.
    result = movielens_runs["cold"]
    assert result.shipped_variant in ("ranker_finetuned_text", "ranker_pretrained_text"), result.shipped_reason
    assert "ranker_no_text was not a candidate" in result.shipped_reason
    assert result.shipped_by == "validation, text variants only"
    validation = {**result.validation_metrics, result.shipped_variant: result.validation_metrics["ranker"]}
    text = ("ranker_finetuned_text", "ranker_pretrained_text")
    assert result.shipped_variant == max(text, key=lambda name: (validation[name]["ndcg@10"], name == text[1]))
    # Text is what finds them. How well each text variant does on the cold items moves
    # with the fine-tuning's float arithmetic, which differs between CPU types, so the 3x bar is
    # on the better text variant, and each must clearly beat the no-text variant.
    assert max(recall["ranker_finetuned_text"], recall["ranker_pretrained_text"]) >= 3 * chance, recall
    for name in ("ranker_finetuned_text", "ranker_pretrained_text"):
        assert recall[name] >= recall["ranker_no_text"] + 1.5 * chance, (name, recall)
