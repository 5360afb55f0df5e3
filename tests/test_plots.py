"""The figures logged to MLflow say what they claim (values, intervals, counts, best step), and the
evaluation gives every model the nDCG interval the comparison figure draws."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer

from training import plots

K = 10
METRIC = f"ndcg@{K}"
VALUES = {"ranker": 0.1832, "ranker_no_text": 0.1714, "ranker_pretrained_text": 0.1790, "ease": 0.1523,
          "cooccurrence": 0.1398, "als": 0.1287, "bpr": 0.1102, "popularity": 0.0611, "popularity_7d": 0.0947,
          "text": 0.0823, "text_pretrained": 0.0541, "random": 0.0012}
NO_INTERVAL = "bpr"  # one model without an interval: no whisker for it


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots.close_all()


@pytest.fixture
def results() -> dict[str, dict[str, float]]:
    out = {}
    for name, value in VALUES.items():
        out[name] = {METRIC: value, f"recall@{K}": 1.4 * value}
        if name != NO_INTERVAL:
            out[name].update({f"{METRIC}_ci_low": value - 0.004 - 0.02 * value,
                              f"{METRIC}_ci_high": value + 0.005 + 0.02 * value})
        for i, (slice_name, n) in enumerate((("short", 1712), ("medium", 1655), ("long", 1633))):
            out[name][f"users_{slice_name}/ndcg@{K}"] = value * (0.8 + 0.2 * i)
            out[name][f"users_{slice_name}/n"] = float(n)
        for i, (slice_name, n) in enumerate((("head", 21034), ("tail", 6412), ("cold", 1208))):
            out[name][f"items_{slice_name}/recall@{K}"] = value * (1.5 - 0.5 * i)
            out[name][f"items_{slice_name}/n_relevant"] = float(n)
    return out


def _bars_by_label(ax) -> dict[str, object]:
    """Bar patch per y tick label (the horizontal bars are drawn at y = 0, 1, ...)."""
    labels = [t.get_text() for t in ax.get_yticklabels()]
    bars = [p for p in ax.patches if p.get_height() > 0]
    return {labels[round(p.get_y() + p.get_height() / 2)]: p for p in bars}


def test_model_comparison_sorts_labels_and_prints_each_value(results):
    fig = plots.model_comparison_figure(results, METRIC, "finetuned_text")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    shipped = "ranker (finetuned_text, shipped)"
    expected = [shipped if n == "ranker" else n for n in sorted(VALUES, key=VALUES.get)]
    assert labels == expected  # full names, lowest at the bottom, the best (the shipped ranker) on top
    texts = [t.get_text() for t in ax.texts]
    assert sorted(texts) == sorted(f"{v:.4f}" for v in VALUES.values())
    assert "0.1832" in texts and "0.0012" in texts
    bars = _bars_by_label(ax)
    assert bars[shipped].get_width() == pytest.approx(VALUES["ranker"])
    assert to_hex(bars[shipped].get_facecolor()) == plots.SHIPPED_COLOR.lower()
    for name in ("ranker_no_text", "ranker_pretrained_text"):
        assert to_hex(bars[name].get_facecolor()) == plots.VARIANT_COLOR.lower()
    for name in ("ease", "popularity", "random", "text"):
        assert to_hex(bars[name].get_facecolor()) == plots.BASELINE_COLOR.lower()
    assert METRIC in ax.get_xlabel()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert shipped in legend and "baselines" in legend and "other ranker variants (ablations)" in legend
    assert any("95% bootstrap interval over test users" in t for t in legend)


def test_model_comparison_draws_the_interval_of_each_model_that_has_one(results):
    fig = plots.model_comparison_figure(results, METRIC, "finetuned_text")
    ax = fig.axes[0]
    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 1
    segments = containers[0].lines[2][0].get_segments()  # the horizontal whiskers
    labels = [t.get_text() for t in ax.get_yticklabels()]
    whiskers = {labels[round(seg[0][1])]: (seg[0][0], seg[1][0]) for seg in segments}
    with_interval = {n for n in VALUES if n != NO_INTERVAL}
    assert {n.split(" (")[0] for n in whiskers} == with_interval
    for label, (low, high) in whiskers.items():
        name = label.split(" (")[0]
        assert low == pytest.approx(results[name][f"{METRIC}_ci_low"])
        assert high == pytest.approx(results[name][f"{METRIC}_ci_high"])


def test_model_comparison_text_fits_and_does_not_overlap(results):
    fig = plots.model_comparison_figure(results, METRIC, "finetuned_text")
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    figure_box, axes_box = fig.bbox, ax.get_window_extent(renderer)
    ticks = [t.get_window_extent(renderer) for t in ax.get_yticklabels()]
    assert all(box.x0 >= figure_box.x0 and box.x1 <= axes_box.x0 for box in ticks)  # full names, inside
    assert all(not a.overlaps(b) for a, b in zip(ticks, ticks[1:], strict=False))
    values = [t.get_window_extent(renderer) for t in ax.texts]
    assert all(axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 for box in values)  # value labels inside
    legend, xlabel = fig.legends[0].get_window_extent(renderer), ax.xaxis.label.get_window_extent(renderer)
    assert xlabel.y0 >= legend.y1 and legend.y0 >= figure_box.y0  # below the axis label, inside the figure


def test_model_comparison_without_shipped_variant_or_intervals():
    results = {"ranker": {METRIC: 0.2}, "ease": {METRIC: 0.1}, "random": {METRIC: float("nan")}}
    fig = plots.model_comparison_figure(results, METRIC)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ease", "ranker (shipped)"]
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert not any("bootstrap" in t.get_text() for t in fig.legends[0].get_texts())


def test_slice_figure_labels_axes_and_shows_counts(results):
    fig = plots.slice_figure(results, K)
    users, items = fig.axes
    assert [t.get_text() for t in users.get_xticklabels()] == [
        "short\n(n=1,712 users)", "medium\n(n=1,655 users)", "long\n(n=1,633 users)"]
    item_ticks = [t.get_text() for t in items.get_xticklabels()]
    assert [t.split("\n")[0] for t in item_ticks] == ["head", "tail", "cold"]
    assert "n=21,034 relevant" in item_ticks[0] and "n=1,208 relevant" in item_ticks[2]
    assert "user history length" in users.get_xlabel() and "item popularity" in items.get_xlabel()
    assert f"nDCG@{K}" in users.get_ylabel() and f"Recall@{K}" in items.get_ylabel()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [m for m in plots.SLICE_MODELS if m in results]
    # One bar per model and slice, at the model's value.
    ranker_bars = [p for p in users.patches if to_hex(p.get_facecolor()) == plots.SHIPPED_COLOR.lower()]
    assert [p.get_height() for p in ranker_bars] == pytest.approx(
        [results["ranker"][f"users_{s}/ndcg@{K}"] for s in ("short", "medium", "long")])


def test_slice_figure_without_counts_keeps_plain_tick_labels(results):
    for values in results.values():
        for key in [key for key in values if key.endswith("/n") or key.endswith("/n_relevant")]:
            del values[key]
    users, items = plots.slice_figure(results, K).axes
    assert [t.get_text() for t in users.get_xticklabels()] == ["short", "medium", "long"]
    assert [t.get_text() for t in items.get_xticklabels()] == ["head", "tail", "cold"]


def _vertical_dashed_lines(ax) -> list[float]:
    return [line.get_xdata()[0] for line in ax.lines
            if line.get_linestyle() == "--" and len(set(np.atleast_1d(line.get_xdata()))) == 1]


def test_loss_curve_marks_the_best_validation_step():
    train = list(np.linspace(4.0, 1.5, 600))
    val_steps = [0, 100, 200, 300, 400, 500, 600]
    val = [3.55, 2.61, 2.12, 1.94, 1.91, 1.93, 1.97]
    ax = plots.loss_curve_figure(train, val, val_steps).axes[0]
    assert _vertical_dashed_lines(ax) == [400]
    assert "best step 400 (loss 1.910)" in [t.get_text() for t in ax.texts]
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xydata()[0]) == pytest.approx([400, 1.91])
    assert ax.get_xlabel() and "loss" in ax.get_ylabel()


def test_loss_curve_takes_an_explicit_best_step_and_the_first_of_equal_minima():
    val_steps, val = [0, 3, 6], [2.0, 1.5, 1.5]
    ax = plots.loss_curve_figure([2.0] * 6, val, val_steps).axes[0]
    assert _vertical_dashed_lines(ax) == [3]  # the first of equals, as fine-tuning keeps
    ax = plots.loss_curve_figure([2.0] * 6, val, val_steps, best_step=6).axes[0]
    assert _vertical_dashed_lines(ax) == [6]
    assert "best step 6 (loss 1.500)" in [t.get_text() for t in ax.texts]


@pytest.fixture(scope="module")
def split():
    """The split ``small_bundle`` (conftest) was fitted on: same generator, seed and protocol."""
    from recsys.demo_data import DemoSpec, generate_demo
    from recsys.split import split_interactions

    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))
    return split_interactions(data.interactions, kind="temporal", test_fraction=0.25, impressions=data.impressions)


def test_every_evaluated_model_gets_an_ndcg_interval_around_its_value(small_bundle, split):
    from recsys import metrics
    from training.evaluate import evaluate_all

    config = small_bundle.config
    k = config.k
    evaluation = evaluate_all({"ranker": small_bundle, "ranker_other": small_bundle}, split, config)
    assert len(evaluation.metrics) > 5
    for name, values in evaluation.metrics.items():
        assert values[f"ndcg@{k}_ci_low"] <= values[f"ndcg@{k}"] <= values[f"ndcg@{k}_ci_high"], name
        assert (f"lift_vs_best_baseline/ndcg@{k}" in values) == name.startswith("ranker"), name
    # Each interval is the percentile bootstrap of the mean over users with the seeded draws,
    # computed the slow way here (per-user nDCG from hits_matrix, the draws gathered per model).
    n_users = len(evaluation.user_idx)
    draws = np.random.default_rng(config.seed).integers(0, n_users, size=(1000, n_users))
    n_rel = np.array([len(r) for r in evaluation.relevant])
    for name in ("ranker", "popularity", "random", "als"):
        per_user = metrics.ndcg_at_k(metrics.hits_matrix(evaluation.ranked[name][:, :k], evaluation.relevant), n_rel)
        means = per_user[draws].mean(axis=1)
        values = evaluation.metrics[name]
        assert values[f"ndcg@{k}_ci_low"] == pytest.approx(np.quantile(means, 0.025), abs=1e-12)
        assert values[f"ndcg@{k}_ci_high"] == pytest.approx(np.quantile(means, 0.975), abs=1e-12)
