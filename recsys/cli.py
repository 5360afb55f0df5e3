"""The ``recsys`` command line.

The only module of ``recsys`` that reaches into ``training`` and ``serving``, and only inside
the command handlers (lazy imports), so ``import recsys`` stays light and one-directional.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from recsys.allocator import configure_polars_allocator

configure_polars_allocator()  # before any import of polars: the allocator is set up once, at import

from recsys import logs  # noqa: E402
from recsys.config import SPLITS, PipelineConfig  # noqa: E402
from recsys.errors import RecsysError  # noqa: E402

log = logging.getLogger("recsys")
DEMO_MODEL_NAME = "recsys-demo"


def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_data(spec: str):
    """``demo`` -> the generated demo catalog; anything else -> a canonical data folder."""
    if spec == "demo":
        from recsys.demo_data import generate_demo

        return generate_demo()
    from recsys.dataset import load_folder

    return load_folder(spec)


def format_metrics_table(metrics: dict[str, dict[str, float]], k: int, *, shipped: str = "",
                         validation: dict[str, dict[str, float]] | None = None, reason: str = "") -> str:
    """The test table (the shipped variant is the row ``ranker``), with a validation nDCG column
    when given and a line saying which variant shipped and why."""
    columns = [f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"map@{k}", "mrr", "candidate_recall", "imp_auc",
               "imp_ndcg@10"]
    if validation:
        metrics = {name: {**values, f"val ndcg@{k}": validation.get(name, {}).get(f"ndcg@{k}", float("nan"))}
                   for name, values in metrics.items()}
        columns.insert(0, f"val ndcg@{k}")
    if shipped:
        metrics = {(f"ranker* ({shipped})" if name == "ranker" else name): values for name, values in metrics.items()}
    lines = ["test split (reported only; choices were made on validation):"] if validation else []
    lines += _table(metrics, columns, f"ndcg@{k}")
    if reason:
        lines += [f"* shipped. {reason}"]
    cold = [f"cold_items/ndcg@{k}", f"cold_items/recall@{k}"]
    if any(cold[1] in m for m in metrics.values()):
        lines += ["", "cold-items protocol (each user ranks the held-out items only):"]
        lines += _table({n: m for n, m in metrics.items() if cold[1] in m}, cold, cold[1])
    ranker = metrics.get(f"ranker* ({shipped})" if shipped else "ranker", {})
    lift = f"lift_vs_best_baseline/ndcg@{k}"
    if lift in ranker:
        lines += ["", f"ranker nDCG@{k} 95% CI {ranker[f'ndcg@{k}_ci_low']:.4f}-{ranker[f'ndcg@{k}_ci_high']:.4f}; "
                  f"paired lift over the best baseline {ranker[lift]:+.4f} "
                  f"(95% CI {ranker[lift + '_ci_low']:+.4f} to {ranker[lift + '_ci_high']:+.4f})"]
    return "\n".join(lines)


def _table(metrics: dict[str, dict[str, float]], columns: list[str], sort_key: str) -> list[str]:
    columns = [c for c in columns if any(c in m for m in metrics.values())]
    metrics = {name: values for name, values in metrics.items() if any(c in values for c in columns)}
    width = max(len(n) for n in metrics) + 2
    lines = ["model".ljust(width) + "".join(c.rjust(17) for c in columns)]
    for name, values in sorted(metrics.items(), key=lambda kv: -kv[1].get(sort_key, 0.0)):
        cells = "".join((f"{values[c]:.4f}" if c in values else "-").rjust(17) for c in columns)
        lines.append(name.ljust(width) + cells)
    return lines


def load_config(path: str | None, **overrides) -> PipelineConfig:
    """Defaults, then a JSON file of PipelineConfig fields (sections nested), then CLI flags."""
    data: dict = {}
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RecsysError(f"--config {path}: cannot read a JSON object: {exc}") from exc
    data.update(overrides)
    try:
        return PipelineConfig.from_dict(data)
    except TypeError as exc:  # an unknown key: say which
        raise RecsysError(f"--config {path}: {exc}; see recsys/config.py for the fields") from exc


def warn_if_order_only(data: str, split: str) -> bool:
    """Print a warning when ``data`` was imported from an order-only layout (synthetic times) and
    ``split`` is not leave-last-out; True when it warned."""
    report = Path(data) / "import.json"
    try:
        order_only = report.is_file() and json.loads(report.read_text()).get("order_only") is True
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
    if order_only and split != "leave-last-out":
        print(f"warning: {data} was imported from a layout that gives only the order of each user's items "
              f"(import.json: order_only); its times are synthetic, so the {split} split cuts them arbitrarily. "
              "Use --split leave-last-out.", file=sys.stderr)
        return True
    return False


def cmd_train(args: argparse.Namespace) -> dict:
    from recsys.stage_timer import collect, stage
    from training.pipeline import train

    # Only flags given on the command line override the config file (and its defaults).
    overrides = {key: value for key, value in (("split", args.split), ("k", args.k), ("seed", args.seed))
                 if value is not None}
    if args.cold_items is not None:
        overrides["cold_item_fraction"] = args.cold_items
    if args.test_fraction is not None:
        overrides["test_fraction"] = args.test_fraction
    config = load_config(args.config, **overrides)
    warn_if_order_only(args.data, config.split)
    with collect():  # the load joins the run's stage times (time/load_s)
        with stage("load"):
            dataset = load_data(args.data)
        for reason, count in dataset.skipped.items():
            if count:
                print(f"skipped {count} row(s): {reason.replace('_', ' ')}")
        experiment = args.experiment or f"recsys-{dataset.source}"
        register = None if args.no_register else (args.register or f"recsys-{dataset.source}")
        result = train(dataset, config, experiment=experiment, register_name=register, progress=not args.quiet,
                       release_events=True)  # nothing here reads the tables again: free them after the split
    print(format_metrics_table(result.metrics, config.k, shipped=result.shipped_variant,
                               validation=result.validation_metrics, reason=result.shipped_reason))
    import mlflow

    print(f"\nMLflow run {result.run_id} in experiment {experiment!r} (store {mlflow.get_tracking_uri()}); "
          f"model: {result.model_uri}")
    if result.registered_name and result.became_champion:
        print(f"version {result.version} is now the champion of {result.registered_name} (it had none)")
    elif result.registered_name:
        print(f"version {result.version} is the challenger; the champion stays version {result.champion_version}. "
              f"To promote it (only if it beats the champion on the same validation data):\n"
              f"  {_recsys_command()} promote --name {result.registered_name} --version {result.version}")
    if args.metrics_out:
        Path(args.metrics_out).write_text(json.dumps(result.metrics_document(), indent=2, sort_keys=True))
    return {"result": result, "experiment": experiment}


def cmd_tune(args: argparse.Namespace) -> None:
    from training.tune_space import STAGE_NAMES
    from training.tuning import summary_json, tune

    overrides = {key: value for key, value in (("split", args.split), ("k", args.k), ("seed", args.seed),
                                               ("test_fraction", args.test_fraction),
                                               ("cold_item_fraction", args.cold_items)) if value is not None}
    config = load_config(args.config, **overrides)
    warn_if_order_only(args.data, config.split)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip()) if args.stages else STAGE_NAMES
    dataset = load_data(args.data)
    for reason, count in dataset.skipped.items():
        if count:
            print(f"skipped {count} row(s): {reason.replace('_', ' ')}")
    experiment = args.experiment or f"recsys-tune-{dataset.source}"
    out = Path(args.out)
    result = tune(dataset, config, experiment=experiment, out=out, stages=stages, budget_minutes=args.budget_minutes,
                  max_trials=args.trials, progress=not args.quiet)
    import mlflow

    print(result.summary())
    print(f"\nbest config: {out} ({result.seconds / 60:.1f} min); MLflow run {result.run_id} in experiment "
          f"{experiment!r} (store {mlflow.get_tracking_uri()}), one nested run per trial.\n"
          f"Next: {_recsys_command()} train --data {args.data} --config {out}")
    if args.summary_out:
        Path(args.summary_out).write_text(json.dumps(summary_json(result), indent=2, sort_keys=True))


def _recsys_command() -> str:
    """The `recsys` executable as a path that works from any folder."""
    return str(Path(sys.executable).parent / "recsys")


def _load_bundle(model_uri: str):
    """(bundle, ResolvedModel): the model ``model_uri`` names now, pinned to its version."""
    from serving.model_uri import load_pyfunc, resolve_model
    from training.tracking import configure_tracking

    configure_tracking(create=False)
    resolved = resolve_model(model_uri)
    return load_pyfunc(resolved).unwrap_python_model().bundle, resolved


def _check_rank_output(out: Path, *, overwrite: bool, folder: bool = False) -> None:
    """Refuse, before any work, an --out that would lose data or cannot be written (folder: the
    Spark engine's output is a folder of part files)."""
    if not folder and out.is_dir():
        raise RecsysError(f"--out {out} is a folder; give a file name such as {out / 'rankings.parquet'}")
    if folder and out.is_file():
        raise RecsysError(f"--out {out} is a file; the Spark engine writes a folder of Parquet parts: give a "
                          "folder name")
    if out.exists() and not overwrite:
        raise RecsysError(f"--out {out} already exists; pass --overwrite to replace it, or choose another name")
    if not folder and out.suffix != ".parquet":
        raise RecsysError(f"--out {out}: the local engine writes one Parquet file; name it *.parquet")


def cmd_rank(args: argparse.Namespace) -> None:
    if args.engine == "spark":
        return _rank_on_spark(args)
    # The job's polars work per chunk is small; polars' idle pool spinning against LightGBM's
    # OpenMP threads on a small machine cost more than they give (benchmarks/rank_throughput.py).
    # Effective when polars is not imported yet (a plain `recsys rank`).
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    from features.rank_workers import rank_workers
    from serving.batch import rank_users, read_users_file

    _check_rank_output(Path(args.out), overwrite=args.overwrite)
    rank_workers()  # a bad RECSYS_RANK_WORKERS is refused before the model loads
    users = read_users_file(args.users) if args.users else None
    bundle, resolved = _load_bundle(args.model)
    if users is None:
        users = bundle.state.users.ids.to_list()
    report = rank_users(bundle, users, args.out, k=args.k, chunk_size=args.chunk_size, resume=args.resume,
                        model=resolved, progress=not args.quiet)
    resumed = f", {report.n_chunks_resumed} chunks kept from the interrupted run" if report.n_chunks_resumed else ""
    print(f"ranked {report.n_users} users with {resolved.describe()} ({report.n_unknown_users} unknown -> cold start, "
          f"{report.n_duplicates_removed} duplicates removed{resumed}) into {args.out}: {report.n_rows} rows, "
          f"{report.users_per_second:.0f} users/s")


def _rank_on_spark(args: argparse.Namespace) -> None:
    if args.resume:
        raise RecsysError("--resume is for the local engine; Spark retries failed tasks itself, and an interrupted "
                          "Spark job leaves no output: run it again")
    try:
        from serving.spark_batch import rank_users_spark
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        raise RecsysError("the Spark engine needs pyspark: pip install '.[spark]' (and Java 17)") from exc
    from serving.batch import check_users_file
    from serving.model_uri import resolve_model
    from training.tracking import configure_tracking

    _check_rank_output(Path(args.out), overwrite=args.overwrite, folder=True)
    if args.users:
        check_users_file(args.users)  # the same refusals as the local engine, before Spark starts
    configure_tracking(create=False)
    resolved = resolve_model(args.model)
    report = rank_users_spark(resolved.pinned_uri, args.out, users_path=args.users, k=args.k, master=args.spark_master,
                              partitions=args.partitions, chunk_size=args.chunk_size, progress=not args.quiet)
    print(f"ranked {report.n_users} users on Spark {args.spark_master} ({report.n_unknown_users} unknown -> cold "
          f"start, {report.n_duplicates_removed} duplicates removed) into {args.out}/: {report.n_rows} rows, "
          f"{report.users_per_second:.1f} users/s")


def serve_command(port: int, workers: int = 1, host: str = "127.0.0.1") -> list[str]:
    """uvicorn with the guarded MLflow scoring app (serving/http_app.py); the model comes from
    ``RECSYS_SERVE_MODEL`` in the environment (``serve_env``)."""
    return [sys.executable, "-m", "uvicorn", "--factory", "serving.http_app:create_app", "--host", host,
            "--port", str(port), "--workers", str(workers), "--timeout-graceful-shutdown", "10",
            "--log-config", logs.uvicorn_log_config()]


def serve_env(tracking_uri: str, model_uri: str) -> dict[str, str]:
    """Environment of the model server.

    A request ranks one or a few users: thread pools (polars, BLAS, OpenMP) only add fork/join
    and spinning on a small machine, and concurrent requests are already spread by the server,
    so each pool is pinned to one thread unless the caller set it.
    """
    from serving.http_app import MODEL_ENV

    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, **{MODEL_ENV: model_uri})
    for name in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    return env


