"""Model registry: gated promotion of the ``champion`` alias, rollback, and its history.

A version may become champion only if it beats the current champion on the same validation
data (same ``validation.digest`` tag) and the same metric, by a paired 95% bootstrap interval of
the per-user difference that lies above zero (the two versions' per-user scores are run
artifacts named by the ``validation.per_user`` tag), unless forced. The validation data
is cut from the training window (the held-out label users; see ``training/variants.py``); test
metrics are stored as ``test.*`` tags for reading and never compared here. Every move is
recorded: on the version (``promoted_at``, ``promoted_from``, ``promotion_reason``,
``promotion_kind``) and in the registered model's ``champion_history`` tag (a JSON list), which
``rollback`` walks back. Each history entry records the kind of move in its own ``kind`` field
(see ``KINDS``); the history is replayed by that field, never by reading the free-text reason.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recsys.errors import RecsysError
from training import model_card

CHAMPION = "champion"
# A registered version that did not become champion: the one to compare and maybe promote next.
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
METRIC_TAG = "validation.metric"
VALUE_TAG = "validation.value"
DIGEST_TAG = "validation.digest"
# Where the version's per-user validation scores are (a runs:/ artifact URI: user_id, ndcg). The gate
# pairs the two versions' scores user by user; add-items versions inherit their parent's.
PER_USER_TAG = "validation.per_user"
GATE_LEVEL = 0.95

# The kinds of champion move recorded in the history's ``kind`` field (and the ``promotion_kind``
# version tag). Every kind but ``rollback`` makes its version the new champion on top of the stack.
PROMOTE = "promote"  # gated: beat the champion on the same validation data (or the first champion)
FORCED = "forced"  # `recsys promote --force`: not compared
CATALOG_UPDATE = "catalog-update"  # a forced move to a version with new items: promote(..., kind=CATALOG_UPDATE)
ROLLBACK = "rollback"  # `recsys rollback`: back to the previous champion
KINDS = (PROMOTE, FORCED, CATALOG_UPDATE, ROLLBACK)


@dataclass(frozen=True)
class AliasMove:
    name: str
    from_version: str | None
    to_version: str
    reason: str
    kind: str = PROMOTE


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def register_outcome(name: str, version: str) -> tuple[str, str | None]:
    """After registering ``version``: the first version becomes champion (gated promotion with
    nothing to beat); any later one gets the ``challenger`` alias. Returns (alias, champion version)."""
    client = MlflowClient()
    if current_champion(name, client) is None:
        try:
            promote(name, version)
            return CHAMPION, version
        except RecsysError:  # another run made a champion meanwhile and this one does not beat it
            pass
    client.set_registered_model_alias(name, CHALLENGER, version)
    model_card.refresh(client, name, [version])
    return CHALLENGER, current_champion(name, client)


def current_champion(name: str, client: MlflowClient | None = None) -> str | None:
    return _alias_version(client or MlflowClient(), name, CHAMPION)


def _registered_model(client: MlflowClient, name: str):
    """The registered model ``name``, or a RecsysError naming the ones that exist."""
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(m.name for m in client.search_registered_models(max_results=1000))
        known = ", ".join(names[:20]) + (f" (and {len(names) - 20} more)" if len(names) > 20 else "")
        raise RecsysError(f"no registered model named {name!r}; registered models: {known or 'none yet'} "
                          "(check --name; `recsys train --register NAME` registers one)") from exc


def _versions(client: MlflowClient, name: str) -> list[str]:
    """The versions of ``name``, oldest first. The search filter has no escapes, only a choice of quotes."""
    quote = next((q for q in "'\"" if q not in name), None)
    found = client.search_model_versions(f"name={quote}{name}{quote}" if quote else None)
    return [str(v) for v in sorted(int(v.version) for v in found if v.name == name)]


def _existing_version(client: MlflowClient, name: str, version: str | int) -> str:
    """``version`` as MLflow spells it (``"07"`` -> ``"7"``), or a RecsysError listing the versions of ``name``."""
    _registered_model(client, name)
    versions = _versions(client, name)
    listed = ", ".join(versions) or f"none yet (`recsys train --register {name}` adds one)"
    text = str(version).strip()
    if not (text.isascii() and text.isdigit()):
        raise RecsysError(f"version {str(version)!r} is not a number; versions of {name}: {listed}")
    if str(int(text)) not in versions:
        raise RecsysError(f"{name} has no version {text}; its versions: {listed}")
    return str(int(text))


def history(client: MlflowClient, name: str) -> list[dict]:
    """The registered model's champion moves, oldest first (the ``champion_history`` tag)."""
    tags = client.get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def _move(client: MlflowClient, name: str, to_version: str, reason: str, kind: str) -> AliasMove:
    from_version = current_champion(name, client)
    client.set_registered_model_alias(name, CHAMPION, to_version)
    if _alias_version(client, name, CHALLENGER) == to_version:  # the challenger won: it is not one any more
        client.delete_registered_model_alias(name, CHALLENGER)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    entry = {"time": now, "kind": kind, "from": from_version, "to": to_version, "reason": reason}
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history(client, name) + [entry]))
    for key, value in (("promoted_at", now), ("promoted_from", str(from_version)), ("promotion_reason", reason),
                       ("promotion_kind", kind)):
        client.set_model_version_tag(name, to_version, key, value)
    model_card.refresh(client, name, [to_version, from_version])
    return AliasMove(name=name, from_version=from_version, to_version=to_version, reason=reason, kind=kind)


