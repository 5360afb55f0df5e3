"""Resolving a model URI once, to the exact version it names now, with a clear error when it names nothing.

``models:/NAME@ALIAS`` moves when someone promotes; a batch job that resumes or a server that
starts must know which version it really uses. ``resolve_model`` pins it: name, version, run id
and ``pinned_uri`` (``models:/NAME/VERSION``), which loads that version whatever the alias does
later. ``runs:/`` URIs and local folders pass through with what can be known about them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import RecsysError

_REGISTRY = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # as the user wrote it
    pinned_uri: str  # loads exactly this model, whatever aliases do later
    name: str | None = None
    version: str | None = None
    run_id: str | None = None

    def describe(self) -> str:
        if self.version is None:
            return self.pinned_uri
        return f"{self.name} version {self.version} (run {self.run_id})"


def resolve_model(uri: str) -> ResolvedModel:
    """Pin ``uri`` to one model; RecsysError saying what exists when it names nothing.

    Needs the tracking/registry URI configured (``training.tracking.configure_tracking``).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if uri.startswith("models:/"):
        match = _REGISTRY.match(uri)
        if not match:
            raise RecsysError(f"model URI {uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS "
                              "(e.g. models:/recsys-demo@champion)")
        name, alias, version = match["name"], match["alias"], match["version"]
        client = MlflowClient()
        try:
            client.get_registered_model(name)
        except MlflowException:
            names = sorted(m.name for m in client.search_registered_models())
            raise RecsysError(f"model URI {uri!r}: no registered model named {name!r}; registered models: "
                              f"{', '.join(names) or 'none (run recsys train first)'}") from None
        try:
            if alias is not None:
                found = client.get_model_version_by_alias(name, alias)
            elif version.isdigit():
                found = client.get_model_version(name, version)
            else:
                raise RecsysError(f"model URI {uri!r}: version {version!r} is not a number; use "
                                  f"models:/{name}/VERSION or models:/{name}@ALIAS")
        except MlflowException:
            aliases = sorted(client.get_registered_model(name).aliases)
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            what = f"alias {alias!r}" if alias is not None else f"version {version}"
            raise RecsysError(f"model URI {uri!r}: {name} has no {what}; its aliases: {', '.join(aliases) or 'none'}; "
                              f"its versions: {', '.join(map(str, versions)) or 'none'}") from None
        return ResolvedModel(uri=uri, pinned_uri=f"models:/{name}/{found.version}", name=name,
                             version=str(found.version), run_id=found.run_id)
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].split("/", 1)[0]
        return ResolvedModel(uri=uri, pinned_uri=uri, run_id=run_id or None)
    if "://" not in uri and not Path(uri).is_dir():
        raise RecsysError(f"model {uri!r} is neither a model URI (models:/NAME@ALIAS, models:/NAME/VERSION, "
                          "runs:/RUN_ID/model) nor a local model folder")
    return ResolvedModel(uri=uri, pinned_uri=uri)


def local_model_folder(resolved: ResolvedModel) -> Path:
    """A local folder holding ``resolved``'s MLmodel: the artifact folder itself when the store is
    local (no copy), else a download. RecsysError when the files are missing."""
    import tempfile
    from urllib.parse import urlparse

    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        if resolved.version is not None:
            location = MlflowClient().get_model_version_download_uri(resolved.name, resolved.version)
        else:
            location = resolved.pinned_uri
        parsed = urlparse(location)
        if parsed.scheme in ("", "file"):
            folder = Path(parsed.path if parsed.scheme else location)
        else:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=location,
                                                              dst_path=tempfile.mkdtemp(prefix="recsys-model-")))
    except (MlflowException, OSError) as exc:
        raise RecsysError(f"cannot fetch model {resolved.uri!r} ({resolved.describe()}): {str(exc)[:300]}") from None
    if not (folder / "MLmodel").is_file():
        raise RecsysError(f"model {resolved.uri!r} ({resolved.describe()}): no MLmodel file in {folder}; the "
                          "folder is not an MLflow model or its files were removed")
    return folder


def load_pyfunc(resolved: ResolvedModel):
    """The pyfunc model of ``resolved`` (its pinned URI); RecsysError when it cannot be loaded."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(resolved.pinned_uri)
    except (MlflowException, OSError) as exc:
        raise RecsysError(f"cannot load model {resolved.uri!r} ({resolved.describe()}): {str(exc)[:300]}") from None
