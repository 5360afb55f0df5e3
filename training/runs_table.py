"""A terminal comparison table of recent training runs (top-level runs only, newest first)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from recsys.errors import RecsysError

BOLD, RESET = "\033[1m", "\033[0m"


def runs_table(experiment: str | None, *, limit: int = 10, k: int = 10, color: bool = False) -> str:
    """Run name, split, seed and the ranker's metrics side by side; the best value of each
    metric column is marked with ``*`` (and bold on a terminal)."""
    client = MlflowClient()
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = [e.name for e in client.search_experiments()]
            raise RecsysError(f"no experiment named {experiment!r}; known: {names}")
        experiments = [found]
    else:
        experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], order_by=["attributes.start_time DESC"],
                              max_results=limit * 20)
    runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][:limit]
    if not runs:
        return "no runs yet: run `recsys train` first"
    names = {e.experiment_id: e.name for e in experiments}
    used = sorted({int(r.data.params["k"]) for r in runs if r.data.params.get("k", "").isdigit()})
    warning = ""
    if used and k not in used:
        warning = (f"warning: no run here was evaluated at k={k} (they used k = {', '.join(map(str, used))}), so "
                   f"the @{k} columns are empty; pass --k {used[0]}\n")
    columns = [f"ndcg_at_{k}", f"test/recall_at_{k}", "test/mrr", f"test/lift_vs_best_baseline/ndcg_at_{k}",
               f"validation/ndcg_at_{k}"]
    headers = ["run", "experiment", "split", "seed", "model version", f"ndcg_at_{k}", f"recall_at_{k}", "mrr",
               "lift_vs_best", f"val_ndcg_at_{k}"]
    rows = []
    for run in runs:
        params, values = run.data.params, run.data.metrics
        rows.append([run.info.run_name or run.info.run_id[:8], names.get(run.info.experiment_id, "?"),
                     params.get("split", "-"), params.get("seed", "-"), _registered(client, run.info.run_id),
                     *[values.get(c) for c in columns]])
    first_metric = 5
    best = {i: max((r[i] for r in rows if r[i] is not None), default=None) for i in range(first_metric, len(headers))}
    cells = [[_cell(v, best.get(i), color) if i >= first_metric else str(v) for i, v in enumerate(r)] for r in rows]
    widths = [max(len(_plain(x)) for x in [h] + [c[i] for c in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    for row in cells:
        lines.append("  ".join(c + " " * (w - len(_plain(c))) for c, w in zip(row, widths, strict=True)))
    return warning + "\n".join(lines) + "\n(* best in column)"


def _registered(client: MlflowClient, run_id: str) -> str:
    """``NAME/VERSION`` (and its aliases, e.g. ``@champion``) of the model version the run registered; "-" if none."""
    versions = client.search_model_versions(f"run_id='{run_id}'")
    if not versions:
        return "-"
    version = max(versions, key=lambda v: int(v.version))
    # search results carry no aliases: they live on the registered model (alias -> version)
    named = client.get_registered_model(version.name).aliases or {}
    aliases = "".join(f" @{a}" for a, v in sorted(named.items()) if str(v) == str(version.version))
    return f"{version.name}/{version.version}{aliases}"


def _cell(value, best, color: bool) -> str:
    if value is None:
        return "-"
    text = f"{value:.4f}"
    if best is not None and value == best:
        return f"{BOLD}{text}*{RESET}" if color else f"{text}*"
    return text


def _plain(text: str) -> str:
    return text.replace(BOLD, "").replace(RESET, "")
