"""One frozen configuration for a training run, logged once per run and saved with the model."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from recsys.errors import ConfigError

SPLITS = ("temporal", "leave-last-out", "stratified")
# The stage-1 score features (features.ranking_frame.SCORE_FEATURES), named here for validation.
SCORE_SOURCES = ("als_score", "bpr_score", "item_item_score", "text_score")
DEFAULT_TEST_FRACTION = 0.2
STRATIFIED_TEST_FRACTION = 0.25
MAX_LABEL_CUTS = 5
MAX_RANKER_FOLDS = 10
MAX_RANKER_SEEDS = 10
RANKER_OBJECTIVES = ("lambdarank", "rank_xendcg")
RANKER_SHIP = ("auto", "text", "finetuned_text", "pretrained_text", "no_text")  # ranker.ship: chosen, or pinned


@dataclass(frozen=True, kw_only=True)
class TextModelConfig:
    """Fine-tuning of the MiniLM item tower.

    max_length: tokens per item text (title + category + description), truncated.
    trainable_layers: upper transformer layers that are fine-tuned; the lower ones stay frozen
        and their outputs are computed once per item read (kept during fine-tuning).
    steps: optimizer steps; batch_size: (history, next item) pairs per step.
    temperature: softmax temperature of the in-batch contrastive loss (cosine scores).
    history_len: most recent history items that form a user's interest vector.
    recency_half_life: half life, in history positions, of the recency weights.
    hard_negatives: where impressions exist, items shown with a click and not clicked that join
        the batch's softmax as negatives (per example, sampled).
    """

    max_length: int = 48
    # Each trainable layer adds about half the text stage's time again (benchmarks/finetune_scale.py).
    trainable_layers: int = 2
    steps: int = 100
    batch_size: int = 48
    learning_rate: float = 5e-5  # AdamW learning rate of the fine-tuned layers
    temperature: float = 0.05
    history_len: int = 20
    recency_half_life: float = 5.0
    encode_batch_size: int = 64  # item texts per batch when encoding the catalog
    # Shown-but-not-clicked items per click joining the softmax. Off by default: each one adds a
    # target to encode per click, roughly doubling the text stage at 2 per click.
    hard_negatives: int = 0
    # Batches drawn from one of this many target-length bands (1 = off): less padding per step.
    length_buckets: int = 4
    # Catalogs of at least this many items are encoded (the final pass, pretrained and fine-tuned
    # vectors) with bfloat16 matrix products where the CPU has them natively (AVX512-BF16 or
    # AMX): about 1.9x faster, vectors within cosine 0.9999 of float32 (benchmarks/text_encoding.py
    # --dtypes). Smaller catalogs, and CPUs without them, stay float32. 0 = never.
    bf16_min_items: int = 50_000
    # The ordered user tower (features/sequence_tower.py): causal self-attention layers over the
    # user's last history_len item vectors, added to the pooled mean; 0 = the pooled mean alone.
    sequence_layers: int = 2
    sequence_dim: int = 64  # width of the user tower's layers
    sequence_heads: int = 2  # attention heads of the user tower
    sequence_dropout: float = 0.2  # dropout of the user tower while it trains
    sequence_epochs: int = 30  # most passes over the training sequences for the user tower
    # Most user-tower steps in all: a large window stops after fewer passes (time grows with steps);
    # a window whose one pass needs more steps than this keeps the pooled mean, untrained.
    sequence_max_steps: int = 1500
    sequence_patience: int = 4  # user-tower epochs without a better held-out nDCG@10 before it stops
    # Epochs before the patience counts: the held-out nDCG@10 dips below the pooled mean for the
    # first epochs (the item adaptor leaves the identity) before it rises above it.
    sequence_min_epochs: int = 10
    sequence_batch_size: int = 256  # sequences per user-tower step
    sequence_learning_rate: float = 5e-4  # AdamW learning rate of the user tower
    sequence_negatives: int = 256  # items drawn uniformly per user-tower batch as negatives, beside its targets
    # Refit the user tower on each window whose state it serves (the feature window, each extra cut,
    # the training window before test and the shipped model), from its initial weights for the epochs
    # the text window's fit chose, so each user's newest items are targets too. Off by default: it
    # adds one tower fit per window (and per text trial in recsys tune) and did not lift the
    # fine-tuned-text ranker on validation (docs/results.md, "Refitting the user tower on each window").
    sequence_refit: bool = False


@dataclass(frozen=True, kw_only=True)
class CandidateConfig:
    """How many candidates each source contributes per user (before the union)."""

    n_cf: int = 100  # candidates from ALS per user
    n_item_item: int = 100  # candidates from EASE / co-occurrence per user
    n_text: int = 100  # candidates from the text interest score per user
    n_popular: int = 50  # most popular items (all time) per user
    n_recent: int = 50  # most popular items of the last day per user


@dataclass(frozen=True, kw_only=True)
class RankerConfig:
    """LightGBM LambdaRank settings (see LightGBM's parameter docs).

    Defaults: the ranker settings ``recsys tune`` chose on MovieLens 100K's validation data
    (seed 0), rounded: small trees on a share of the features, no prior. The prior needs a leaf
    cap (``max_delta_step``): without one, a variant can collapse in its first trees. Both stay
    settings to tune.
    """

    # Prediction cost grows with the number of trees kept.
    num_boost_round: int = 150
    early_stopping_rounds: int = 30  # trees without a validation gain before boosting stops
    learning_rate: float = 0.06  # LightGBM shrinkage
    num_leaves: int = 6  # leaves per tree
    min_data_in_leaf: int = 30  # rows per leaf at least
    feature_fraction: float = 0.65  # share of features each tree sees
    lambdarank_truncation_level: int = 20  # positions of each list LambdaRank optimises
    # LightGBM's ranking objective: "lambdarank" (pairwise, nDCG-weighted) or "rank_xendcg"
    # (listwise cross-entropy surrogate of nDCG; the truncation level does not apply).
    objective: str = "lambdarank"
    # A tree counts as better on the validation queries only when nDCG rises by more than this.
    # With a prior, trees whose gain is within the validation noise are then not kept.
    early_stopping_min_delta: float = 0.0
    # Stage-1 scores (of SCORE_FEATURES) whose within-query z-scores make the prior: boosting starts
    # from sum_s w_s z_s instead of from zero, with w = 1 for the first source and the others
    # fitted on the training label queries (training/prior_blend.py). The trees then learn
    # corrections, and early stopping keeps the blend when they find none. Empty = off.
    prior_sources: tuple[str, ...] = ()
    # LightGBM's max_delta_step: the largest output a leaf may have (before shrinkage); 0 = no cap.
    # LambdaRank's leaves are Newton steps, sum of gradients over sum of hessians. From a prior
    # that already orders most pairs, the pairs' hessians are near zero, so one leaf can step far
    # enough to undo the prior's order in its first tree (docs/results.md#the-ranker-on-few-users).
    max_delta_step: float = 0.0
    # Members of the ranker: 1 = one LightGBM model early-stopped on the held-out validation users.
    # n > 1 = the training users split into n folds; member k learns on the other folds and stops
    # early on fold k, and the shipped ranker averages the members' scores (one merged model,
    # ``training.ranker_folds``). The held-out validation users then judge models they took no
    # part in. Costs n fits, and the shipped model holds about n times the trees.
    # 0 = from the data (logged as data_choice.ranker_folds): 5 when the ranker learns from 200 to
    # 1,499 users (held-out ones not counted), where one model's early stopping hangs on a few
    # dozen users; 1 otherwise.
    folds: int = 0
    # LightGBM fits averaged into each variant's ranker, on the same users, with seeds seed, seed + 1,
    # ...: each draws other columns for its trees (feature_fraction), so the ranker does not hang
    # on one draw. Costs n fits, and the shipped model holds about n times the trees. 1 = one fit.
    # Needs folds 1 (a fold ensemble averages fits on other users instead) and feature_fraction < 1.
    seeds: int = 1
    # Which variant ships: "auto" = chosen on validation (training.variants.choose_variant);
    # "text" = the better text variant on validation, for catalogs that take items without
    # behaviour, which the no-text variant cannot rank ("auto" acts so when cold_item_fraction > 0);
    # or pinned to one of "finetuned_text", "pretrained_text", "no_text" (every variant is still
    # fitted and evaluated; the choice logs that it was pinned).
    ship: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prior_sources", tuple(self.prior_sources))  # JSON gives a list


def _default_test_fraction(split: str) -> float:
    return STRATIFIED_TEST_FRACTION if split == "stratified" else DEFAULT_TEST_FRACTION


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Everything a `recsys train` run depends on. Logged as flattened MLflow params."""

    split: str = "temporal"  # evaluation protocol: temporal, leave-last-out or stratified
    k: int = 10  # list length K of the metrics and of served lists
    seed: int = 42  # seed of every draw (splits, samples, fits): same data, config and seed, same numbers
    # Temporal: share of the time span; stratified: share of each user's rows. Unset: 0.25 for
    # stratified (the published 75/25-per-user protocol), else 0.2.
    test_fraction: float | None = None
    label_fraction: float = 0.2  # share of the training window that labels the ranker
    # Label windows the ranker learns from: 1 = one feature | label cut of the training window;
    # n > 1 adds n - 1 earlier cuts, each cutting the previous feature window again, so a data set
    # with few users gives the ranker several queries per user (``recsys.windows.extra_label_cuts``).
    label_cuts: int = 1
    # Cold-items protocol: this seeded share of the catalog's interacted items is removed from
    # training entirely (found only through their text); 0 = off.
    cold_item_fraction: float = 0.0
    # ALS: a strong L2 weight, and a confidence scale set from how much each user did, hold up
    # from dense ratings to sparse purchase sequences (ALS validation on MovieLens 100K, Amazon
    # Office and Games: benchmarks/als_defaults.py).
    als_factors: int = 128  # ALS latent factors
    als_iterations: int = 20  # ALS sweeps
    als_regularization: float = 30.0  # ALS L2 regularisation (implicit's, not scaled by the counts)
    # ALS confidence = 1 + alpha x value. 0 = from the data (logged as data_choice.als_alpha):
    # als_user_confidence / the mean per-user sum of values in the window ALS is fitted on.
    als_alpha: float = 0.0
    # With als_alpha 0: each user's total confidence on average. 225 keeps MovieLens 100K's alpha
    # at about 1, where its ALS search ended (validation); recsys tune searches it per data set.
    als_user_confidence: float = 225.0
    # ALS's values: the interaction weights (True) or 1 per (user, item) pair (False). Weights say
    # how much a user liked an item; 0/1 says only that they took it, which is what a protocol
    # where every test interaction counts (MovieLens ratings of any value) asks for.
    cf_use_weights: bool = True
    bpr_factors: int = 128  # BPR latent factors
    bpr_iterations: int = 100  # BPR epochs (each draws as many samples as there are interactions)
    bpr_learning_rate: float = 0.05  # BPR's SGD step at the first epoch; it decays linearly to a tenth
    bpr_regularization: float = 0.01  # BPR's L2 weight on the factors and item biases
    # Above this many samples per fit (epochs x interactions), BPR runs fewer epochs (at least
    # 5; logged as data_choice.bpr_epochs): its cost grows with both, and on large data a few
    # epochs already see every interaction many times over.
    bpr_max_samples: int = 30_000_000
    # EASE item-to-item model (features/item_item.py): lambda, weights kept per item, and the
    # catalog size above which the dense inverse is replaced by cosine co-occurrence. EASE costs
    # n_items^3 time and one dense n_items^2 matrix (benchmarks/item_item_scale.py), which would
    # make the stage grow faster than the data; cosine grows with the co-occurring pairs.
    item_item_regularization: float = 500.0
    item_item_neighbours: int = 200  # EASE/co-occurrence weights kept per item
    item_item_max_items: int = 5_000  # above this catalog size, cosine co-occurrence replaces EASE
    # EDLAE's dropout (0 = plain EASE): a penalty on each item's weights that grows with its
    # popularity, lambda + p / (1 - p) x count.
    item_item_dropout: float = 0.5
    # Session co-occurrence joins the user co-occurrence (0 = off): a session is a user's run of
    # interactions at most this many seconds apart, and its pairs count session_weight each.
    item_item_session_gap_seconds: float = 0.0
    item_item_session_weight: float = 1.0  # weight of a session pair (with item_item_session_gap_seconds)
    ctr_prior_strength: float = 20.0  # impressions of prior in the smoothed click-through rates
    # Above these user counts a seeded uniform sample of users is used (0 = every user): the label
    # users the ranker learns from, and the test users of the full-ranking evaluation. Both cost
    # users x catalog items (candidates, dense baselines), which grows with the square of the data
    # when users and items grow together; with the cap the cost grows with the catalog alone.
    # MovieLens 100K (943 users) and the demo (3,000) are never sampled.
    ranker_max_users: int = 10_000
    eval_max_users: int = 10_000  # test users ranked in the evaluation (0 = every user)
    # Most epochs of the SASRec baseline (features/sasrec.py, an ID-only sequential model written for
    # comparison; full softmax, early-stopped on each user's last window item after 5 epochs
    # without a gain, never before epoch 10; 200 lets it stop by itself). 0 = not evaluated: it trains a model per
    # evaluation (validation and test), minutes on sequence data sets.
    baseline_sasrec_epochs: int = 0
    # Settings of the registered score sources (features/sources.py), by source name, over each
    # source's defaults; every registered source is listed once the config is made. Each takes
    # "use" ("auto", "on", "off"; the choice is logged as data_choice.<name>) and "candidates".
    sources: dict = field(default_factory=dict)
    text: TextModelConfig = field(default_factory=TextModelConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.test_fraction is None:
            object.__setattr__(self, "test_fraction", _default_test_fraction(self.split))
        if not 1 <= self.k <= 1000:
            raise ConfigError(f"k must be between 1 and 1000, got {self.k}")
        for name in ("test_fraction", "label_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{name} must be strictly between 0 and 1, got {value}")
        if not 1 <= self.label_cuts <= MAX_LABEL_CUTS:
            raise ConfigError(f"label_cuts must be 1..{MAX_LABEL_CUTS}, got {self.label_cuts}")
        if not 0.0 <= self.cold_item_fraction < 1.0:
            raise ConfigError(f"cold_item_fraction must be in [0, 1), got {self.cold_item_fraction}")
        if self.als_alpha < 0 or self.als_user_confidence <= 0:
            raise ConfigError(f"als_alpha must be 0 (from the data) or positive and als_user_confidence positive, "
                              f"got {self.als_alpha} and {self.als_user_confidence}")
        if not 0.0 <= self.item_item_dropout < 1.0:
            raise ConfigError(f"item_item_dropout must be in [0, 1), got {self.item_item_dropout}")
        for name in ("item_item_session_gap_seconds", "item_item_session_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")
        from features.sources import resolve_settings  # the registry lives with the sources

        object.__setattr__(self, "sources", resolve_settings(self.sources))
        if self.baseline_sasrec_epochs < 0:
            raise ConfigError(f"baseline_sasrec_epochs must be 0 (no SASRec baseline) or a positive number of "
                              f"epochs, got {self.baseline_sasrec_epochs}")
        for name in ("ranker_max_users", "eval_max_users"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (every user) or a positive count, got {getattr(self, name)}")
        if self.ranker.objective not in RANKER_OBJECTIVES:
            raise ConfigError(f"ranker.objective must be one of {RANKER_OBJECTIVES}, got {self.ranker.objective!r}")
        unknown = sorted(set(self.ranker.prior_sources) - set(SCORE_SOURCES))
        if unknown:
            raise ConfigError(f"ranker.prior_sources {unknown} are not stage-1 scores; use some of {SCORE_SOURCES}")
        step = self.ranker.max_delta_step
        if isinstance(step, bool) or not isinstance(step, int | float) or not step >= 0:
            raise ConfigError(f"ranker.max_delta_step must be a number, 0 (no cap) or positive, got {step!r}")
        if not 0 <= self.ranker.folds <= MAX_RANKER_FOLDS:
            raise ConfigError(f"ranker.folds must be 0..{MAX_RANKER_FOLDS} (0 = from the data, 1 = one "
                              f"early-stopped model), got {self.ranker.folds}")
        seeds = self.ranker.seeds
        if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_RANKER_SEEDS:
            raise ConfigError(f"ranker.seeds must be a whole number 1..{MAX_RANKER_SEEDS} (1 = one fit), got {seeds!r}")
        if seeds > 1 and not self.ranker.feature_fraction < 1:
            raise ConfigError(f"ranker.seeds={seeds} needs ranker.feature_fraction below 1: the seed draws each "
                              f"tree's columns, and with every column ({self.ranker.feature_fraction}) the members "
                              "are the same fit")
        if seeds > 1 and self.ranker.folds != 1:
            raise ConfigError(f"ranker.seeds={seeds} averages fits on the same users and needs ranker.folds 1 "
                              f"(a fold ensemble averages fits on other users), got ranker.folds={self.ranker.folds}")
        if self.ranker.ship not in RANKER_SHIP:
            raise ConfigError(f"ranker.ship must be one of {RANKER_SHIP}, got {self.ranker.ship!r}")
        if not 1 <= self.text.trainable_layers <= 6:
            raise ConfigError(f"text.trainable_layers must be 1..6, got {self.text.trainable_layers}")
        text = self.text
        if text.sequence_layers < 0 or text.sequence_epochs < 0:
            raise ConfigError(f"text.sequence_layers and text.sequence_epochs must be 0 (off) or positive, "
                              f"got {text.sequence_layers} and {text.sequence_epochs}")
        if text.sequence_layers and (text.sequence_heads < 1 or text.sequence_dim < 1
                                     or text.sequence_dim % text.sequence_heads):
            raise ConfigError(f"text.sequence_dim ({text.sequence_dim}) must be a positive multiple of "
                              f"text.sequence_heads ({text.sequence_heads}), which must be at least 1")
        if not 0.0 <= text.sequence_dropout < 1.0:
            raise ConfigError(f"text.sequence_dropout must be in [0, 1), got {text.sequence_dropout}")
        for name in ("sequence_batch_size", "sequence_negatives", "sequence_patience", "sequence_max_steps"):
            if getattr(text, name) < 1:
                raise ConfigError(f"text.{name} must be at least 1, got {getattr(text, name)}")
        if text.sequence_min_epochs < 0:
            raise ConfigError(f"text.sequence_min_epochs must be 0 or more, got {text.sequence_min_epochs}")
        if not isinstance(text.sequence_refit, bool):
            raise ConfigError(f"text.sequence_refit must be true or false, got {text.sequence_refit!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, object]:
        """Flattened ``section.key -> value`` view (``sources.<name>.<key>`` for the score
        sources), for MLflow params."""
        def walk(prefix: str, values: dict) -> dict[str, object]:
            out: dict[str, object] = {}
            for key, value in values.items():
                if isinstance(value, dict):
                    out.update(walk(f"{prefix}{key}.", value))
                else:
                    out[f"{prefix}{key}"] = value
            return out

        return walk("", self.to_dict())

    def save(self, path: Path) -> None:
        """Write the whole config as JSON; a test share equal to its split's default is written as
        null, so a saved config read with another ``--split`` takes that split's default."""
        values = self.to_dict()
        if self.test_fraction == _default_test_fraction(self.split):
            values["test_fraction"] = None
        Path(path).write_text(json.dumps(values, indent=2, sort_keys=True))

    @classmethod
    def from_dict(cls, data: dict) -> PipelineConfig:
        data = _with_sources_section(data)
        sections = {"text": TextModelConfig, "candidates": CandidateConfig, "ranker": RankerConfig}
        for name, section_cls in sections.items():
            if name in data:
                data[name] = section_cls(**data[name])
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> PipelineConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


_SECTIONS = {"PipelineConfig": "", "TextModelConfig": "text.", "CandidateConfig": "candidates.",
             "RankerConfig": "ranker."}


def _with_sources_section(data: dict) -> dict:
    """A config dict with the settings of the sequential-rules source written before the source
    registry (``transitions`` and ``candidates.n_transitions``, models saved then) moved into
    ``sources.transitions``."""
    data = dict(data)
    legacy = {}
    if "transitions" in data:
        legacy["use"] = data.pop("transitions")
    if isinstance(data.get("candidates"), dict) and "n_transitions" in data["candidates"]:
        data["candidates"] = dict(data["candidates"])
        legacy["candidates"] = data["candidates"].pop("n_transitions")
    if legacy:
        sources = dict(data.get("sources") or {})
        sources["transitions"] = {**legacy, **(sources.get("transitions") or {})}
        data["sources"] = sources
    return data


def field_docs() -> dict[str, str]:
    """``section.field -> meaning`` for every setting, read from this module's source: the comment
    on or just above the field, else its entry in the class docstring (``name: meaning``)."""
    import ast
    import inspect
    import io
    import re
    import sys
    import tokenize

    source = inspect.getsource(sys.modules[__name__])
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(token.start[0])
    docs: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef) or node.name not in _SECTIONS:
            continue
        docstring = ast.get_docstring(node) or ""
        entries = {m[1]: " ".join(m[2].split()) for m in
                   re.finditer(r"(?:^|; )(\w+): (.+?)(?=; \w+: |\n\S|\n\n|\Z)", docstring, re.M | re.S)}
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            name, line = item.target.id, item.lineno
            text = comments.get(line) if line in code_lines else None
            if not text:
                above, previous = [], line - 1
                while previous in comments and previous not in code_lines:
                    above.insert(0, comments[previous])
                    previous -= 1
                text = " ".join(above) or entries.get(name, "")
            docs[_SECTIONS[node.name] + name] = text
    from features.sources import REGISTERED

    for source in REGISTERED:
        docs.update({f"sources.{source.name}.{key}": text for key, text in source.setting_docs.items()})
    return docs
