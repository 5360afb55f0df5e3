"""Item encoding throughput against a plain baseline, and what each speed-up costs in quality.

    .venv/bin/python benchmarks/text_encoding.py [--items 3000] [--max-length 128]

All variants encode the same catalog (the demo generator's items) with the pretrained
MiniLM, in this one run:
- baseline: fixed padding to 128 tokens, fp32, batches of 32 in catalog order, no caching;
- dynamic: the project's ``TextEncoder.encode`` (length-sorted batches of 64, each padded to
  its longest text), truncation at ``--max-length`` tokens;
- dynamic+int8: the same with ``torch.ao.quantization.quantize_dynamic`` on the Linear layers;
- dynamic 48 tokens: the production setting (``text.max_length = 48``).
Quality: text-only nDCG@10 on the demo's temporal split (user vector = recency-weighted mean
of history item vectors; full ranking over unseen items), per variant. Prints items/s,
speed-up over the baseline and the nDCG difference, plus the command to rerun.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import polars as pl
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def baseline_encode(encoder, texts: list[str], *, max_length: int = 128, batch_size: int = 32) -> np.ndarray:
    """The plain way: every batch padded to ``max_length``, catalog order, fp32."""
    from features.text_encoder import mean_pool

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = encoder.tokenizer(texts[start:start + batch_size], padding="max_length", truncation=True,
                                      max_length=max_length, return_tensors="pt")
            hidden = encoder.model(**batch).last_hidden_state
            out.append(mean_pool(hidden, batch["attention_mask"]).numpy())
    return np.concatenate(out)


def text_ndcg(vectors: np.ndarray, data, k: int = 10) -> float:
    """Text-only nDCG@k on the demo's temporal split with these item vectors."""
    import scipy.sparse as sp

    from features.text_interest import history_weights, user_vectors
    from recsys import metrics
    from recsys.idmap import IdMap
    from recsys.split import split_interactions

    split = split_interactions(data.interactions, kind="temporal", test_fraction=0.2)
    users = IdMap(kind="user").fit(split.train["user_id"])
    items = IdMap(kind="item").fit(data.items["item_id"])

    def indexed(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(pl.Series("user_idx", users.to_index(df["user_id"], unknown="null")),
                               pl.Series("item_idx", items.to_index(df["item_id"]))).drop_nulls("user_idx")

    train, test = indexed(split.train), indexed(split.test)
    weights = history_weights(train, n_users=len(users), n_items=len(items), history_len=20, half_life=5.0)
    seen = sp.csr_matrix((np.ones(train.height), (train["user_idx"], train["item_idx"])),
                         shape=(len(users), len(items)))
    fresh = test.join(train.select("user_idx", "item_idx"), on=["user_idx", "item_idx"], how="anti")
    grouped = fresh.group_by("user_idx").agg(pl.col("item_idx").unique()).sort("user_idx")
    user_idx = grouped["user_idx"].to_numpy()
    scores = user_vectors(weights, vectors)[user_idx] @ vectors.T
    scores[seen[user_idx].toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    return metrics.topk_metrics(top, [set(v) for v in grouped["item_idx"].to_list()], k)[f"ndcg@{k}"]


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=3000, help="demo catalog size")
    parser.add_argument("--max-length", type=int, default=128, help="truncation of the dynamic variants")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(os.cpu_count() or 1)
    from features.text_encoder import TextEncoder, item_texts
    from recsys.demo_data import DemoSpec, generate_demo

    data = generate_demo(DemoSpec(n_items=args.items))
    texts = item_texts(data.items)
    encoder = TextEncoder(max_length=args.max_length)
    lengths = [len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
    print(f"{len(texts)} demo items, tokens per text: mean {np.mean(lengths):.1f}, "
          f"p95 {np.percentile(lengths, 95):.0f}, max {max(lengths)}; torch threads {torch.get_num_threads()}")
    rows = []
    vectors, seconds = timed(lambda: baseline_encode(encoder, texts))
    rows.append(("baseline: pad 128, fp32, batch 32", vectors, seconds))
    vectors, seconds = timed(lambda: encoder.encode(texts, progress=False))
    rows.append((f"dynamic padding, sorted, batch 64, {args.max_length} tok", vectors, seconds))
    quantized = TextEncoder(max_length=args.max_length)
    quantized.model = torch.ao.quantization.quantize_dynamic(quantized.model, {torch.nn.Linear}, dtype=torch.qint8)
    vectors, seconds = timed(lambda: quantized.encode(texts, progress=False))
    rows.append((f"dynamic + int8 Linear, {args.max_length} tok", vectors, seconds))
    quantized.max_length = 48
    vectors, seconds = timed(lambda: quantized.encode(texts, progress=False))
    rows.append(("dynamic + int8 Linear, 48 tok (production length)", vectors, seconds))
    short = TextEncoder(max_length=48)
    vectors, seconds = timed(lambda: short.encode(texts, progress=False))
    rows.append(("dynamic padding, 48 tok (production setting)", vectors, seconds))

    base_rate = len(texts) / rows[0][2]
    base_ndcg = text_ndcg(rows[0][1], data)
    print(f"\n{'variant':52s}{'items/s':>9s}{'speed-up':>10s}{'nDCG@10':>9s}{'Δ vs base':>11s}{'cos vs base':>12s}")
    for name, vectors, seconds in rows:
        ndcg = text_ndcg(vectors, data)
        cosine = float(np.mean(np.sum(vectors * rows[0][1], axis=1)))
        print(f"{name:52s}{len(texts) / seconds:>9.0f}{len(texts) / seconds / base_rate:>9.2f}x{ndcg:>9.4f}"
              f"{ndcg - base_ndcg:>+11.4f}{cosine:>12.4f}")
    print("\nrerun: .venv/bin/python benchmarks/text_encoding.py "
          f"--items {args.items} --max-length {args.max_length}")


if __name__ == "__main__":
    main()
