"""Wall time and peak memory of fine-tuning the text model on a large catalog.

    .venv/bin/python benchmarks/finetune_scale.py --items 50000 [--users 20000] [--days 60]
    .venv/bin/python benchmarks/finetune_scale.py --data data/ml100k --split stratified --seed 0 \
        [--length-buckets 1]

Generates a demo-style catalog of ``--items`` items (and its click log), then runs exactly the
production fine-tuning (`TextModelConfig()` defaults: top 2 of 6 layers trained, lower 4
frozen and computed for the items training reads, 100 steps, then one pass over the
catalog) on the feature window of a temporal split, and prints
the time of each part (catalog generation excluded) and the peak resident memory of the
process (`ru_maxrss`), next to the issue's budgets (30 minutes, 6 GB). With ``--data`` it
fine-tunes on a canonical data folder instead (e.g. MovieLens 100K from `recsys import`), on the
training part of the given split; ``--length-buckets 1`` turns the length bands off to compare.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--data", default=None, help="a canonical data folder instead of the generated catalog")
    parser.add_argument("--split", default="temporal", choices=("temporal", "stratified", "leave-last-out"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length-buckets", type=int, default=None, help="override text.length_buckets")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from dataclasses import replace

    from features.state import with_indices
    from features.text_encoder import TextEncoder, item_texts
    from recsys.config import TextModelConfig
    from recsys.dataset import load_folder
    from recsys.demo_data import DemoSpec, generate_demo
    from recsys.idmap import IdMap
    from recsys.split import split_interactions
    from training.text_finetune import finetune, next_item_examples

    start = time.perf_counter()
    data = (load_folder(args.data) if args.data
            else generate_demo(DemoSpec(n_users=args.users, n_items=args.items, days=args.days)))
    print(f"catalog: {data.items.height:,} items, {data.interactions.height:,} clicks "
          f"(generated in {time.perf_counter() - start:.0f}s, not counted)", flush=True)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    split = split_interactions(data.interactions, kind=args.split, test_fraction=0.25 if args.data else 0.2,
                               seed=args.seed)
    users = IdMap(kind="user").fit(split.train["user_id"])
    items = IdMap(kind="item").fit(data.items["item_id"])
    config = TextModelConfig()
    if args.length_buckets is not None:
        config = replace(config, length_buckets=args.length_buckets)
    examples = next_item_examples(with_indices(split.train, users, items), config.history_len)
    result = finetune(TextEncoder(max_length=config.max_length), item_texts(data.items), examples, config,
                      seed=args.seed, progress=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nfine-tuning on {data.items.height:,} items, length bands {config.length_buckets} "
          f"({len(examples):,} examples): {wall:.0f} s = {wall / 60:.1f} min "
          f"(budget 30), peak RSS {peak / 1024:.2f} GB (budget 6; {rss_before / 1024:.2f} GB before fine-tuning), "
          f"best step {result.best_step}, held-out loss {result.val_losses[0]:.3f} -> {min(result.val_losses):.3f}")
    source = f"--data {args.data} --split {args.split}" if args.data else \
        f"--items {args.items} --users {args.users} --days {args.days}"
    print(f"rerun: .venv/bin/python benchmarks/finetune_scale.py {source} --seed {args.seed} "
          f"--length-buckets {config.length_buckets}")


if __name__ == "__main__":
    main()
