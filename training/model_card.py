"""Model cards: the Markdown descriptions people read in the MLflow UI.

- ``run_summary``: the training run's description (data and split, the shipped ranker's
  validation and test metrics with intervals, the lift over the best baseline, which variant
  shipped and why, every model's row).
- ``version_card``: a registered version's description: the run summary plus inputs and outputs
  with an example request, known limitations, and the version's promotion history.
- ``registered_model_card``: the registered model's description: what it is, which version is
  champion and challenger with their headline figures, and the whole promotion history.

The promotion history section is re-rendered by ``refresh`` whenever an alias moves
(``training.registry``), from the registered model's ``champion_history`` tag.
"""

from __future__ import annotations

import json
import math

HISTORY_HEADING = "## Promotion history"
_EXAMPLE_K = 10


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _interval(values: dict[str, float], key: str, signed: bool = False) -> str:
    low, high = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
    if low is None or high is None:
        return ""
    return f" [{_num(low, signed)}, {_num(high, signed)}]"


def run_summary(results: dict[str, dict[str, float]], validation: dict[str, dict[str, float]], config, dataset,
                choice, best_baseline: str) -> str:
    """Markdown summary of one training run (results/validation: model -> metric -> value, the
    shipped ranker under ``ranker``; choice: ``training.variants.Choice``)."""
    k = config.k
    ndcg, recall = f"ndcg@{k}", f"recall@{k}"
    summary = dataset.summary()
    test, val = results.get("ranker", {}), validation.get("ranker", {})
    lines = [
        f"Text-aware LambdaRank recommender trained on `{dataset.source}`: {summary['n_interactions']:,} "
        f"interactions, {summary['n_users']:,} users, {summary['n_items']:,} items; split `{config.split}`, "
        f"seed {config.seed}, k = {k}. "
        + ("Choices (early stopping, the baseline to beat) were made on validation users cut from the training "
           "window, and the shipped variant was pinned by `ranker.ship`; " if choice.pinned else
           "Choices (early stopping, the shipped variant, the baseline to beat) were made on validation users cut "
           "from the training window; ") + "test metrics are reported only.",
        "",
        f"| shipped ranker | {ndcg} [95% CI] | {recall} | MRR |",
        "|---|---|---|---|",
        f"| validation | {_num(val.get(ndcg))}{_interval(val, ndcg)} | {_num(val.get(recall))} | "
        f"{_num(val.get('mrr'))} |",
        f"| test | {_num(test.get(ndcg))}{_interval(test, ndcg)} | {_num(test.get(recall))} | "
        f"{_num(test.get('mrr'))} |",
        "",
    ]
    lift = f"lift_vs_best_baseline/{ndcg}"
    if best_baseline and lift in test:
        lines += [f"**Lift over the best baseline** (`{best_baseline}`, chosen on validation): test {ndcg} "
                  f"{_num(test[lift], True)} (paired 95% CI{_interval(test, lift, True)}).", ""]
    lines += [f"**Shipped variant: `{choice.shipped}`.** {choice.reason()}.", "",
              f"| model | validation {ndcg} | test {ndcg} [95% CI] | test {recall} |", "|---|---|---|---|"]
    for model, values in sorted(results.items(), key=lambda kv: -kv[1].get(ndcg, 0.0)):
        label = f"**ranker ({choice.shipped}, shipped)**" if model == "ranker" else model
        lines.append(f"| {label} | {_num(validation.get(model, {}).get(ndcg))} | "
                     f"{_num(values.get(ndcg))}{_interval(values, ndcg)} | {_num(values.get(recall))} |")
    return "\n".join(lines)


def _example_request(example_users: list[str], k: int) -> str:
    rows = [{"user_id": example_users[0] if example_users else "U1", "k": k}]
    return json.dumps({"dataframe_records": rows})


LIMITATIONS = (
    "Users the model has not seen get the cold-start ranking (`path` = `cold-start`), unless the request "
    "sends their recent `history`.",
    "Items only reach a list through the candidate sources; an item outside every source's candidates "
    "(see `candidate_recall` in the run) is never ranked.",
    "New items need `recsys add-items` (text encoded into the model's space) before they can be ranked.",
    "The figures hold for this data, split and seed; another data set needs its own run, and a version's "
    "figures are only comparable to another's on the same validation data (the promotion gate checks this).",
)


