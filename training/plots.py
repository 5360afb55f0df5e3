"""Figures logged to MLflow (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

SHIPPED_COLOR = "#C44E00"  # the shipped ranker: dark orange
VARIANT_COLOR = "#F5B041"  # the other ranker variants (ablations): light orange
BASELINE_COLOR = "#5B7FA6"  # every baseline: muted blue
INTERVAL_LABEL = "95% bootstrap interval over test users"


def feature_importance_figure(importance: dict[str, float]):
    """Horizontal bar chart of total gain per feature, largest on top."""
    names = sorted(importance, key=importance.get)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(names, [importance[n] for n in names], color="#4C72B0")
    ax.set_xlabel("total gain")
    ax.set_title("LightGBM LambdaRank feature importance")
    fig.tight_layout()
    return fig


def _finite(value) -> bool:
    """A number that is neither NaN nor infinite (None and non-numbers are not)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def model_comparison_figure(results: dict[str, dict[str, float]], metric: str, shipped: str = ""):
    """One test metric (e.g. ``ndcg@10``) for every model, as horizontal bars sorted by value (best
    on top), each labelled with its value (4 decimals).

    Colours: the shipped ranker (``ranker``, labelled "ranker (<variant>, shipped)"; the variant is
    chosen on validation: ``training.variants.choose_variant``), the other ranker variants
    (``ranker_*``: ablations) and the baselines. Whiskers: the 95% percentile bootstrap interval
    of the mean over test users, for every model whose results carry ``<metric>_ci_low`` /
    ``<metric>_ci_high``. Models without a finite value of ``metric`` are left out.
    """
    names = sorted((n for n in results if _finite(results[n].get(metric))), key=lambda n: results[n][metric])
    values = np.array([results[n][metric] for n in names], dtype=float)

    def kind(name: str) -> str:
        return "shipped" if name == "ranker" else "variant" if name.startswith("ranker") else "baseline"

    colors = {"shipped": SHIPPED_COLOR, "variant": VARIANT_COLOR, "baseline": BASELINE_COLOR}
    shipped_label = f"ranker ({shipped}, shipped)" if shipped else "ranker (shipped)"
    labels = [shipped_label if n == "ranker" else n for n in names]
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(names) + 1.9), layout="constrained")
    y = np.arange(len(names))
    bars = ax.barh(y, values, color=[colors[kind(n)] for n in names], height=0.7, zorder=2)
    bars.set_label("_bars")  # the legend below explains the colours
    ax.set_yticks(y, labels)
    for tick, name in zip(ax.get_yticklabels(), names, strict=True):
        if name == "ranker":
            tick.set_fontweight("bold")
    low_key, high_key = f"{metric}_ci_low", f"{metric}_ci_high"
    with_ci = [i for i, n in enumerate(names) if _finite(results[n].get(low_key)) and _finite(results[n].get(high_key))]
    ends = values.copy()
    if with_ci:
        lows = np.array([results[names[i]][low_key] for i in with_ci])
        highs = np.array([results[names[i]][high_key] for i in with_ci])
        xerr = np.vstack([np.clip(values[with_ci] - lows, 0, None), np.clip(highs - values[with_ci], 0, None)])
        ax.errorbar(values[with_ci], y[with_ci], xerr=xerr, fmt="none", ecolor="#222222", elinewidth=1.1,
                    capsize=3, zorder=3, label=INTERVAL_LABEL)
        ends[with_ci] = np.maximum(values[with_ci], highs)
    span = max(float(ends.max()) if len(ends) else 0.0, 1e-9)
    for i, value in enumerate(values):
        ax.text(ends[i] + 0.012 * span, y[i], f"{value:.4f}", va="center", ha="left", fontsize=8.5,
                fontweight="bold" if names[i] == "ranker" else "normal", zorder=4)
    ax.set_xlim(min(0.0, float(values.min()) if len(values) else 0.0), span * 1.16)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel(f"test {metric} (mean over test users)")
    ax.grid(axis="x", color="#DDDDDD", zorder=0)
    ax.set_axisbelow(True)
    present = {kind(n) for n in names}
    handles = [Patch(color=colors[k], label=label) for k, label in (
        ("shipped", shipped_label), ("variant", "other ranker variants (ablations)"), ("baseline", "baselines"))
        if k in present]
    if with_ci:
        handles.append(Line2D([], [], color="#222222", marker="|", markersize=8, linewidth=1.1,
                              label="whiskers: " + INTERVAL_LABEL))
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    subtitle = "\n(shipped = the ranker variant chosen on validation)" if shipped else ""
    ax.set_title(f"Test {metric} by model" + subtitle, fontsize=11)
    return fig


