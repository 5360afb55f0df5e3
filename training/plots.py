"""Figures logged to MLflow (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def feature_importance_figure(importance: dict[str, float]):
    """Horizontal bar chart of total gain per feature, largest on top."""
    names = sorted(importance, key=importance.get)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(names, [importance[n] for n in names], color="#4C72B0")
    ax.set_xlabel("total gain")
    ax.set_title("LightGBM LambdaRank feature importance")
    fig.tight_layout()
    return fig


def model_comparison_figure(results: dict[str, dict[str, float]], metric: str, shipped: str = ""):
    """Bar chart of one test metric for the shipped ranker, the other variants and every
    baseline; the shipped bar (``ranker``) is labelled with its variant and drawn darkest."""
    names = [n for n in results if metric in results[n]]
    values = [results[n][metric] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    colors = ["#C44E00" if n == "ranker" else "#F0B27A" if n.startswith("ranker") else "#4C72B0" for n in names]
    labels = [f"ranker ({shipped}, shipped)" if n == "ranker" and shipped else n for n in names]
    ax.bar(labels, values, color=colors)
    ax.set_ylabel(metric)
    ax.set_title(f"test {metric}; shipped: the variant best on validation" if shipped
                 else f"{metric}: ranker vs baselines")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def loss_curve_figure(train_losses: list[float], val_losses: list[float], val_steps: list[int]):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(train_losses) + 1), train_losses, label="train (batch)")
    ax.plot(val_steps, val_losses, marker="o", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("in-batch InfoNCE loss")
    ax.set_title("Text model fine-tuning")
    ax.legend()
    fig.tight_layout()
    return fig


SLICE_MODELS = ("ranker", "ranker_no_text", "ease", "text", "popularity_7d", "als")


def slice_figure(results: dict[str, dict[str, float]], k: int):
    """Grouped bars: nDCG@k by user history length and Recall@k by item popularity, per model."""
    import numpy as np

    models = [m for m in SLICE_MODELS if m in results]
    panels = [("users", f"ndcg@{k}", ("short", "medium", "long")), ("items", f"recall@{k}", ("head", "tail", "cold"))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(len(models), 1)
    for ax, (kind, metric, names) in zip(axes, panels, strict=True):
        x = np.arange(len(names))
        for i, model in enumerate(models):
            values = [results[model].get(f"{kind}_{n}/{metric}", np.nan) for n in names]
            ax.bar(x + i * width, values, width, label=model)
        ax.set_xticks(x + width * (len(models) - 1) / 2, [f"{n}" for n in names])
        ax.set_title(f"{metric} by {'user history length' if kind == 'users' else 'item popularity'}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
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