def version_card(name: str, version: str, summary: str, example_users: list[str], k: int,
                 history: list[dict]) -> str:
    """Markdown card of one registered version (summary: ``run_summary``; history: the registered
    model's champion history, of which this version's moves are shown)."""
    request = _example_request(example_users, min(k, _EXAMPLE_K))
    lines = [f"# {name} version {version}", "", summary, "",
             "## Inputs and outputs",
             "One request row per user: `user_id` (string), optional `k` (long, 1-100, default "
             f"{k}), optional `candidates`, `history`, `exclude` (arrays of item-id strings). One answer row per "
             "user: `user_id`, `item_ids` (best first), `scores`, `path` (`personalized`, `history-only` or "
             "`cold-start`), "
             "`unknown_ids` (ids in the request the model does not know).", "",
             "```bash",
             f"curl -s -X POST http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\\n"
             f"  -d '{request}'",
             "```", "",
             "## Known limitations", *[f"- {text}" for text in LIMITATIONS], "",
             history_section(history, version, name)]
    return "\n".join(lines)


def history_section(history: list[dict], version: str | None = None, name: str = "NAME") -> str:
    """``## Promotion history`` as a table, newest first; only the moves to or from ``version`` when given."""
    moves = [m for m in history if version is None or str(version) in (str(m.get("to")), str(m.get("from")))]
    if not moves:
        hint = (f": `recsys promote --name {name} --version {version}` moves the champion here when it beats the "
                "champion." if version else ".")
        return f"{HISTORY_HEADING}\n\nNot promoted yet{hint}"
    lines = [HISTORY_HEADING, "", "| time | kind | from | to | reason |", "|---|---|---|---|---|"]
    for move in reversed(moves):
        reason = str(move.get("reason", "")).replace("|", "\\|")
        lines.append(f"| {move.get('time', '')} | {move.get('kind', 'promote')} | {move.get('from') or '-'} | "
                     f"{move.get('to')} | {reason} |")
    return "\n".join(lines)


def registered_model_card(name: str, aliases: dict[str, str], version_tags: dict[str, dict[str, str]],
                          history: list[dict]) -> str:
    """Markdown card of the registered model (aliases: alias -> version; version_tags: version -> tags)."""
    lines = [f"# {name}", "",
             "Text-aware recommender: a LightGBM LambdaRank ranker over collaborative-filtering, text-interest "
             "(fine-tuned MiniLM) and behaviour features, logged as one MLflow pyfunc model. Load "
             f"`models:/{name}@champion` to serve or batch-rank the current champion; each version's "
             "description is its model card.", "",
             "| alias | version | validation nDCG | test nDCG | shipped variant |", "|---|---|---|---|---|"]
    for alias in ("champion", "challenger"):
        version = aliases.get(alias)
        if version is None:
            continue
        tags = version_tags.get(str(version), {})
        metric = tags.get("validation.metric", "")
        lines.append(f"| {alias} | {version} | {tags.get(f'validation.{metric}', '-')} | "
                     f"{tags.get(f'test.{metric}', '-')} | {tags.get('shipped_variant', '-')} |")
    lines += ["", history_section(history)]
    return "\n".join(lines)


def with_history(card: str, history: list[dict], version: str, name: str = "NAME") -> str:
    """``card`` with its promotion-history section re-rendered (appended when it has none)."""
    head = card.split(HISTORY_HEADING, 1)[0].rstrip()
    return f"{head}\n\n{history_section(history, version, name)}".lstrip()


def refresh(client, name: str, versions: list[str]) -> None:
    """Re-render the registered model's card and the history sections of ``versions``' cards."""
    from training.registry import HISTORY_TAG

    model = client.get_registered_model(name)
    history = json.loads(model.tags.get(HISTORY_TAG, "[]"))
    aliases = dict(model.aliases or {})
    shown = {str(v) for v in aliases.values()}
    tags = {v: client.get_model_version(name, v).tags for v in shown}
    client.update_registered_model(name, description=registered_model_card(name, aliases, tags, history))
    for version in {str(v) for v in versions if v is not None}:
        current = client.get_model_version(name, version).description or ""
        client.update_model_version(name, version, description=with_history(current, history, version, name))