def cmd_serve(args: argparse.Namespace) -> int:
    """Resolve the model (a bad URI fails here, exit 2), then become the server process: exec, not
    a child, so SIGTERM and Ctrl-C reach uvicorn directly and nothing is left behind on the port."""
    from serving.model_uri import local_model_folder, resolve_model
    from training.tracking import configure_tracking

    tracking_uri = configure_tracking(create=False)
    resolved = resolve_model(args.model)
    folder = local_model_folder(resolved)  # workers load this folder: no registry lookup per worker
    print(f"serving {args.model} = {resolved.describe()} on http://{args.host}:{args.port}/invocations "
          "(Ctrl-C or SIGTERM stops)", flush=True)
    command = serve_command(args.port, args.workers, args.host)
    os.execve(command[0], command, serve_env(tracking_uri, str(folder)))


def cmd_demo(args: argparse.Namespace) -> None:
    from training.tracking import configure_tracking

    start = time.perf_counter()
    out_dir = Path("demo_out")
    out_dir.mkdir(exist_ok=True)
    # Both steps go through the real parser, so they always get every option's default.
    quiet = ["-q"] if args.quiet else []
    train_args = build_parser().parse_args([*quiet, "train", "--data", "demo", "--split", "temporal", "--k", "10",
                                            "--experiment", "recsys-demo", "--register", DEMO_MODEL_NAME,
                                            "--seed", str(args.seed), "--metrics-out", str(out_dir / "metrics.json")])
    result = cmd_train(train_args)["result"]
    # The demo replaces its own earlier output (a user's `recsys rank` never does without --overwrite).
    rank_args = build_parser().parse_args([*quiet, "rank", "--model", result.model_uri, "--overwrite",
                                           "--out", str(out_dir / "rankings.parquet"), "--k", "10"])
    cmd_rank(rank_args)
    uri = configure_tracking()
    bin_dir = Path(sys.executable).parent  # absolute: the hints work from any folder
    print(f"\ndemo finished in {time.perf_counter() - start:.0f}s. Next:")
    print(f"  open the MLflow UI:   {bin_dir / 'mlflow'} ui --backend-store-uri {uri} -h 127.0.0.1 -p 5000")
    print(f"  serve this model:     {bin_dir / 'recsys'} serve --model {result.model_uri} --port 5001")
    print("  query it:             curl -s -X POST http://127.0.0.1:5001/invocations "
          "-H 'Content-Type: application/json' -d '{\"dataframe_records\": [{\"user_id\": \"U00001\"}]}'")


