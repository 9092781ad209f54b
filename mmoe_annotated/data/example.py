"""The embedded dataset: a seeded generator of synthetic ByteRec-format rows.

Explained in chapter 2, "The data" (``book/02_data.ipynb``).

:func:`load_example` is the book's default dataset. It is *synthetic*: made on the fly by
:func:`make_byterec`, which imitates the real data (long-tail ID popularity, user, item and
author effects, ``like`` much rarer than ``finish``, new items arriving over time). Nothing is
downloaded, so every chapter runs anywhere. Real files are read by
:func:`mmoe_annotated.data.load_byterec`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from .schema import COLUMNS

__all__ = ["ByteRecSizes", "make_byterec", "load_example"]



@dataclass(frozen=True)
class ByteRecSizes:
    """Vocabulary sizes of the generated data. The defaults make a small, quick dataset;
    :meth:`like_real` gives vocabularies about the size of the real ByteRec track-2 data."""

    users: int = 2_000
    items: int = 8_000
    authors: int = 3_000
    music: int = 1_500
    cities: int = 300
    devices: int = 1_200
    channels: int = 5

    @classmethod
    def like_real(cls) -> "ByteRecSizes":
        return cls(users=20_000, items=100_000, authors=50_000, music=20_000, cities=400,
                   devices=2_000, channels=5)


def _zipf(rng: np.random.Generator, n_values: int, size: int, exponent: float) -> np.ndarray:
    """Ranks 0..n_values-1 drawn with probability proportional to 1 / (rank + 1) ** exponent."""
    weights = 1.0 / np.arange(1, n_values + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n_values - 1)


class _Entities(NamedTuple):
    """Users' and items' fixed attributes, indexed by their 0-based ID (``-1``: missing)."""

    user_city: np.ndarray
    user_device: np.ndarray
    item_author: np.ndarray
    item_music: np.ndarray
    item_city: np.ndarray
    item_duration: np.ndarray


def _entities(rng: np.random.Generator, sizes: ByteRecSizes) -> _Entities:
    """Attributes follow their entity: an item keeps its author, music, city and duration, a user
    their city and device; 18 % of users have no city and 60 % of items no music."""
    user_city = rng.integers(0, sizes.cities, sizes.users)
    user_city[rng.random(sizes.users) < 0.18] = -1
    user_device = rng.integers(0, sizes.devices, sizes.users)
    item_author = _zipf(rng, sizes.authors, sizes.items, 0.9)
    item_music = _zipf(rng, sizes.music, sizes.items, 1.1)
    item_music[rng.random(sizes.items) < 0.6] = -1
    item_city = rng.integers(0, sizes.cities, sizes.items)
    item_duration = np.clip(np.round(rng.gamma(3.0, 3.8, sizes.items)), 1, 300)
    return _Entities(user_city, user_device, item_author, item_music, item_city, item_duration)


def _rows(rng: np.random.Generator, sizes: ByteRecSizes, n: int):
    """Who watched what, through which channel, when: ``(uid, item, channel, time)``, each ``(n,)``.
    Users long-tailed; items long-tailed too, but released over time (item i exists once
    i < released), so later rows show items that earlier rows could not."""
    uid = _zipf(rng, sizes.users, n, 0.8)
    released = np.maximum(1, np.round(sizes.items * (0.5 + 0.5 * np.arange(1, n + 1) / n))).astype(np.int64)
    popularity_order = rng.permutation(sizes.items)
    item = popularity_order[_zipf(rng, sizes.items, n, 0.9)] % released
    channel = np.minimum(rng.geometric(0.75, n) - 1, sizes.channels - 1)
    time = 53_085_000_000 + np.sort(rng.integers(0, 2_000_000, n))
    return uid, item, channel, time


def _frame(ent: _Entities, uid, item, channel, time, finish, like, source: str) -> pd.DataFrame:
    """The rows in ByteRec's columns. Raw IDs look like ByteRec's: large, arbitrary integers
    rather than 0..n-1."""
    frame = pd.DataFrame({
        "uid": uid + 1_000,
        "user_city": np.where(ent.user_city[uid] >= 0, ent.user_city[uid] + 1, -1),
        "item_id": item + 500_000,
        "author_id": ent.item_author[item] + 10_000,
        "item_city": ent.item_city[item] + 1,
        "channel": channel,
        "finish": finish,
        "like": like,
        "music_id": np.where(ent.item_music[item] >= 0, ent.item_music[item] + 1, -1),
        "device": ent.user_device[uid] + 3_000,
        "time": time,
        "duration_time": ent.item_duration[item].astype(np.float64),
    }, columns=list(COLUMNS))
    frame.attrs["source"] = source
    return frame


def make_byterec(n_rows: int = 20_000, seed: int = 0, sizes: ByteRecSizes | None = None) -> pd.DataFrame:
    """Generate a **synthetic** dataset in the ByteRec format. Seeded: same arguments, same rows.

    What it imitates, and how:

    * long-tail popularity: users, items, authors and music are drawn Zipf-like, so a few
      IDs take a large share of the rows and many are rare. In the default 20,000 rows
      the most frequent tenth of the IDs holds about half the rows (users, items) to
      three quarters (music), and 59 % of the items, 39 % of the music IDs, 35 % of the
      authors and 21 % of the users appear at most twice;
    * time: rows are in time order and items are *released over time* (item ``i`` can
      appear only once it is released), so later rows hold item (and author) IDs that
      earlier rows never showed, which is what an encoder fit on an 80/20 split by row
      order meets;
    * attributes follow their entity: an item keeps its author, music, city and duration,
      a user keeps their city and device; 18 % of users have no ``user_city`` and 60 % of
      items no ``music_id`` (``-1``). Counted over rows, where popular users and items weigh
      more, that is about 24 % and 66 % (the real 200-row sample: 18.5 % and 62 %);
    * labels from a planted signal with related but different drivers. Both tasks share
      an item "quality" effect. ``finish`` (about 38 % positive) also depends strongly on
      the video's duration (short videos get finished), the user's patience and the
      channel. ``like`` (about 4 % positive) depends on the author's appeal and the
      user's taste for liking, and is more likely after a finish.
    """
    if n_rows <= 0:
        raise ValueError(f"n_rows must be positive, got {n_rows}")
    sizes = sizes or ByteRecSizes()
    rng = np.random.default_rng(seed)
    n = int(n_rows)

    # One generator draws everything, in this order: entities, planted effects, rows, labels.
    # Same seed, same order, same rows: the book's numbers and the tests rely on it, and a draw
    # moved changes every row after it.
    ent = _entities(rng, sizes)

    # Planted effects (standard normal, scaled by how much each driver matters): the truth the
    # labels are drawn from, which later chapters read what a model learned against. Both tasks
    # share the item's quality; finish also follows the duration, the user's patience and the
    # channel, like the author's appeal, the user's taste for liking, and finish itself.
    quality = rng.normal(size=sizes.items)
    author_appeal = rng.normal(size=sizes.authors)
    user_patience = rng.normal(size=sizes.users)
    user_liker = rng.normal(size=sizes.users)
    channel_effect = np.linspace(0.4, -0.6, sizes.channels)
    uid, item, channel, time = _rows(rng, sizes, n)
    duration_z = (np.log(ent.item_duration[item]) - 2.2) / 0.6
    finish_logit = (-0.9 + 0.9 * quality[item] - 1.1 * duration_z
                    + 0.7 * user_patience[uid] + channel_effect[channel])
    finish = (rng.random(n) < 1 / (1 + np.exp(-finish_logit))).astype(np.int64)
    like_logit = (-4.35 + 0.7 * quality[item]
                  + 0.9 * author_appeal[ent.item_author[item]]
                  + 0.8 * user_liker[uid] + 1.0 * finish)
    like = (rng.random(n) < 1 / (1 + np.exp(-like_logit))).astype(np.int64)
    return _frame(ent, uid, item, channel, time, finish, like,
                  f"make_byterec(n_rows={n}, seed={seed})")


def load_example(n_rows: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """The book's default dataset: :func:`make_byterec` with the default sizes.

    **Synthetic**, generated on the fly (no download). Same arguments, same rows.
    """
    return make_byterec(n_rows=n_rows, seed=seed)
