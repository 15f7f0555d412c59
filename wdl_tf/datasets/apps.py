"""Synthetic app-store impressions: the paper's Google Play setting (Cheng et al., 2016).

One row per impression of an app to a user; the label ``installed`` says whether the user
installed it. Columns (CSV, comma-separated, no header; the ``apps`` preset reads them)::

    user_id country language age_group device_class installed_apps
    impression_app app_category developer price rating app_age_days hour slot installed

``installed_apps`` is the user's set of installed apps, "a17|a3|a250" in one field (empty:
none), 0 to `MAX_INSTALLED` apps. App ids are ``a<rank>``: ``a0`` is the most installed app.

The label comes from a planted logistic model, fixed by the seed (and the numbers of users
and apps), with both kinds of signal the paper names:

* *memorization*: `NUM_PAIRS` planted (installed app, impression app) pairs among the
  `PAIR_TOP_APPS` most installed apps, chosen at random, each adding `PAIR_WEIGHT` to the
  logit when the user has the first app installed and is shown the second. Nothing else in
  the data predicts them: a model learns them through the wide cross
  ``installed_apps × impression_app`` (one weight per pair).
* *generalization*: every app has a latent factor (`FACTOR_DIM`-d), made of its category's
  and its developer's factors plus a little of its own; a user's factor is the mean of the
  factors of their installed apps plus a factor of their country and age group. Their dot
  product (scaled by `AFFINITY_WEIGHT`) drives the rest, with the app's quality (rating,
  price, age) and the context (hour, slot). It covers rare and unseen (user, app) pairs alike:
  the deep part's embeddings of installed apps, categories and developers learn it.

Users are stateless: a user's demographics, tastes and installed apps are hashed from
(seed, user id), so any number of users costs no memory and a user looks the same in every
row, file and split. Users install apps from their two favourite categories (`TASTE_SHARE`)
and from the whole store, by Zipf-distributed popularity (`ZIPF_EXPONENT`); impressions are
a mix of the user's favourite categories, popular apps and the long tail (rare apps).

Rows are generated in blocks of `BLOCK_ROWS` with numpy, each block with its own random
stream seeded by (seed, stream, file, block), and streamed to disk: any number of rows in
bounded memory; the first N rows of a file do not depend on how many follow. ``stream``
separates splits: `get_files` writes train (stream 0) and eval (stream 1) rows of the same
planted model. One process writes ~140K CSV rows (~40K tf.Example rows) per CPU-second.

Tuned so that both parts are needed: with `get_files` of 200K rows (seed 0), the ``apps``
preset, hidden units (64, 32), 5 epochs and the other defaults, `train_lib.compare_model_types`
gave eval AUC 0.677 (wide), 0.700 (deep) and 0.718 (wide_deep); seed 1: 0.672, 0.690, 0.712.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import TYPE_CHECKING

import numpy as np

from wdl_tf import atomic

if TYPE_CHECKING:
    from tensorflow.core.example import feature_pb2

COLUMNS = (
    "user_id",
    "country",
    "language",
    "age_group",
    "device_class",
    "installed_apps",
    "impression_app",
    "app_category",
    "developer",
    "price",
    "rating",
    "app_age_days",
    "hour",
    "slot",
    "installed",
)
LABEL = "installed"
SEPARATOR = "|"  # between the apps of installed_apps
FORMATS = ("csv", "tfrecord")

NUM_USERS = 100_000
NUM_APPS = 5_000
MAX_INSTALLED = 30
NUM_SLOTS = 10
BLOCK_ROWS = 8192  # rows per random block: the unit of generation and of writing

CATEGORIES = (
    "GAME_ACTION", "GAME_PUZZLE", "GAME_CASUAL", "GAME_STRATEGY", "GAME_RACING", "GAME_SPORTS",
    "GAME_ARCADE", "GAME_WORD", "SOCIAL", "COMMUNICATION", "PHOTOGRAPHY", "VIDEO_PLAYERS",
    "MUSIC_AND_AUDIO", "ENTERTAINMENT", "TOOLS", "PRODUCTIVITY", "FINANCE", "SHOPPING",
    "TRAVEL_AND_LOCAL", "MAPS_AND_NAVIGATION", "HEALTH_AND_FITNESS", "EDUCATION", "BOOKS",
    "NEWS_AND_MAGAZINES", "LIFESTYLE", "FOOD_AND_DRINK", "WEATHER", "PERSONALIZATION",
    "BUSINESS", "SPORTS", "DATING", "PARENTING",
)  # fmt: skip
# (country, its language, share of users)
COUNTRIES = (
    ("US", "en", 0.22), ("IN", "hi", 0.16), ("BR", "pt", 0.09), ("ID", "id", 0.07),
    ("RU", "ru", 0.05), ("MX", "es", 0.05), ("DE", "de", 0.04), ("JP", "ja", 0.04),
    ("GB", "en", 0.04), ("FR", "fr", 0.04), ("TR", "tr", 0.03), ("KR", "ko", 0.03),
    ("VN", "vi", 0.03), ("ES", "es", 0.03), ("IT", "it", 0.03), ("PH", "en", 0.02),
    ("TH", "th", 0.02), ("EG", "ar", 0.02), ("CA", "en", 0.02), ("NG", "en", 0.02),
)  # fmt: skip
ENGLISH_SHARE = 0.2  # users whose language is "en" whatever their country's
AGE_GROUPS = (("13-17", 0.08), ("18-24", 0.24), ("25-34", 0.3), ("35-44", 0.18),
              ("45-54", 0.12), ("55+", 0.08))  # fmt: skip
DEVICE_CLASSES = (("low", 0.3), ("mid", 0.4), ("high", 0.22), ("tablet", 0.08))
PRICES = (0.99, 1.99, 2.99, 4.99, 9.99)
PAID_SHARE = 0.15

# The planted model.
FACTOR_DIM = 8
ZIPF_EXPONENT = 1.1  # popularity of apps: P(rank r) ∝ (r + 1)^-s
TASTE_SHARE = 0.6  # installs from the user's favourite categories
IMPRESSION_TASTE_SHARE = 0.35  # impressions from the user's favourite categories
IMPRESSION_TAIL_SHARE = 0.35  # impressions uniform over all apps (the long tail)
APPS_PER_DEVELOPER = 5
AFFINITY_WEIGHT = 0.5  # logit per unit of user factor · app factor
NUM_PAIRS = 800
PAIR_TOP_APPS = 150
PAIR_WEIGHT = 2.5
BIAS = -2.3

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# ----------------------------------------------------------------------------------------
# Counter-based hashing: a user's attributes are pure functions of (seed, user, salt).


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 that scatters nearby inputs."""
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, salt: int, *keys: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per (seed, salt, keys...), vectorized."""
    with np.errstate(over="ignore"):
        h = _mix64(np.uint64(seed) * _GOLDEN + np.uint64(salt))
        for k in keys:
            h = _mix64(h ^ (np.asarray(k, dtype=np.uint64) + _GOLDEN))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: the index i with cdf[i-1] <= u < cdf[i]."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _cdf(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return np.cumsum(w) / w.sum()


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction) of a discrete distribution.

    Index i = floor(u·n) is kept when frac(u·n) < prob[i] and replaced by alias[i]
    otherwise: one draw per uniform in O(1), where inverse-CDF search costs O(log n).
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    scaled = (w * (n / w.sum())).tolist()
    prob = [1.0] * n
    alias = list(range(n))
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        lo, hi = small.pop(), large.pop()
        prob[lo], alias[lo] = scaled[lo], hi
        scaled[hi] -= 1.0 - scaled[lo]
        (small if scaled[hi] < 1.0 else large).append(hi)
    return np.array(prob), np.array(alias, dtype=np.int64)


def _alias_draw(prob, alias, u, offset=0, size=None) -> np.ndarray:
    """Draws from alias tables: ``size`` entries starting at ``offset`` (arrays allowed)."""
    n = len(prob) if size is None else size
    x = u * n
    i = np.minimum(x.astype(np.int64), n - 1)
    j = np.minimum(offset + i, len(prob) - 1)  # (only an empty table's draw is clipped)
    return np.where(x - i < prob[j], j, alias[j])


# ----------------------------------------------------------------------------------------
# The planted model: app attributes and factors, fixed by (seed, num_apps).


@dataclasses.dataclass(frozen=True)
class World:
    """The planted model of one (seed, num_users, num_apps): apps and the label's weights.

    Attributes:
      category, developer: per app (index = app rank), into `CATEGORIES` / developer ids.
      price, rating, age_days: per app.
      app_factor: [num_apps, FACTOR_DIM], the app's latent factor.
      quality: per app, the logit of its rating, price and age.
      pair_keys: sorted ``installed * num_apps + impression`` of the planted pairs.
      popularity_prob, popularity_alias: alias table of the Zipf popularity of all apps.
      category_apps: app ranks grouped by category (most popular first), with
        ``category_offsets`` into it; ``category_prob`` and ``category_alias`` (positions
        in ``category_apps``) hold one alias table per category, of the popularity of its
        apps.
      category_share: the share of the store's apps of each category.
    """

    seed: int
    num_users: int
    num_apps: int
    category: np.ndarray
    developer: np.ndarray
    price: np.ndarray
    rating: np.ndarray
    age_days: np.ndarray
    app_factor: np.ndarray
    quality: np.ndarray
    country_factor: np.ndarray
    age_factor: np.ndarray
    pair_keys: np.ndarray
    popularity_prob: np.ndarray
    popularity_alias: np.ndarray
    category_apps: np.ndarray
    category_offsets: np.ndarray
    category_prob: np.ndarray
    category_alias: np.ndarray
    category_share: np.ndarray

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The planted (installed app, impression app) pairs, as app ranks."""
        return [(int(k // self.num_apps), int(k % self.num_apps)) for k in self.pair_keys]


@functools.lru_cache(maxsize=8)
def planted_model(seed: int = 0, num_users: int = NUM_USERS, num_apps: int = NUM_APPS) -> World:
    """The planted model for ``seed`` (computed once per process and cached)."""
    rng = np.random.default_rng([seed, 0xA995])
    n_cat = len(CATEGORIES)
    # Each category's share of the store's apps (and of users' favourite categories).
    category_share = rng.dirichlet(np.full(n_cat, 2.0))
    num_devs = max(1, num_apps // APPS_PER_DEVELOPER)
    dev_category = _pick(_cdf(category_share), rng.random(num_devs))
    developer = rng.integers(0, num_devs, num_apps)
    category = np.where(
        rng.random(num_apps) < 0.8,
        dev_category[developer],  # a developer mostly stays in its category
        _pick(_cdf(category_share), rng.random(num_apps)),
    )
    cat_f = rng.normal(0, 1.0, (n_cat, FACTOR_DIM))
    dev_f = rng.normal(0, 0.6, (num_devs, FACTOR_DIM))
    own_f = rng.normal(0, 0.3, (num_apps, FACTOR_DIM))
    app_factor = (cat_f[category] + dev_f[developer] + own_f) / np.sqrt(1.0 + 0.36 + 0.09)

    paid = rng.random(num_apps) < PAID_SHARE
    price = np.where(paid, np.asarray(PRICES)[rng.integers(0, len(PRICES), num_apps)], 0.0)
    rating = np.clip(np.round(rng.normal(4.0, 0.45, num_apps), 1), 1.0, 5.0)
    age_days = np.clip(np.round(rng.lognormal(5.8, 1.1, num_apps)), 1, 4000).astype(np.int64)
    quality = (
        1.2 * (rating - 4.0)
        - 1.0 * paid
        - 0.25 * np.log1p(price)
        - 0.25 * (np.log(age_days) - 5.8)  # newer apps get more installs
    )

    popularity = (np.arange(num_apps) + 1.0) ** -ZIPF_EXPONENT
    order = np.lexsort((np.arange(num_apps), category))  # by category, then rank
    counts = np.bincount(category, minlength=n_cat)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    category_prob = np.ones(num_apps)
    category_alias = np.arange(num_apps)
    for c in range(n_cat):
        lo, hi = offsets[c], offsets[c + 1]
        if hi > lo:
            prob, alias = _alias_table(popularity[order[lo:hi]])
            category_prob[lo:hi], category_alias[lo:hi] = prob, lo + alias
    popularity_prob, popularity_alias = _alias_table(popularity)

    top = min(PAIR_TOP_APPS, num_apps)
    keys = set()
    wanted = min(NUM_PAIRS, top * (top - 1))
    while len(keys) < wanted:
        a, b = rng.integers(0, top, 2)
        if a != b:
            keys.add(int(a) * num_apps + int(b))
    return World(
        seed=seed,
        num_users=num_users,
        num_apps=num_apps,
        category=category,
        developer=developer,
        price=price,
        rating=rating,
        age_days=age_days,
        app_factor=app_factor,
        quality=quality,
        country_factor=rng.normal(0, 0.35, (len(COUNTRIES), FACTOR_DIM)),
        age_factor=rng.normal(0, 0.35, (len(AGE_GROUPS), FACTOR_DIM)),
        pair_keys=np.array(sorted(keys), dtype=np.int64),
        popularity_prob=popularity_prob,
        popularity_alias=popularity_alias,
        category_apps=order,
        category_offsets=offsets,
        category_prob=category_prob,
        category_alias=category_alias,
        category_share=category_share,
    )


def _popular(world: World, u: np.ndarray) -> np.ndarray:
    """Apps drawn by popularity from the whole store (u uniform in [0, 1))."""
    return _alias_draw(world.popularity_prob, world.popularity_alias, u)


def _from_category(world: World, category: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Apps drawn by popularity within ``category`` (u uniform in [0, 1))."""
    lo = world.category_offsets[category]
    size = world.category_offsets[category + 1] - lo
    pos = _alias_draw(world.category_prob, world.category_alias, u, lo, np.maximum(size, 1))
    apps = world.category_apps[pos]
    return np.where(size > 0, apps, _popular(world, u))  # an empty category: the whole store


_GAMES = np.array([c.startswith("GAME_") for c in CATEGORIES])
# Salts of the per-user hashes.
_S_COUNTRY, _S_ENGLISH, _S_AGE, _S_DEVICE, _S_TASTE1, _S_TASTE2 = range(1, 7)
_S_COUNT, _S_SOURCE, _S_APP, _S_WHICH = range(7, 11)


@dataclasses.dataclass(frozen=True)
class Users:
    """Attributes of a batch of users (one per row)."""

    country: np.ndarray
    english: np.ndarray
    age_group: np.ndarray
    device: np.ndarray
    tastes: np.ndarray  # [n, 2] favourite categories
    installed: np.ndarray  # [n, MAX_INSTALLED] app ranks, sorted, -1 = none
    factor: np.ndarray  # [n, FACTOR_DIM]


def users(world: World, user: np.ndarray) -> Users:
    """The attributes of ``user`` ids: pure functions of (seed, user id)."""
    s = world.seed
    user = np.asarray(user, dtype=np.int64)
    country = _pick(_cdf([c[2] for c in COUNTRIES]), _uniform(s, _S_COUNTRY, user))
    age_group = _pick(_cdf([a[1] for a in AGE_GROUPS]), _uniform(s, _S_AGE, user))
    device = _pick(_cdf([d[1] for d in DEVICE_CLASSES]), _uniform(s, _S_DEVICE, user))
    # Favourite categories: the store's shares, games tilted up for users under 25.
    tastes = np.empty((len(user), 2), dtype=np.int64)
    for young in (False, True):
        weights = world.category_share * np.where(young & _GAMES, 3.0, 1.0)
        rows = (age_group <= 1) == young
        for k, salt in enumerate((_S_TASTE1, _S_TASTE2)):
            tastes[rows, k] = _pick(_cdf(weights), _uniform(s, salt, user[rows]))
    count = np.minimum(
        np.floor((MAX_INSTALLED + 1) * _uniform(s, _S_COUNT, user) ** 1.3), MAX_INSTALLED
    ).astype(np.int64)
    k = np.arange(MAX_INSTALLED)[None, :]
    u_app = _uniform(s, _S_APP, user[:, None], k)
    from_taste = _uniform(s, _S_SOURCE, user[:, None], k) < TASTE_SHARE
    which = (_uniform(s, _S_WHICH, user[:, None], k) < 0.5).astype(np.int64)
    taste_cat = np.take_along_axis(tastes, which, axis=1)
    apps = np.where(from_taste, _from_category(world, taste_cat, u_app), _popular(world, u_app))
    apps = np.where(k < count[:, None], apps, world.num_apps)  # beyond the user's count
    apps = np.sort(apps, axis=1)
    dup = np.zeros_like(apps, dtype=bool)
    dup[:, 1:] = apps[:, 1:] == apps[:, :-1]
    apps = np.sort(np.where(dup, world.num_apps, apps), axis=1)
    apps = np.where(apps == world.num_apps, -1, apps)
    valid = apps >= 0
    n_valid = valid.sum(axis=1, keepdims=True)
    summed = (world.app_factor[np.maximum(apps, 0)] * valid[..., None]).sum(axis=1)
    factor = (
        summed / np.maximum(n_valid, 1)
        + world.country_factor[country]
        + world.age_factor[age_group]
    )
    return Users(
        country=country,
        english=_uniform(s, _S_ENGLISH, user) < ENGLISH_SHARE,
        age_group=age_group,
        device=device,
        tastes=tastes,
        installed=apps,
        factor=factor,
    )


def pair_hits(world: World, installed: np.ndarray, impression: np.ndarray) -> np.ndarray:
    """Per row, how many planted pairs (installed app, impression app) the row holds."""
    keys = np.where(installed >= 0, installed * world.num_apps + impression[:, None], -1)
    pos = np.searchsorted(world.pair_keys, keys)
    hit = world.pair_keys[np.minimum(pos, len(world.pair_keys) - 1)] == keys
    return (hit & (installed >= 0)).sum(axis=1)


def logit(world: World, u: Users, impression: np.ndarray, hour, slot) -> np.ndarray:
    """The planted model's logit of an install."""
    affinity = np.einsum("nd,nd->n", u.factor, world.app_factor[impression])
    paid = world.price[impression] > 0
    return (
        BIAS
        + AFFINITY_WEIGHT * affinity
        + world.quality[impression]
        + PAIR_WEIGHT * pair_hits(world, u.installed, impression)
        - 0.6 * (paid & (u.device == 0))  # low-end devices rarely buy apps
        - 0.12 * slot  # position bias
        + 0.3 * np.cos(2 * np.pi * (hour - 20) / 24)  # evening peak
    )


@dataclasses.dataclass(frozen=True)
class Block:
    """A block of generated rows (arrays, one entry per row)."""

    user: np.ndarray
    users: Users
    impression: np.ndarray
    hour: np.ndarray
    slot: np.ndarray
    logit: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def take(self, n: int) -> Block:
        """The first n rows."""
        users_ = Users(**{k: v[:n] for k, v in vars(self.users).items()})
        return Block(**{k: users_ if k == "users" else v[:n] for k, v in vars(self).items()})


_HOUR_CDF = _cdf(1.0 + 0.6 * np.cos(2 * np.pi * (np.arange(24) - 20) / 24))
_SLOT_CDF = _cdf(0.8 ** np.arange(NUM_SLOTS))


def generate_block(world: World, rng: np.random.Generator, n: int) -> Block:
    """n impressions (fixed draw order, so a block depends only on its stream)."""
    user = rng.integers(0, world.num_users, n)
    u = users(world, user)
    src = rng.random(n)
    u_app = rng.random(n)
    which = rng.integers(0, 2, n)
    taste = _from_category(world, u.tastes[np.arange(n), which], u_app)
    tail = np.minimum((u_app * world.num_apps).astype(np.int64), world.num_apps - 1)
    popular = _popular(world, u_app)
    impression = np.where(
        src < IMPRESSION_TASTE_SHARE,
        taste,
        np.where(src < IMPRESSION_TASTE_SHARE + IMPRESSION_TAIL_SHARE, tail, popular),
    )
    # The store does not recommend an installed app: redraw those once, from the tail.
    shown_installed = (u.installed == impression[:, None]).any(axis=1)
    redraw = rng.integers(0, world.num_apps, n)
    impression = np.where(shown_installed, redraw, impression)
    hour = _pick(_HOUR_CDF, rng.random(n))
    slot = _pick(_SLOT_CDF, rng.random(n))
    z = logit(world, u, impression, hour, slot)
    label = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
    return Block(user, u, impression, hour, slot, z, label)


def blocks(world: World, rows: int, seed: int, stream: int = 0, file_index: int = 0):
    """Yields the Blocks of ``rows`` rows of one file (the last one cut short)."""
    for block, start in enumerate(range(0, rows, BLOCK_ROWS)):
        rng = np.random.default_rng([seed, stream, file_index, block])
        b = generate_block(world, rng, BLOCK_ROWS)
        keep = min(BLOCK_ROWS, rows - start)
        yield b if keep == BLOCK_ROWS else b.take(keep)


# ----------------------------------------------------------------------------------------
# Formatting.


def app_token(rank: int) -> str:
    """The id of the app of popularity ``rank`` (0 = the most installed)."""
    return f"a{rank}"


@functools.lru_cache(maxsize=8)
def _tables(world_key: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Per-app and per-value byte strings (object arrays), for fast formatting."""
    world = planted_model(*world_key)
    apps = np.arange(world.num_apps)
    as_bytes = lambda values: np.array([str(v).encode() for v in values], dtype=object)  # noqa: E731
    return {
        "app": as_bytes(app_token(a) for a in apps),
        "category": as_bytes(CATEGORIES[c] for c in world.category),
        "developer": as_bytes(f"d{d}" for d in world.developer),
        "price": as_bytes(f"{p:.2f}" for p in world.price),
        "rating": as_bytes(f"{r:.1f}" for r in world.rating),
        "age_days": as_bytes(int(a) for a in world.age_days),
        "country": as_bytes(c[0] for c in COUNTRIES),
        "language": as_bytes(c[1] for c in COUNTRIES),
        "age_group": as_bytes(a[0] for a in AGE_GROUPS),
        "device": as_bytes(d[0] for d in DEVICE_CLASSES),
        "int": as_bytes(range(max(24, NUM_SLOTS))),
    }


def _installed_lists(tokens: np.ndarray, installed: np.ndarray) -> list[list]:
    """Per row, the tokens of the installed apps (the -1 padding dropped)."""
    valid = installed >= 0
    flat = tokens[installed[valid]].tolist()
    ends = np.cumsum(valid.sum(axis=1)).tolist()
    return [flat[a:b] for a, b in zip([0] + ends[:-1], ends)]


def block_columns(world: World, b: Block) -> dict[str, list]:
    """The block as column name → list of bytes values (installed_apps: lists of bytes)."""
    t = _tables((world.seed, world.num_users, world.num_apps))
    u = b.users
    language = np.where(u.english, b"en", t["language"][u.country])
    app = t["app"]
    imp = b.impression
    return {
        "user_id": [b"u%d" % i for i in b.user.tolist()],
        "country": t["country"][u.country].tolist(),
        "language": language.tolist(),
        "age_group": t["age_group"][u.age_group].tolist(),
        "device_class": t["device"][u.device].tolist(),
        "installed_apps": _installed_lists(app, u.installed),
        "impression_app": app[imp].tolist(),
        "app_category": t["category"][imp].tolist(),
        "developer": t["developer"][imp].tolist(),
        "price": t["price"][imp].tolist(),
        "rating": t["rating"][imp].tolist(),
        "app_age_days": t["age_days"][imp].tolist(),
        "hour": t["int"][b.hour].tolist(),
        "slot": t["int"][b.slot].tolist(),
        "installed": np.where(b.label, b"1", b"0").tolist(),
    }


def format_csv(world: World, b: Block) -> bytes:
    """The block as CSV lines (bytes), in `COLUMNS` order."""
    cols = block_columns(world, b)
    sep = SEPARATOR.encode()
    cols["installed_apps"] = [sep.join(apps) for apps in cols["installed_apps"]]
    return b"".join(line + b"\n" for line in map(b",".join, zip(*(cols[c] for c in COLUMNS))))


# tf.Example protos: numerics and the label as float_list, ``slot`` as int64_list, strings as
# bytes_list, ``installed_apps`` as a bytes_list of its apps (what
# `input_pipeline.make_example` makes). Each column's value is encoded once, by protobuf, as
# a `Features` holding that one entry; a row is those entries joined (protobuf merges
# repeated map entries) inside one `Example`, so no row is built field by field. The protos
# come with TensorFlow, which only the TFRecord path imports (CSV generation does without).


def _protos():
    from tensorflow.core.example import example_pb2, feature_pb2

    return example_pb2, feature_pb2


def _entry(key: str, feature: feature_pb2.Feature) -> bytes:
    """A serialized `Features` with one entry (key → feature)."""
    return _protos()[1].Features(feature={key: feature}).SerializeToString()


def _bytes_feature(values: list[bytes]) -> feature_pb2.Feature:
    pb = _protos()[1]
    return pb.Feature(bytes_list=pb.BytesList(value=values))


def _float_feature(value: float) -> feature_pb2.Feature:
    pb = _protos()[1]
    return pb.Feature(float_list=pb.FloatList(value=[value]))


def _int_feature(value: int) -> feature_pb2.Feature:
    pb = _protos()[1]
    return pb.Feature(int64_list=pb.Int64List(value=[value]))


def _example(features: bytes) -> bytes:
    """A serialized `Example` whose ``features`` are the joined `Features` entries."""
    example = _protos()[0].Example()
    example.features.MergeFromString(features)
    return example.SerializeToString()


@functools.lru_cache(maxsize=8)
def _example_tables(world_key: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Serialized feature entries per value (object arrays of bytes), for fast encoding."""
    world = planted_model(*world_key)
    t = _tables(world_key)
    table = lambda values: np.array(list(values), dtype=object)  # noqa: E731
    strings = lambda key, values: table(_entry(key, _bytes_feature([v])) for v in values)  # noqa: E731
    floats = lambda key, values: table(_entry(key, _float_feature(float(v))) for v in values)  # noqa: E731
    app_block = zip(
        strings("impression_app", t["app"]),
        strings("app_category", t["category"]),
        strings("developer", t["developer"]),
        floats("price", t["price"]),
        floats("rating", t["rating"]),
        floats("app_age_days", world.age_days),
    )
    return {
        "country": strings("country", t["country"]),
        "language": strings("language", [*t["language"], b"en"]),  # last: English speakers
        "age_group": strings("age_group", t["age_group"]),
        "device_class": strings("device_class", t["device"]),
        "app": table(b"".join(entries) for entries in app_block),
        "hour": floats("hour", range(24)),
        "slot": table(_entry("slot", _int_feature(v)) for v in range(NUM_SLOTS)),
        "app_name": t["app"],
        LABEL: floats(LABEL, (0, 1)),
    }


def format_examples(world: World, b: Block) -> list[bytes]:
    """The block as serialized tf.Examples (one feature per column of `COLUMNS`)."""
    t = _example_tables((world.seed, world.num_users, world.num_apps))
    u = b.users
    installed = [
        _entry("installed_apps", _bytes_feature(apps))
        for apps in _installed_lists(t["app_name"], u.installed)
    ]
    columns = [
        [_entry("user_id", _bytes_feature([b"u%d" % i])) for i in b.user.tolist()],
        t["country"][u.country].tolist(),
        t["language"][np.where(u.english, len(COUNTRIES), u.country)].tolist(),
        t["age_group"][u.age_group].tolist(),
        t["device_class"][u.device].tolist(),
        installed,
        t["app"][b.impression].tolist(),  # impression_app .. app_age_days
        t["hour"][b.hour].tolist(),
        t["slot"][b.slot].tolist(),
        t[LABEL][b.label.astype(np.int64)].tolist(),
    ]
    return [_example(b"".join(parts)) for parts in zip(*columns)]


# ----------------------------------------------------------------------------------------
# Files.


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")


def _write_file(path, world, rows, seed, stream, file_index, fmt) -> None:
    with atomic.atomic_path(path) as tmp:
        if fmt == "csv":
            with open(tmp, "wb") as f:
                for b in blocks(world, rows, seed, stream, file_index):
                    f.write(format_csv(world, b))
        else:
            import tensorflow as tf  # only the TFRecord framing needs it

            with tf.io.TFRecordWriter(tmp) as writer:
                for b in blocks(world, rows, seed, stream, file_index):
                    for record in format_examples(world, b):
                        writer.write(record)


def file_names(
    directory: str,
    rows: int,
    seed: int = 0,
    num_files: int = 1,
    fmt: str = "csv",
    num_users: int = NUM_USERS,
    num_apps: int = NUM_APPS,
    stream: int = 0,
    name: str = "apps",
) -> list[str]:
    """The paths `write_apps` writes for these arguments."""
    ext = {"csv": ".csv", "tfrecord": ".tfrecord"}[fmt]
    key = f"{name}_{rows}_s{seed}_r{stream}_u{num_users}_a{num_apps}"
    return [
        os.path.join(directory, f"{key}-{i:05d}-of-{num_files:05d}{ext}") for i in range(num_files)
    ]


def write_apps(
    directory: str,
    rows: int,
    seed: int = 0,
    num_files: int = 1,
    fmt: str = "csv",
    num_users: int = NUM_USERS,
    num_apps: int = NUM_APPS,
    stream: int = 0,
    name: str = "apps",
) -> list[str]:
    """Writes ``rows`` synthetic impressions over ``num_files`` files; returns their paths.

    Rows are generated and written in blocks of `BLOCK_ROWS` (bounded memory at any size);
    each file is written to ``<path>.tmp-<pid>`` and renamed when complete. Deterministic
    given the arguments.

    Args:
      directory: where to write (created if needed).
      rows: total rows, split as evenly as possible over the files.
      seed: fixes the planted model (apps, users, pairs) and, with ``stream``, the rows.
      num_files: number of files (shards).
      fmt: ``csv`` (the ``apps`` preset's layout, installed_apps as "a1|a2") or
        ``tfrecord`` (tf.Examples; installed_apps a bytes_list of apps, the label a float).
      num_users: users are ``u0`` .. ``u<num_users - 1>``, uniformly drawn per impression.
      num_apps: apps are ``a0`` (most popular) .. ``a<num_apps - 1>``.
      stream: which random stream of rows (splits of one planted model use different ones).
      name: file name prefix.

    Returns:
      `file_names` of the arguments:
      ``<directory>/<name>_<rows>_s<seed>_r<stream>_u<users>_a<apps>-<i>-of-<n>.csv``.
    """
    _check_int("rows", rows, 1)
    _check_int("seed", seed, 0)
    _check_int("num_files", num_files, 1)
    _check_int("num_users", num_users, 1)
    _check_int("num_apps", num_apps, 2)
    _check_int("stream", stream, 0)
    if fmt not in FORMATS:
        raise ValueError(f"fmt: unknown value {fmt!r}; allowed values are {list(FORMATS)}")
    world = planted_model(int(seed), int(num_users), int(num_apps))
    os.makedirs(directory, exist_ok=True)
    paths = file_names(directory, rows, seed, num_files, fmt, num_users, num_apps, stream, name)
    for i, path in enumerate(paths):
        n = rows // num_files + (1 if i < rows % num_files else 0)
        _write_file(path, world, n, seed, stream, i, fmt)
    return paths


TRAIN_STREAM, EVAL_STREAM = 0, 1


def get_files(
    work_dir: str,
    rows: int,
    seed: int = 0,
    num_files: int = 1,
    fmt: str = "csv",
    num_users: int = NUM_USERS,
    num_apps: int = NUM_APPS,
) -> tuple[list[str], list[str]]:
    """Writes (or reuses) train (``rows``) and eval (``rows // 4``) files of one planted model.

    The splits share the planted model of ``seed`` (the same users, apps and pairs) and use
    different random streams of rows. Files already written for the same arguments (their
    names hold rows, seed, stream and sizes) are reused.

    Returns:
      (train paths, eval paths).
    """
    _check_int("rows", rows, 4)
    out = []
    for split, n, stream in (("train", rows, TRAIN_STREAM), ("eval", rows // 4, EVAL_STREAM)):
        args = dict(
            seed=seed,
            num_files=num_files,
            fmt=fmt,
            num_users=num_users,
            num_apps=num_apps,
            stream=stream,
            name=f"apps_{split}",
        )
        paths = file_names(work_dir, n, **args)
        if not all(os.path.exists(p) for p in paths):
            paths = write_apps(work_dir, n, **args)
        out.append(paths)
    return out[0], out[1]