def loss_curve_figure(train_losses: list[float], val_losses: list[float], val_steps: list[int],
                      best_step: int | None = None):
    """Text-model fine-tuning: in-batch InfoNCE loss per training batch (faint, with a moving
    average when there are enough batches) and on the validation examples at each evaluation
    (step 0 = the pretrained encoder), the best validation step marked (dashed line, star and
    "best step N (loss x.xxx)"): the weights kept. ``best_step`` defaults to the step of the
    lowest validation loss (the first of equals, as fine-tuning chooses)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(1, len(train_losses) + 1)
    window = max(len(train_losses) // 25, 5)
    smooth = len(train_losses) >= 4 * window
    ax.plot(steps, train_losses, color="#4C72B0", alpha=0.35 if smooth else 1.0, linewidth=0.8,
            label="train (per batch)")
    if smooth:
        kernel = np.ones(window) / window
        ax.plot(steps[window - 1:], np.convolve(train_losses, kernel, mode="valid"), color="#1F3F73",
                linewidth=1.5, label=f"train (moving average, {window} batches)")
    ax.plot(val_steps, val_losses, marker="o", markersize=4, color="#DD8452", label="validation")
    if len(val_losses):
        if best_step is None or best_step not in val_steps:
            best_step = int(val_steps[int(np.argmin(val_losses))])
        best_loss = float(val_losses[list(val_steps).index(best_step)])
        ax.axvline(best_step, color="#C44E00", linestyle="--", linewidth=1.2, label="best validation step")
        ax.plot([best_step], [best_loss], marker="*", markersize=14, color="#C44E00", linestyle="none", zorder=5)
        last = max(len(train_losses), max(val_steps, default=0), 1)
        right = best_step <= 0.6 * last  # the text on the side of the line with more room
        # Near the top of the dashed line (losses fall, so the top is usually empty), pointing at the star.
        ax.annotate(f"best step {best_step} (loss {best_loss:.3f})", xy=(best_step, best_loss),
                    xytext=(best_step, 0.93), textcoords=("data", "axes fraction"), ha="left" if right else "right",
                    va="top", fontsize=9, color="#C44E00",
                    arrowprops={"arrowstyle": "->", "color": "#C44E00", "shrinkB": 8},
                    bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#C44E00", "alpha": 0.9})
    ax.set_xlabel("training step (batches)")
    ax.set_ylabel("in-batch InfoNCE loss")
    ax.set_title("Text model fine-tuning")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


SLICE_MODELS = ("ranker", "ranker_no_text", "ease", "text", "popularity_7d", "als")
SLICE_COLORS = {"ranker": SHIPPED_COLOR, "ranker_no_text": VARIANT_COLOR}
SLICE_PANELS = (
    ("users", "ndcg@{k}", ("short", "medium", "long"), "n", "users",
     "user history length (events in the training window, tertiles of test users)",
     "nDCG@{k} (mean over the slice's users)"),
    ("items", "recall@{k}", ("head", "tail", "cold"), "n_relevant", "relevant\nuser-item pairs",
     "item popularity in the training window (head = top 20%, cold = unseen)",
     "Recall@{k} (of the slice's relevant items)"),
)


def _slice_count(results: dict[str, dict[str, float]], models: list[str], key: str) -> float | None:
    """The first finite count under ``key`` among the models (counts are the same for all)."""
    for model in models:
        value = results[model].get(key)
        if _finite(value):
            return value
    return None


def slice_figure(results: dict[str, dict[str, float]], k: int):
    """Grouped bars per model (the shipped ranker, the no-text ablation and a few baselines):
    left, nDCG@k of test users split into thirds by training history length (short / medium /
    long); right, Recall@k of the relevant test items by popularity (head / tail / cold). Each
    tick label carries its count (``users_<slice>/n`` test users, ``items_<slice>/n_relevant``
    relevant user-item pairs, from ``training.slices.slice_metrics``) when the results have it."""
    models = [m for m in SLICE_MODELS if m in results]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    width = 0.8 / max(len(models), 1)
    palette = iter(["#5B7FA6", "#55A868", "#8172B3", "#937860", "#64B5CD", "#8C8C8C"])
    colors = {m: SLICE_COLORS.get(m) or next(palette) for m in models}
    for ax, (kind, metric, names, count_key, unit, xlabel, ylabel) in zip(axes, SLICE_PANELS, strict=True):
        metric = metric.format(k=k)
        x = np.arange(len(names))
        for i, model in enumerate(models):
            values = [results[model].get(f"{kind}_{n}/{metric}", np.nan) for n in names]
            ax.bar(x + i * width, values, width, label=model, color=colors[model], zorder=2)
        ticks = []
        for n in names:
            count = _slice_count(results, models, f"{kind}_{n}/{count_key}")
            ticks.append(n if count is None else f"{n}\n(n={int(count):,} {unit})")
        ax.set_xticks(x + width * (len(models) - 1) / 2, ticks)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel.format(k=k))
        ax.grid(axis="y", color="#DDDDDD", zorder=0)
        ax.set_title(f"{metric} by {'user history length' if kind == 'users' else 'item popularity'}")
    if models:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(models), fontsize=9,
                   frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def score_distribution_figure(scores, labels):
    """Histogram of the ranker's test-candidate scores, relevant vs not (densities)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = labels.astype(bool)
    for mask, name, color in ((~labels, "not relevant", "#4C72B0"), (labels, "relevant", "#DD8452")):
        if mask.any():
            ax.hist(scores[mask], bins=50, density=True, alpha=0.6, label=f"{name} ({int(mask.sum())})", color=color)
    ax.set_xlabel("ranker score")
    ax.set_ylabel("density")
    ax.set_title("Ranker scores on test candidates")
    ax.legend()
    fig.tight_layout()
    return fig


def close_all() -> None:
    """Free the figures once logged (pyplot keeps every figure alive until closed)."""
    plt.close("all")
