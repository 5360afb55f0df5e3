"""The embedded demo catalog: a news-like world generated deterministically from a seed.

Nothing is shipped as files. Items belong to fine topics (visible only through their text)
grouped into coarse sections (the ``category`` column). Users have latent topic interests.
Every session the "current system" shows a few fresh, popular items (slightly personalised);
a click depends on topic fit, item quality (popularity) and freshness, so each feature family
(text, CF, behaviour) has something to find. Items keep being published until the last day,
so a temporal split leaves items that appear only after the training cutoff (cold start).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from recsys.dataset import Dataset
from recsys.progress import progress as progress_bar

SECTIONS: dict[str, dict[str, list[str]]] = {
    "sports": {
        "football": "football striker goal league midfielder penalty stadium coach transfer keeper "
        "derby tackle offside referee".split(),
        "tennis": "tennis serve racket grand slam baseline volley wimbledon ace tiebreak clay court "
        "backhand umpire".split(),
        "motorsport": "formula racing driver circuit pit stop lap grid podium engine qualifying "
        "overtake tyres championship".split(),
        "basketball": "basketball dunk rebound playoffs point guard court three-pointer coach draft "
        "assist center arena".split(),
    },
    "business": {
        "markets": "stocks shares investors index rally bonds inflation interest rates central bank "
        "earnings dividend trader".split(),
        "startups": "startup founder venture funding seed round valuation software app unicorn "
        "investors accelerator pitch".split(),
        "energy": "oil gas pipeline solar wind turbines electricity grid prices opec refinery "
        "battery storage".split(),
        "retail": "shoppers retailer store sales discount supermarket ecommerce brand consumer "
        "checkout holiday mall".split(),
    },
    "lifestyle": {
        "cooking": "recipe chef kitchen pasta baking oven flavour dinner sauce spices dessert "
        "bread vegetables".split(),
        "travel": "travel flights hotel beach destination passport tourists island airline "
        "itinerary resort backpacking".split(),
        "fashion": "fashion designer runway collection dress style models couture trend fabric "
        "jacket boutique".split(),
        "gardening": "garden plants flowers soil seeds roses compost vegetables pruning greenhouse "
        "lawn bulbs".split(),
    },
    "science": {
        "space": "nasa rocket astronauts orbit moon mars telescope galaxy launch satellite planet "
        "spacecraft".split(),
        "health": "doctors patients vaccine hospital disease treatment virus clinical trial "
        "medicine nurses symptoms".split(),
        "climate": "climate emissions carbon warming glaciers drought heatwave sea level wildfire "
        "floods temperatures".split(),
        "robotics": "robots artificial intelligence machine learning automation sensors drones "
        "algorithm neural network chips".split(),
    },
}
GENERIC = (
    "report says new today update latest officials week year people experts local city "
    "announced plans after during says could"
).split()
EPOCH = datetime(2026, 1, 1)
_BLOCK_CELLS = 16_000_000  # sessions x eligible items per generated block (float64: 128 MB per array)
# Past scale 1 (``DemoSpec.scaled``), each block of sessions is shown from a uniform sample of this
# many fresh items, which keeps generation linear in sessions instead of sessions x items (scale 1
# has at most ~3,800 fresh items a day, so it would not change it there either).
SCALED_SHOWN_POOL = 4096


@dataclass(frozen=True)
class DemoSpec:
    """Size and behaviour of the generated world. Defaults: a few thousand users and items."""

    n_users: int = 3000
    n_items: int = 3000
    days: float = 60.0
    sessions_per_user: float = 12.0
    shown_per_session: int = 10
    seed: int = 7
    # 0: every session is shown from all fresh items. n > 0: each block of sessions from a
    # uniform sample of n of them when more are fresh (set by ``scaled`` past scale 1).
    shown_pool: int = 0

    @classmethod
    def scaled(cls, factor: float, *, seed: int = 7) -> DemoSpec:
        """The scaling workload: 100,000 x factor users, 20,000 x factor items and about
        2,000,000 x factor clicks (20 per user: fewer sessions than the demo), with the
        demo's behaviour up to factor 1. ``factor`` 1.0 is the full-size benchmark, 0.01 and 0.1
        the smaller sizes 10x apart. Past 1, each block of sessions is shown from a uniform sample
        of ``SCALED_SHOWN_POOL`` fresh items: the shown lists are less concentrated on the
        freshest and best items than a full pick would make them (the cost of generating scale
        10 in minutes instead of hours)."""
        if not 0 < factor <= 10:
            raise ValueError(f"scale factor must be in (0, 10], got {factor}")
        return cls(n_users=max(10, round(100_000 * factor)), n_items=max(50, round(20_000 * factor)),
                   sessions_per_user=5.2, seed=seed, shown_pool=SCALED_SHOWN_POOL if factor > 1 else 0)


def _topic_tables() -> tuple[list[str], list[str], list[list[str]]]:
    topics, sections, vocab = [], [], []
    for section, section_topics in SECTIONS.items():
        for topic, words in section_topics.items():
            topics.append(topic)
            sections.append(section)
            vocab.append(words)
    return topics, sections, vocab


def _item_texts(rng: np.random.Generator, item_topic: np.ndarray, vocab: list[list[str]]):
    n_topics = len(vocab)
    titles, descriptions = [], []
    for topic in item_topic:
        words = vocab[topic]
        title_words = rng.choice(words, size=3, replace=False)
        titles.append(f"{title_words[0].capitalize()} {title_words[1]} {title_words[2]}: "
                      f"{rng.choice(GENERIC)} {rng.choice(GENERIC)}")
        if rng.random() < 0.05:
            descriptions.append("")
            continue
        n_words = int(rng.integers(12, 20))
        parts = list(rng.choice(words, size=n_words // 2))
        parts += list(rng.choice(GENERIC, size=n_words // 3))
        if rng.random() < 0.3:  # some text noise from another topic
            parts += list(rng.choice(vocab[int(rng.integers(n_topics))], size=2))
        rng.shuffle(parts)
        descriptions.append(" ".join(parts).capitalize() + ".")
    return titles, descriptions


def generate_demo(spec: DemoSpec | None = None, *, progress: bool = False) -> Dataset:
    """Generate the demo dataset (``progress``: a bar over the sessions shown).

    Returns a validated :class:`Dataset` with items, interactions (the clicks, weight 1.0) and
    impressions (what was shown, ``clicked`` 0/1). Same spec, same tables, bit for bit.
    """
    spec = spec or DemoSpec()
    rng = np.random.default_rng(spec.seed)
    topics, sections, vocab = _topic_tables()
    n_topics = len(topics)

    item_topic = rng.integers(0, n_topics, size=spec.n_items)
    item_quality = rng.lognormal(0.0, 0.8, size=spec.n_items)
    item_published = np.sort(rng.uniform(-15.0, spec.days, size=spec.n_items))
    titles, descriptions = _item_texts(rng, item_topic, vocab)

    interest = rng.dirichlet(np.full(n_topics, 0.15), size=spec.n_users)
    n_sessions = rng.poisson(spec.sessions_per_user, size=spec.n_users) + 1
    session_user = np.repeat(np.arange(spec.n_users), n_sessions)
    session_time = rng.uniform(0.0, spec.days, size=session_user.size)

    shown = ([], [], [], [], [])
    session_day = np.floor(session_time).astype(int)
    day_sessions = [np.flatnonzero(session_day == day) for day in range(int(np.ceil(spec.days)))]
    bar = progress_bar(total=session_user.size, desc="generate sessions", unit="session", enabled=progress)
    for day, all_sessions in enumerate(day_sessions):
        eligible = np.flatnonzero((item_published <= day) & (item_published >= day - 14))
        if all_sessions.size == 0 or eligible.size <= spec.shown_per_session:
            bar.update(all_sessions.size)  # nothing to show that day
            continue
        # Sessions x eligible items are dense: blocks of sessions keep memory flat at large scales
        # (the demo's days fit in one block, so its random stream is unchanged).
        sampled = 0 < spec.shown_pool < eligible.size
        block = max(1, _BLOCK_CELLS // (spec.shown_pool if sampled else eligible.size))
        for first in range(0, all_sessions.size, block):
            pool = np.sort(rng.choice(eligible, size=spec.shown_pool, replace=False)) if sampled else eligible
            _show_sessions(spec, rng, all_sessions[first:first + block], pool, day, session_user, session_time,
                           item_published, item_quality, item_topic, interest, shown)
            bar.update(min(block, all_sessions.size - first))
    bar.close()
    columns = []
    for parts in shown:  # one column at a time, its blocks freed as it is joined
        columns.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
        parts.clear()
    return _to_dataset(spec, titles, descriptions, [sections[t] for t in item_topic], *columns)


def _show_sessions(spec, rng, sessions, eligible, day, session_user, session_time, item_published, item_quality,
                   item_topic, interest, shown) -> None:
    """What the current system shows in these sessions of one day and what gets clicked."""
    shown_user, shown_item, shown_time, shown_session, shown_clicked = shown
    age = session_time[sessions, None] - item_published[None, eligible]
    users = session_user[sessions]
    fit = interest[users][:, item_topic[eligible]]
    # The current system: fresh and popular first, with a weak personal touch.
    keys = np.log(item_quality[eligible])[None, :] - np.clip(age, 0, None) / 4.0
    keys = keys + 1.0 * np.log(fit + 0.02) + rng.gumbel(size=keys.shape)
    keys[age < 0] = -np.inf  # not published yet at this session's time
    top = np.argpartition(-keys, spec.shown_per_session, axis=1)[:, : spec.shown_per_session]
    rows = np.arange(sessions.size)[:, None]
    fit_shown = fit[rows, top]
    age_shown = np.clip(age[rows, top], 0, None)
    items = eligible[top]
    logit = -4.0 + 8.0 * fit_shown + 0.6 * np.log(item_quality[items]) + np.exp(-age_shown / 3.0)
    clicked = rng.random(logit.shape) < 1.0 / (1.0 + np.exp(-logit))
    # Compact types (62M rows at scale 10): ids fit int32, the time is stored as the final
    # microseconds (the same arithmetic as on the whole column).
    shown_user.append(np.repeat(users, spec.shown_per_session).astype(np.int32))
    shown_item.append(items.ravel().astype(np.int32))
    shown_time.append(_epoch_us(np.repeat(session_time[sessions], spec.shown_per_session)))
    shown_session.append(np.repeat(sessions, spec.shown_per_session).astype(np.int32))
    shown_clicked.append(clicked.ravel().astype(np.int8))


def _epoch_us(time_days: np.ndarray) -> np.ndarray:
    """Days since EPOCH (float64) -> int64 microseconds since 1970, whole seconds."""
    epoch_us = int((EPOCH - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    return (time_days * 86400.0).astype(np.int64) * 1_000_000 + epoch_us


def _to_dataset(spec, titles, descriptions, categories, user, item, time_us, session, clicked):
    item_ids = pl.Series([f"N{i:05d}" for i in range(spec.n_items)])
    user_ids = pl.Series([f"U{u:05d}" for u in range(spec.n_users)])
    timestamps = pl.Series(time_us).cast(pl.Datetime("us"))
    impressions = pl.DataFrame({
        "impression_id": pl.Series([f"S{s:06d}" for s in range(int(session.max()) + 1 if session.size else 0)],
                                   dtype=pl.String).gather(session),
        "user_id": user_ids.gather(user),
        "timestamp": timestamps,
        "item_id": item_ids.gather(item),
        "clicked": pl.Series(clicked, dtype=pl.Int8),
    })
    interactions = (
        impressions.filter(pl.col("clicked") == 1)
        .select("user_id", "item_id", "timestamp", pl.lit(1.0, dtype=pl.Float32).alias("weight"))
        .sort("timestamp", "user_id", "item_id")
    )
    items = pl.DataFrame({
        "item_id": item_ids,
        "title": titles,
        "description": descriptions,
        "category": categories,
    })
    return Dataset.from_frames(items=items, interactions=interactions, impressions=impressions,
                               source="demo")
