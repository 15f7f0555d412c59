"""Synthetic movie ratings whose users' tastes drift: early memorized crosses go stale.

A fixture for tests and for choosing defaults, never a replacement for real data. It writes
the GroupLens layout (``ratings.csv``: userId,movieId,rating,timestamp; ``movies.csv``:
movieId,title,genres) and prepares it with `wdl_tf.datasets.movielens.prepare`, so the
``movielens`` feature spec reads the result exactly as it reads real MovieLens data: each
user's last 20% of ratings by time is the test split, ``liked_movies`` is the user's earlier
likes.

The planted model (fixed by the seed and the sizes):

* every movie has a latent factor (`FACTOR_DIM`-d) made of its genres' factors plus its own,
  a popularity (Zipf over a random order of the movies) and a quality;
* every user's taste is a unit vector that turns, over the user's active period, from a
  starting taste towards an orthogonal one by an angle of `DRIFT_MIN`..`DRIFT_MAX` × π;
* at each rating time the user picks a movie by popularity and current taste (Gumbel-max
  over log popularity + `CHOICE_WEIGHT` × taste · factor) and likes it (rating >= 4) with
  probability σ(`BIAS` + `AFFINITY_WEIGHT` × taste · factor + quality + user generosity).

So a user's early genre preferences (what ``user_id × genres`` memorizes) and early
co-likes (``liked_movies × movie_id``) pay less in the later test period, while latent
factors of the movies, read through the user's *recent* likes (``liked_movies`` keeps the
last 50), carry over: the deep part's embeddings generalize where the crosses do not. This
reproduces the failure issue 10 measured on real MovieLens data with census-tuned defaults
(joint model below deep-only).

Sizes scale with ``rows`` (ratings before de-duplication): ``rows // RATINGS_PER_USER``
users and ``rows // RATINGS_PER_MOVIE`` movies. 60,000 rows (the dataset's default) write
~57K ratings (600 users, 2,400 movies) in about two seconds.

What the data allows, on the test rows of 60,000 rows, seed 0 (`simulate`'s own values, no
training): the planted logit reaches AUC 0.83; each user's mean taste over their training
period (what a factor model of user and movie ids can learn) 0.78; the mean factor of the
last 50 liked movies 0.71-0.73; smoothed like rates per (user, genre), per movie and per
user (what the wide part's ids and ``user_id × genres`` memorize) 0.63.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

from wdl_tf import atomic
from wdl_tf.datasets import movielens

GENRES = (
    ("Drama", 0.20), ("Comedy", 0.16), ("Thriller", 0.09), ("Action", 0.09),
    ("Romance", 0.08), ("Adventure", 0.06), ("Crime", 0.06), ("Sci-Fi", 0.05),
    ("Horror", 0.05), ("Fantasy", 0.03), ("Children", 0.03), ("Animation", 0.03),
    ("Mystery", 0.02), ("Documentary", 0.02), ("War", 0.01), ("Musical", 0.01),
    ("Western", 0.005), ("Film-Noir", 0.0025), ("IMAX", 0.0025),
)  # fmt: skip

FACTOR_DIM = 8
GENRE_SHARE = 0.4  # share of a movie's factor that comes from its genres
POPULARITY_EXPONENT = 0.9  # popularity of the movie of rank r: (r + 1)^-s
CHOICE_WEIGHT = 1.5  # how much current taste (vs popularity) steers what a user rates
CANDIDATES = 20  # movies drawn by popularity for each rating, one chosen by taste
AFFINITY_WEIGHT = 4.0  # logit of "liked" per unit of taste · factor
QUALITY_STD = 0.5
GENEROSITY_STD = 0.5
BIAS = -0.5
DRIFT_MIN, DRIFT_MAX = 0.2, 0.5  # angle the taste turns over the user's period, × π
RATINGS_PER_USER = 100
RATINGS_PER_MOVIE = 25
FIRST_TIME = 1_104_537_600  # 2005-01-01 UTC: users start between here and START_SPAN later
START_SPAN = 10 * 365 * 86_400
MEDIAN_DAYS = 400  # median length of a user's active period
DEFAULT_ROWS = 60_000


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Simulation:
    """The planted model and the ratings it drew (one entry per rating, users in order)."""

    user: np.ndarray  # 1-based user ids
    movie: np.ndarray  # 1-based movie ids
    stars: np.ndarray  # 0.5 .. 5.0
    time: np.ndarray  # Unix seconds
    logit: np.ndarray  # the planted logit of "liked" (rating >= 4) of each rating
    taste: np.ndarray  # [ratings, FACTOR_DIM]: the user's taste at the rating's time
    factors: np.ndarray  # [movies, FACTOR_DIM]
    quality: np.ndarray  # [movies]
    generosity: np.ndarray  # [users]
    genres: list  # per movie: indices into GENRES
    years: np.ndarray  # [movies]


def simulate(rows: int = DEFAULT_ROWS, seed: int = 0) -> Simulation:
    """Draws the planted model and its ratings; deterministic given (rows, seed)."""
    _check_int("rows", rows, 200)
    _check_int("seed", seed, 0)
    rng = np.random.default_rng([seed, 0xD21F7])
    num_users = max(rows // RATINGS_PER_USER, 2)
    num_movies = max(rows // RATINGS_PER_MOVIE, 20)

    # Movies: genres, factor, popularity, quality, year.
    weights = np.array([w for _, w in GENRES])
    genre_factors = rng.normal(size=(len(GENRES), FACTOR_DIM))
    counts = rng.choice([1, 2, 3], size=num_movies, p=[0.4, 0.4, 0.2])
    movie_genres = [
        rng.choice(len(GENRES), size=c, replace=False, p=weights / weights.sum()) for c in counts
    ]
    from_genres = _unit(np.stack([genre_factors[g].mean(axis=0) for g in movie_genres]))
    own = _unit(rng.normal(size=(num_movies, FACTOR_DIM)))
    factors = _unit(GENRE_SHARE * from_genres + (1 - GENRE_SHARE) * own)
    rank = rng.permutation(num_movies)
    popularity = np.exp(-POPULARITY_EXPONENT * np.log1p(rank))
    popularity /= popularity.sum()
    quality = rng.normal(0.0, QUALITY_STD, num_movies)
    years = np.clip(2015 - rng.gamma(2.0, 8.0, num_movies), 1920, 2015).astype(int)

    # Users: how many ratings, when, and how their taste turns.
    mean_n = rows / num_users
    n = np.maximum(rng.lognormal(math.log(mean_n) - 0.32, 0.8, num_users), 10)
    n = np.maximum(np.round(n * rows / n.sum()), 10).astype(int)
    start = FIRST_TIME + rng.integers(0, START_SPAN, num_users)
    days = np.maximum(rng.lognormal(math.log(MEDIAN_DAYS), 0.8, num_users), 7)
    taste0 = _unit(rng.normal(size=(num_users, FACTOR_DIM)))
    other = rng.normal(size=(num_users, FACTOR_DIM))
    taste1 = _unit(other - np.sum(other * taste0, axis=1, keepdims=True) * taste0)
    drift = rng.uniform(DRIFT_MIN, DRIFT_MAX, num_users) * math.pi
    generosity = rng.normal(0.0, GENEROSITY_STD, num_users)

    out = {k: [] for k in ("user", "movie", "stars", "time", "logit", "taste")}
    for u in range(num_users):
        # Candidates by popularity, then the one the current taste prefers (Gumbel-max);
        # drawn with a margin, as a movie is rated once (its first draw counts).
        draws = int(n[u] * 1.5) + 10
        tau = np.sort(rng.random(draws))
        angle = drift[u] * tau[:, None]
        taste = np.cos(angle) * taste0[u] + np.sin(angle) * taste1[u]
        candidates = rng.choice(num_movies, size=(draws, CANDIDATES), p=popularity)
        affinity = np.einsum("cd,ckd->ck", taste, factors[candidates])
        gumbel = -np.log(-np.log(rng.random(affinity.shape)))
        pick = np.argmax(CHOICE_WEIGHT * affinity + gumbel, axis=1)
        movie = candidates[np.arange(draws), pick]
        first = np.sort(np.unique(movie, return_index=True)[1])
        if first.size > n[u]:
            first = np.sort(rng.choice(first, n[u], replace=False))
        movie, tau, aff = movie[first], tau[first], affinity[first, pick[first]]
        logit = BIAS + AFFINITY_WEIGHT * aff + quality[movie] + generosity[u]
        liked = rng.random(movie.size) < 1.0 / (1.0 + np.exp(-logit))
        out["stars"].append(
            np.where(
                liked,
                rng.choice([4.0, 4.5, 5.0], movie.size, p=[0.5, 0.2, 0.3]),
                rng.choice([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], movie.size),
            )
        )
        out["user"].append(np.full(movie.size, u + 1))
        out["movie"].append(movie + 1)
        out["time"].append(start[u] + np.round(tau * days[u] * 86_400).astype(np.int64))
        out["logit"].append(logit)
        out["taste"].append(taste[first])
    return Simulation(
        **{k: np.concatenate(v) for k, v in out.items()},
        factors=factors,
        quality=quality,
        generosity=generosity,
        genres=movie_genres,
        years=years,
    )


def write_grouplens(directory: str, rows: int = DEFAULT_ROWS, seed: int = 0) -> tuple[str, str]:
    """Writes ``ratings.csv`` and ``movies.csv`` (GroupLens layout) of `simulate`'s ratings.

    Deterministic given (rows, seed). Both files appear atomically.

    Returns:
      (ratings path, movies path).
    """
    sim = simulate(rows, seed)
    os.makedirs(directory, exist_ok=True)
    ratings_path = os.path.join(directory, movielens.RATINGS_FILE)
    movies_path = os.path.join(directory, movielens.MOVIES_FILE)
    columns = zip(*(c.tolist() for c in (sim.user, sim.movie, sim.stars, sim.time)))
    _write_atomic(
        ratings_path,
        movielens.RATINGS_HEADER,
        ([u, m, f"{r:.1f}", t] for u, m, r, t in columns),
    )
    names = [g for g, _ in GENRES]
    _write_atomic(
        movies_path,
        movielens.MOVIES_HEADER,
        (
            [m + 1, f"Movie {m + 1} ({sim.years[m]})", "|".join(names[g] for g in sorted(genres))]
            for m, genres in enumerate(sim.genres)
        ),
    )
    return ratings_path, movies_path


def _write_atomic(path: str, header, rows) -> None:
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)


def get_files(work_dir: str, rows: int = DEFAULT_ROWS, seed: int = 0) -> tuple[str, str]:
    """Writes (or reuses) the GroupLens files and the prepared train.csv/test.csv.

    Under ``<work_dir>/drifting_r<rows>_s<seed>/``; files already there for the same
    arguments are reused (the generator is deterministic).

    Returns:
      (train.csv, test.csv) in the ``movielens`` spec's layout.
    """
    directory = os.path.join(work_dir, f"drifting_r{rows}_s{seed}")
    train = os.path.join(directory, movielens.TRAIN_FILE)
    test = os.path.join(directory, movielens.TEST_FILE)
    if os.path.exists(train) and os.path.exists(test):
        return train, test
    write_grouplens(directory, rows, seed)
    return movielens.prepare(directory, directory)