def _validation(client: MlflowClient, name: str, version: str) -> tuple[str, str, float]:
    try:
        tags = client.get_model_version(name, version).tags
    except MlflowException as exc:
        raise RecsysError(f"model {name!r} has no version {version}") from exc
    missing = [t for t in (METRIC_TAG, VALUE_TAG, DIGEST_TAG) if t not in tags]
    if missing:
        raise RecsysError(f"{name} version {version} has no {missing} tags; it was not registered by "
                          "`recsys train --register`, so it cannot be compared (use --force)")
    return tags[DIGEST_TAG], tags[METRIC_TAG], float(tags[VALUE_TAG])


def promote(name: str, version: str | int, *, force: bool = False, reason: str = "",
            kind: str | None = None) -> AliasMove:
    """Move ``champion`` to ``version`` if it beats the current champion (or ``force``).

    ``kind`` is recorded in the history (default: ``forced`` when forced, else ``promote``); a
    forced move may name what it is, e.g. ``kind=CATALOG_UPDATE``. A promotion is never a rollback.
    """
    kind = kind or (FORCED if force else PROMOTE)
    if kind not in (PROMOTE, FORCED, CATALOG_UPDATE) or (kind != PROMOTE) != force:
        raise ValueError(f"kind {kind!r} does not fit a promotion with force={force}")
    client = MlflowClient()
    version = _existing_version(client, name, version)
    champion = current_champion(name, client)
    if champion == version:
        raise RecsysError(f"{name} version {version} is already the champion")
    if force:
        return _move(client, name, version, f"forced: {reason or 'no reason given'}", kind)
    digest, metric, value = _validation(client, name, version)
    if champion is None:
        return _move(client, name, version, reason or f"first champion ({metric} {value:.4f})", PROMOTE)
    champ_digest, champ_metric, champ_value = _validation(client, name, champion)
    if (digest, metric) != (champ_digest, champ_metric):
        raise RecsysError(
            f"{name} version {version} was validated on other data or another metric than champion version "
            f"{champion} ({metric} on {digest[:12]} vs {champ_metric} on {champ_digest[:12]}); they cannot be "
            "compared. Retrain on the same data, or use --force"
        )
    lift, low, high, n_users = _paired_lift(client, name, version, champion)
    verdict = (f"{name} version {version} vs champion version {champion}: {metric} {value:.4f} vs {champ_value:.4f}, "
               f"paired lift {lift:+.4f} (95% CI {low:+.4f} to {high:+.4f}) on the same {n_users} validation users")
    if low <= 0:
        raise RecsysError(f"refused: {verdict}; the interval does not clear zero, so the gap may be noise "
                          "(use --force to override)")
    return _move(client, name, version, reason or verdict, PROMOTE)


def _per_user(client: MlflowClient, name: str, version: str):
    """The version's per-user validation scores (polars DataFrame user_id, ndcg); RecsysError if absent."""
    import mlflow
    import polars as pl

    uri = client.get_model_version(name, version).tags.get(PER_USER_TAG)
    if not uri:
        raise RecsysError(f"{name} version {version} has no per-user validation scores (tag {PER_USER_TAG}; it was "
                          "registered before the paired gate existed), so no paired interval can be computed; "
                          "compare the versions yourself and use --force")
    try:
        return pl.read_parquet(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError) as exc:
        raise RecsysError(f"{name} version {version}: cannot read its per-user validation scores at {uri}: "
                          f"{str(exc)[:200]}; use --force to promote without the paired gate") from None


def _paired_lift(client: MlflowClient, name: str, version: str, champion: str) -> tuple[float, float, float, int]:
    """Mean per-user nDCG difference (version - champion) over the shared validation users and its
    paired bootstrap 95% interval (seed 0: the same verdict every time it is asked)."""
    from training.evaluate import paired_lift

    new, old = _per_user(client, name, version), _per_user(client, name, champion)
    paired = new.join(old, on="user_id", how="inner", suffix="_champion")
    if paired.height != new.height or paired.height != old.height or paired.height == 0:
        raise RecsysError(f"{name} versions {version} and {champion} were validated on different users "
                          f"({new.height} and {old.height}, {paired.height} shared); use --force")
    lift, low, high = paired_lift(paired["ndcg"].to_numpy(), paired["ndcg_champion"].to_numpy(), seed=0,
                                  level=GATE_LEVEL)
    return lift, low, high, paired.height


def champion_stack(history: list[dict]) -> list[str]:
    """Replay the history: each promotion pushes its version, each rollback pops one.

    The kind of a move is its ``kind`` field. Entries written before that field existed have
    none; for them the old rule still applies (a reason starting with "rollback" was a rollback:
    that is how those entries were written and replayed), so existing histories replay as before.
    """
    stack: list[str] = []
    if history and history[0]["from"] not in (None, "None"):
        stack.append(str(history[0]["from"]))  # the champion before history was kept
    for move in history:
        kind = move.get("kind") or (ROLLBACK if str(move.get("reason", "")).startswith("rollback") else PROMOTE)
        if kind == ROLLBACK and stack:
            stack.pop()
        else:
            stack.append(str(move["to"]))
    return stack


def rollback(name: str) -> AliasMove:
    """Put ``champion`` back on the previous champion (repeatable: each call goes one further back)."""
    client = MlflowClient()
    _registered_model(client, name)
    stack = champion_stack(history(client, name))
    if len(stack) < 2:
        raise RecsysError(f"{name} has no previous champion to roll back to")
    return _move(client, name, stack[-2], f"rollback from version {stack[-1]}", ROLLBACK)