def cmd_promote(args: argparse.Namespace) -> None:
    from training import registry
    from training.tracking import configure_tracking

    configure_tracking(create=False)
    move = registry.promote(args.name, args.version, force=args.force, reason=args.reason or "")
    print(f"{move.name}: champion {move.from_version} -> {move.to_version} ({move.reason})")


def cmd_rollback(args: argparse.Namespace) -> None:
    from training import registry
    from training.tracking import configure_tracking

    configure_tracking(create=False)
    move = registry.rollback(args.name)
    print(f"{move.name}: champion {move.from_version} -> {move.to_version} ({move.reason})")


def cmd_runs(args: argparse.Namespace) -> None:
    from training.runs_table import runs_table
    from training.tracking import configure_tracking

    configure_tracking(create=False)
    print(runs_table(args.experiment, limit=args.limit, k=args.k, color=sys.stdout.isatty()))


def cmd_add_items(args: argparse.Namespace) -> None:
    from training.catalog import add_items_to_model
    from training.tracking import configure_tracking

    configure_tracking(create=False)
    update = add_items_to_model(args.model, args.items_file, promote=args.promote, progress=not args.quiet)
    print(f"{update.name} version {update.version}: version {update.parent_version} + {update.items_added} "
          f"new item(s)" + (" (now champion)" if update.promoted else f"; serve models:/{update.name}/{update.version}"
                            " or promote it with --promote"))
    if update.note:
        print(f"note: {update.note}")


