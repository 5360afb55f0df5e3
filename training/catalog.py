"""`recsys add-items`: new items with text join a registered model as a new version.

The ranker is not retrained: new items get vectors from the model's own fine-tuned encoder
and the behaviour features of an unseen item (see ``features.catalog_update``). The new
version keeps the parent's validation tags (same ranker, same test data) and records where
it came from; ``promote=True`` moves ``champion`` to it, recorded as a catalog update.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from features.bundle import RankingBundle
from features.catalog_update import add_items
from features.text_encoder import TextEncoder, item_texts
from recsys.dataset import read_items_file
from recsys.errors import RecsysError
from training import model_card, registry, tracking

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class CatalogUpdate:
    name: str
    parent_version: str
    version: str
    items_added: int
    promoted: bool
    note: str = ""  # a warning for the user: the shipped ranker cannot rank the new items from their text


def text_blind_note(name: str, version: str, shipped_variant: str) -> str:
    """The warning for adding items to a version whose shipped ranker reads no text ("" otherwise)."""
    if shipped_variant != "ranker_no_text":
        return ""
    return (f"{name} version {version} ships ranker_no_text, which reads no text: it takes no text candidates, so "
            "the new items, which have no behaviour, will rarely if ever be recommended. For a catalog that gains "
            "items, train with {\"ranker\": {\"ship\": \"text\"}} (the better text variant on validation); "
            "`recsys promote` compares it with the champion on validation, and --force overrides that")


def resolve_version(model_uri: str) -> tuple[str, str]:
    """(name, version) of a registered-model URI ``models:/NAME/V`` or ``models:/NAME@ALIAS``."""
    match = _REGISTERED.match(model_uri)
    if not match:
        raise RecsysError(f"{model_uri!r} is not a registered model URI; use models:/NAME/VERSION or "
                          "models:/NAME@ALIAS (add-items registers the result as a new version of NAME)")
    name = match["name"]
    if match["version"]:
        return name, match["version"]
    try:
        return name, str(MlflowClient().get_model_version_by_alias(name, match["alias"]).version)
    except mlflow.exceptions.MlflowException as exc:
        raise RecsysError(f"model {name!r} has no alias {match['alias']!r}") from exc


def add_items_to_model(model_uri: str, items_file: str | Path, *, promote: bool = False,
                       progress: bool = True) -> CatalogUpdate:
    name, parent = resolve_version(model_uri)
    client = MlflowClient()
    bundle: RankingBundle = mlflow.pyfunc.load_model(f"models:/{name}/{parent}").unwrap_python_model().bundle
    if bundle.encoder_dir is None:
        raise RecsysError(f"{name} version {parent} has no text encoder inside; retrain it to add items")
    new_items = read_items_file(items_file)
    encoder = TextEncoder(bundle.encoder_dir, max_length=bundle.config.text.max_length)
    vectors = encoder.encode(item_texts(new_items), batch_size=bundle.config.text.encode_batch_size,
                             progress=progress)
    updated = replace(bundle, state=add_items(bundle.state, new_items, vectors))
    parent_info = client.get_model_version(name, parent)
    note = text_blind_note(name, parent, parent_info.tags.get("shipped_variant", ""))
    experiment_id = client.get_run(parent_info.run_id).info.experiment_id if parent_info.run_id else None
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"add-items-{name}-v{parent}",
                          tags={**tracking.environment_tags(), "role": "catalog-update"}), \
            tempfile.TemporaryDirectory(prefix="recsys-add-items-") as tmp:
        mlflow.log_params({"parent_model": f"{name}/{parent}", "items_added": new_items.height,
                           "n_items": updated.state.n_items})
        bundle_dir = updated.save(Path(tmp) / "bundle")
        info = tracking.log_pyfunc_model(bundle_dir, name, updated.state.users.ids.head(2).to_list(),
                                         new_items["item_id"].head(5).to_list(), updated.config.k)
    version = str(info.registered_model_version)
    for key, value in parent_info.tags.items():
        if key.startswith(("test.", "validation.", "shipped_variant")):
            client.set_model_version_tag(name, version, key, value)
    client.set_model_version_tag(name, version, "catalog_update.parent_version", parent)
    # The validation and test tags above were measured on the parent, not on this version.
    client.set_model_version_tag(name, version, "metrics_inherited_from_version", parent)
    client.set_model_version_tag(name, version, "catalog_update.items_added", str(new_items.height))
    parent_card = (parent_info.description or "").split(model_card.HISTORY_HEADING, 1)[0]
    parent_card = parent_card.removeprefix(f"# {name} version {parent}").strip()
    scored = "new items get text vectors, but this ranker reads no text" if note else \
        "new items scored from their text"
    card = (f"# {name} version {version}\n\nVersion {parent} with {new_items.height} new item(s) added by `recsys "
            f"add-items` (ranker unchanged; {scored}). The figures below were measured on "
            f"version {parent}.\n\n{parent_card}")
    client.update_model_version(name, version, description=model_card.with_history(
        card, registry.history(client, name), version, name))
    if promote:
        registry.promote(name, version, force=True, kind=registry.CATALOG_UPDATE,
                         reason=f"catalog update: +{new_items.height} items on version {parent}")
    return CatalogUpdate(name=name, parent_version=parent, version=version, items_added=new_items.height,
                         promoted=promote, note=note)
