"""Model registry: gated promotion of the ``champion`` alias, rollback, and its history.

A version may become champion only if it beats the current champion on the same validation
data (same ``validation.digest`` tag) and the same metric, unless forced. The validation data
is cut from the training window (the held-out label users; see ``training/variants.py``); test
metrics are stored as ``test.*`` tags for reading and never compared here. Every move is
recorded: on the version (``promoted_at``, ``promoted_from``, ``promotion_reason``) and in
the registered model's ``champion_history`` tag (a JSON list), which ``rollback`` walks back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recsys.errors import RecsysError

CHAMPION = "champion"
HISTORY_TAG = "champion_history"
METRIC_TAG = "validation.metric"
VALUE_TAG = "validation.value"
DIGEST_TAG = "validation.digest"


@dataclass(frozen=True)
class AliasMove:
    name: str
    from_version: str | None
    to_version: str
    reason: str


def current_champion(name: str, client: MlflowClient | None = None) -> str | None:
    client = client or MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def _history(client: MlflowClient, name: str) -> list[dict]:
    tags = client.get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def _move(client: MlflowClient, name: str, to_version: str, reason: str) -> AliasMove:
    from_version = current_champion(name, client)
    client.set_registered_model_alias(name, CHAMPION, to_version)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    history = _history(client, name) + [{"time": now, "from": from_version, "to": to_version, "reason": reason}]
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    for key, value in (("promoted_at", now), ("promoted_from", str(from_version)), ("promotion_reason", reason)):
        client.set_model_version_tag(name, to_version, key, value)
    return AliasMove(name=name, from_version=from_version, to_version=to_version, reason=reason)


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


def promote(name: str, version: str | int, *, force: bool = False, reason: str = "") -> AliasMove:
    """Move ``champion`` to ``version`` if it beats the current champion (or ``force``)."""
    client = MlflowClient()
    version = str(version)
    champion = current_champion(name, client)
    if champion == version:
        raise RecsysError(f"{name} version {version} is already the champion")
    if force:
        return _move(client, name, version, f"forced: {reason or 'no reason given'}")
    digest, metric, value = _validation(client, name, version)
    if champion is None:
        return _move(client, name, version, reason or f"first champion ({metric} {value:.4f})")
    champ_digest, champ_metric, champ_value = _validation(client, name, champion)
    if (digest, metric) != (champ_digest, champ_metric):
        raise RecsysError(
            f"{name} version {version} was validated on other data or another metric than champion version "
            f"{champion} ({metric} on {digest[:12]} vs {champ_metric} on {champ_digest[:12]}); they cannot be "
            "compared. Retrain on the same data, or use --force"
        )
    if value <= champ_value:
        raise RecsysError(
            f"refused: {name} version {version} has {metric} {value:.4f}, not better than champion version "
            f"{champion} with {champ_value:.4f} on the same validation data (use --force to override)"
        )
    return _move(client, name, version, reason or f"{metric} {champ_value:.4f} -> {value:.4f}")


def champion_stack(history: list[dict]) -> list[str]:
    """Replay the history: each promotion pushes its version, each rollback pops one."""
    stack: list[str] = []
    if history and history[0]["from"] not in (None, "None"):
        stack.append(str(history[0]["from"]))  # the champion before history was kept
    for move in history:
        if move["reason"].startswith("rollback") and stack:
            stack.pop()
        else:
            stack.append(str(move["to"]))
    return stack


def rollback(name: str) -> AliasMove:
    """Put ``champion`` back on the previous champion (repeatable: each call goes one further back)."""
    client = MlflowClient()
    stack = champion_stack(_history(client, name))
    if len(stack) < 2:
        raise RecsysError(f"{name} has no previous champion to roll back to")
    return _move(client, name, stack[-2], f"rollback from version {stack[-1]}")