def cmd_import(args: argparse.Namespace) -> None:
    from recsys.importers.delimited import check_destination, write_canonical_folder

    check_destination(Path(args.dst), overwrite=args.overwrite)
    if args.format == "movielens":
        from recsys.importers.movielens import import_movielens

        tables, report = import_movielens(Path(args.src), descriptions=[Path(p) for p in args.descriptions],
                                          encoding=args.encoding, text_column=args.text_column)
    elif args.format == "mind":
        from recsys.importers.mind import import_mind

        tables, report = import_mind(Path(args.src), encoding=args.encoding or "utf-8")
    elif args.format == "recbole":
        from recsys.importers.recbole import import_recbole

        tables, report = import_recbole(Path(args.src))
    else:
        from recsys.importers.sequences import import_sequences

        tables, report = import_sequences(Path(args.src))
    report["command"] = " ".join(["recsys", *sys.argv[1:]]) if sys.argv else ""
    write_canonical_folder(Path(args.dst), tables, report, overwrite=args.overwrite)
    counts = ", ".join(f"{t.height:,} {name}" for name, t in tables.items())
    print(f"imported {args.format} {args.src} -> {args.dst}: {counts}")
    for key, value in report.items():
        if key.endswith("without_news_row") and value:
            print(f"  {value:,} {key.replace('_', ' ')} (kept; loading skips and counts them)")
    for path, matched in report.get("descriptions", {}).items():
        print(f"  {path}: text for {matched['items_matched']:,} items, {matched['items_without_text']:,} without")
    if report.get("items_without_text_row"):
        print(f"  {report['items_without_text_row']:,} interacted item(s) have no text row (kept with empty text)")
    if report.get("order_only"):
        print("  only the order is known: timestamps are synthetic (one day per step); evaluate with "
              "--split leave-last-out")


def cmd_generate(args: argparse.Namespace) -> None:
    from recsys.demo_data import DemoSpec, generate_demo
    from recsys.importers.delimited import check_destination, write_canonical_folder

    try:
        spec = DemoSpec.scaled(args.scale, seed=args.seed)
    except ValueError as exc:
        raise RecsysError(f"--scale: {exc}") from None
    check_destination(Path(args.dst), overwrite=args.overwrite)
    data = generate_demo(spec, progress=True)
    tables = {"items": data.items, "interactions": data.interactions, "impressions": data.impressions}
    report = {"generator": "demo", "scale": args.scale, "seed": args.seed, "n_users": spec.n_users,
              "n_items": spec.n_items, **{f"n_{name}": t.height for name, t in tables.items()}}
    write_canonical_folder(Path(args.dst), tables, report, overwrite=args.overwrite)
    print(f"generated scale {args.scale} -> {args.dst}: {spec.n_users:,} users, {data.items.height:,} items, "
          f"{data.interactions.height:,} interactions, {data.impressions.height:,} impressions")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default (unless the help already says it, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or "default" in text or action.default in (None, False, argparse.SUPPRESS) \
                or isinstance(action, argparse._VersionAction | argparse._HelpAction):
            return text
        return f"{text} (default: %(default)s)"


def cmd_config_show(args: argparse.Namespace) -> None:
    from recsys.config import field_docs

    config = load_config(args.config)
    docs = field_docs()
    flat = config.flat()
    width = max(len(f"{k} = {json.dumps(v)}") for k, v in flat.items())
    print(f"# effective configuration: defaults{', then ' + args.config if args.config else ''}")
    for key, value in flat.items():
        line = f"{key} = {json.dumps(value)}"
        print(f"{line.ljust(width)}  # {docs[key]}" if docs.get(key) else line)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from recsys import __version__

    parser = argparse.ArgumentParser(prog="recsys", formatter_class=_HelpFormatter,
                                     description="Text-aware recommendation engine: train, rank, serve and compare "
                                                 "models tracked in MLflow. `recsys COMMAND -h` explains a command.")
    parser.add_argument("--version", action="version", version=f"recsys {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str = "", parent=sub) -> argparse.ArgumentParser:
        """A subcommand whose -h has a description and shows defaults, and that takes -q after its name."""
        text = description or help[0].upper() + help[1:] + "."
        command_parser = parent.add_parser(name, help=help, description=text, formatter_class=_HelpFormatter)
        command_parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                                    help="no progress bars")
        return command_parser

    demo = command("demo", help="train, register and batch-rank on the embedded demo catalog")
    demo.add_argument("--seed", type=int, default=42, help="seed of the training run")
    demo.set_defaults(handler=cmd_demo)

    tr = command("train", help="run the whole pipeline in one MLflow run")
    tr.add_argument("--data", required=True, help="a canonical data folder, or 'demo'")
    tr.add_argument("--split", choices=SPLITS, default=None,
                    help="evaluation protocol (default: the --config file's, else temporal)")
    tr.add_argument("--k", type=int, default=None, help="list length K (default: the --config file's, else 10)")
    tr.add_argument("--experiment", default=None, help="MLflow experiment (default: recsys-<data name>)")
    tr.add_argument("--register", default=None, metavar="NAME",
                    help="registered model name (default: recsys-<data name>); every run adds a version")
    tr.add_argument("--no-register", action="store_true", help="log the model to the run only")
    tr.add_argument("--metrics-out", default=None, metavar="FILE", help="write every model's metrics as JSON")
    tr.add_argument("--seed", type=int, default=None, help="default: the --config file's, else 42")
    tr.add_argument("--test-fraction", type=float, default=None, metavar="F",
                    help="temporal: share of the time span; stratified: share of each user's rows "
                         "(default 0.2; 0.25 for stratified)")
    tr.add_argument("--cold-items", type=float, default=None, metavar="FRACTION",
                    help="cold-items protocol: remove this seeded share of items from training entirely")
    tr.add_argument("--config", default=None, metavar="FILE", help="JSON with PipelineConfig fields to override")
    tr.set_defaults(handler=cmd_train)

    tn = command("tune", help="search the settings on validation data and write best_config.json",
                 description="Search the pipeline's settings with Optuna (seeded TPE, pruning), stage by stage: "
                             "ALS, BPR, EASE, the text model, the candidate counts, the ranker. Every trial is "
                             "scored on validation data cut from the training window (the test split is never "
                             "read) and is a nested MLflow run. Writes a complete config that "
                             "`recsys train --config` takes as it is.")
    tn.add_argument("--data", required=True, help="a canonical data folder, or 'demo'")
    tn.add_argument("--split", choices=SPLITS, default=None,
                    help="evaluation protocol (default: the --config file's, else temporal)")
    tn.add_argument("--k", type=int, default=None, help="list length K (default: the --config file's, else 10)")
    tn.add_argument("--seed", type=int, default=None, help="default: the --config file's, else 42")
    tn.add_argument("--test-fraction", type=float, default=None, metavar="F",
                    help="as for train: the share set aside (and never read) as test")
    tn.add_argument("--cold-items", type=float, default=None, metavar="FRACTION",
                    help="as for train: tune for the cold-items protocol (its variant choice favours text); "
                         "the written config keeps it")
    tn.add_argument("--config", default=None, metavar="FILE", help="settings to start from (default: the defaults)")
    tn.add_argument("--budget-minutes", type=float, default=30.0, metavar="M",
                    help="wall-clock budget, shared out among the stages")
    tn.add_argument("--trials", type=_positive_int, default=30, metavar="N", help="at most N trials per stage")
    tn.add_argument("--stages", default=None, metavar="LIST",
                    help="comma-separated subset of als,bpr,item_item,text,candidates,ranker (default: all)")
    tn.add_argument("--out", default="best_config.json", metavar="FILE", help="where the best config goes")
    tn.add_argument("--experiment", default=None, help="MLflow experiment (default: recsys-tune-<data name>)")
    tn.add_argument("--summary-out", default=None, metavar="FILE", help="write each stage's result as JSON")
    tn.set_defaults(handler=cmd_tune)

    rk = command("rank", help="offline batch ranking into Parquet")
    rk.add_argument("--model", required=True, metavar="MODEL_URI", help="e.g. models:/recsys-demo@champion")
    rk.add_argument("--out", required=True, metavar="OUT", help="FILE.parquet (local) or a folder (spark)")
    rk.add_argument("--users", default=None, metavar="FILE", help="Parquet/CSV with user_id (default: all known)")
    rk.add_argument("--k", type=int, default=10, help="items per user")
    rk.add_argument("--chunk-size", type=_positive_int, default=2048,
                    help="users per chunk (memory is flat in users)")
    rk.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    rk.add_argument("--resume", action="store_true",
                    help="keep the finished chunks of an interrupted run with the same inputs")
    rk.add_argument("--engine", choices=("local", "spark"), default="local",
                    help="local: this process, one Parquet file; spark: mapInPandas on Spark, a Parquet folder "
                         "(needs pip install '.[spark]')")
    rk.add_argument("--spark-master", default="local[2]", help="Spark master URL for --engine spark")
    rk.add_argument("--partitions", type=int, default=None, help="Spark tasks (default: 2 per core)")
    rk.set_defaults(handler=cmd_rank)

    sv = command("serve", help="serve a model over HTTP: MLflow's scoring protocol behind the request guard")
    sv.add_argument("--model", required=True, metavar="MODEL_URI")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (0.0.0.0: every interface; put it behind your own gateway)")
    sv.add_argument("--port", type=int, default=5001, help="TCP port")
    sv.add_argument("--workers", type=_positive_int, default=1, help="uvicorn worker processes (each loads the model)")
    sv.set_defaults(handler=cmd_serve)
    pr = command("promote", help="move the champion alias to a version that beats the champion")
    pr.add_argument("--name", required=True, help="registered model name")
    pr.add_argument("--version", required=True)
    pr.add_argument("--force", action="store_true", help="promote even if it does not beat the champion (recorded)")
    pr.add_argument("--reason", default=None, help="recorded with the move")
    pr.set_defaults(handler=cmd_promote)

    rb = command("rollback", help="put the champion alias back on the previous champion")
    rb.add_argument("--name", required=True)
    rb.set_defaults(handler=cmd_rollback)

    ad = command("add-items", help="add new items with text to a registered model as a new version")
    ad.add_argument("--model", required=True, metavar="MODEL_URI", help="models:/NAME/VERSION or models:/NAME@ALIAS")
    ad.add_argument("items_file", help="Parquet/CSV with item_id, title, description, category")
    ad.add_argument("--promote", action="store_true", help="move champion to the new version (recorded)")
    ad.set_defaults(handler=cmd_add_items)

    im = command("import", help="convert a public dataset layout into a canonical data folder")
    im.add_argument("format", choices=("movielens", "mind", "recbole", "sequences"))
    im.add_argument("src", help="MovieLens folder (u.data/u.item or ratings.csv/movies.csv), MIND folder, RecBole "
                                "atomic files (X.inter + X.item, or X.{train,valid,test}.inter + X.text/X.item) or "
                                "JSON sequences (X.inter.json + X.item.json)")
    im.add_argument("dst", help="canonical folder to create (items/interactions[/impressions].parquet)")
    im.add_argument("--descriptions", action="append", default=[], metavar="FILE",
                    help="movielens: CSV with an id or title column and a text column (repeatable)")
    im.add_argument("--text-column", default=None, help="movielens: the description files' text column")
    im.add_argument("--encoding", default=None, help="text encoding (default: latin-1 for u.item, else utf-8)")
    im.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    im.set_defaults(handler=cmd_import)

    ge = command("generate", help="write the demo world at a scale (1.0 = 100k users, 20k items, "
                                         "2M interactions) as a canonical data folder")
    ge.add_argument("dst")
    ge.add_argument("--scale", type=float, default=1.0,
                    help="1.0 = 100,000 users, 20,000 items, ~2M clicks; more than 0, at most 10")
    ge.add_argument("--seed", type=int, default=7)
    ge.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    ge.set_defaults(handler=cmd_generate)

    ru = command("runs", help="compare recent runs side by side")
    ru.add_argument("--experiment", default=None, help="experiment name (default: every experiment)")
    ru.add_argument("--limit", type=int, default=10, help="newest runs to show")
    ru.add_argument("--k", type=int, default=10, help="the k of the metric columns (ndcg@k, recall@k, ...)")
    ru.set_defaults(handler=cmd_runs)

    cf = command("config", "show the training configuration and what each setting means")
    cf_sub = cf.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = command("show", "print the effective configuration (defaults, then --config FILE) with each "
                   "setting's meaning", parent=cf_sub)
    show.add_argument("--config", default=None, metavar="FILE", help="JSON with PipelineConfig fields to override")
    show.set_defaults(handler=cmd_config_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    _offline_env()
    args = build_parser().parse_args(argv)
    if args.quiet:
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
    logs.configure(args.quiet)
    try:
        if getattr(args, "k", 10) is not None and not 1 <= getattr(args, "k", 10) <= 100:
            raise RecsysError(f"--k must be between 1 and 100, got {args.k}")
        code = args.handler(args)
        return code if isinstance(code, int) else 0
    except RecsysError as exc:
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
