"""The Criteo display-ads layout: its feature spec, and synthetic files in that layout.

Criteo's click logs (the Kaggle Display Advertising Challenge and the 1TB Click Logs) are the
standard CTR benchmark. One impression per line, tab-separated, no header, 40 fields::

    label  I1 .. I13  C1 .. C26

``label`` is 0/1 (clicked), ``I1``..``I13`` are integer counts (may be negative; empty =
missing) and ``C1``..``C26`` categorical ids that Criteo hashed to 8 hex digits
(``68fd1e64``; empty = missing). The ``criteo`` preset (``wdl_tf/specs/criteo.json``) reads
real files; `spec` changes its hash buckets (benchmarks compare 10K vs 1M per feature).

`write_synthetic` writes files in exactly that layout, with learnable labels from a planted
logistic model that has both kinds of signal the paper names: *generalization* (smooth effects
of a few counts, and a fixed weight per token of a few categorical columns, so a token's
effect carries over from training to evaluation) and *memorization* (specific C3 × C4 pairs
that sharply raise the click rate, learnable through the wide C3 × C4 cross). Rows are
generated in fixed blocks of `BLOCK_ROWS`, each with its own random stream seeded by
(seed, file, block), and streamed to disk: any number of rows in bounded memory, and the
first N rows of a file do not depend on how many rows follow.
"""

from __future__ import annotations

import gzip
import json
import os

import numpy as np

from wdl_tf import atomic
from wdl_tf import features as fs

INT_COLUMNS = tuple(f"I{i}" for i in range(1, 14))
CAT_COLUMNS = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = ("label", *INT_COLUMNS, *CAT_COLUMNS)

# Distinct values per categorical column in the Kaggle training set: a synthetic column has
# min(this, vocab_size) tokens, so some columns are tiny (C9: 3) and some huge (C3: 10M).
# fmt: off
CARDINALITY = (
    1460, 583, 10_131_227, 2_202_608, 305, 24, 12_517, 633, 3, 93_145, 5683, 8_351_593, 3194,
    27, 14_992, 5_461_306, 10, 5652, 2173, 4, 7_046_547, 18, 15, 286_181, 105, 142_572,
)
# (mu, sigma) of the lognormal whose floor is each integer column: skewed nonnegative counts.
INT_LOGNORMAL = (
    (0.5, 1.2), (2.0, 1.5), (1.5, 1.3), (1.2, 1.0), (6.0, 2.0), (2.5, 1.5), (1.0, 1.2),
    (2.2, 1.0), (3.0, 1.4), (0.2, 0.8), (1.0, 1.0), (0.1, 1.0), (1.5, 1.1),
)
# fmt: on
ZIPF_EXPONENT = 1.2
BLOCK_ROWS = 8192  # rows per random block: the unit of generation and of writing

# The planted model. Token weights: columns with a fixed weight per token (generalization).
WEIGHTED_COLUMNS = ("C2", "C5", "C6", "C11")
TOKEN_WEIGHT_SCALE = 1.2
# Memorization: a quarter of the pairs of the 10 most frequent C3 and C4 tokens.
PAIR_COLUMNS = ("C3", "C4")
PAIR_TOP_RANKS = 10
PAIR_WEIGHT = 2.5
BIAS = -2.2  # puts the positive rate near 25% at the default settings

_M32 = 0xFFFFFFFF
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)


def spec(hash_buckets: int = 10_000, cross_buckets: int | None = None) -> fs.FeatureSpec:
    """The ``criteo`` preset with every categorical's hash buckets set to ``hash_buckets``.

    Args:
      hash_buckets: hash buckets of each of C1..C26.
      cross_buckets: hash buckets of each cross; None = ``hash_buckets``.

    Raises:
      FeatureSpecError: for a bucket count that is not a positive integer (naming the field).
    """
    with open(os.path.join(fs.SPEC_DIR, "criteo.json")) as f:
        obj = json.load(f)
    for feature in obj["features"]:
        if feature["kind"] != fs.NUMERIC:
            feature["hash_buckets"] = hash_buckets
    for cross in obj.get("crosses", []):
        cross["hash_buckets"] = hash_buckets if cross_buckets is None else cross_buckets
    return fs.from_dict(obj)


# ----------------------------------------------------------------------------------------
# Tokens and the planted model.


def _mix32(x: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finalizer: a bijection of uint32 that scatters nearby inputs."""
    x = np.array(x, dtype=np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


def _token_ids(column: int, ranks: np.ndarray) -> np.ndarray:
    """uint32 token of (column index, rank): distinct ranks of a column never collide."""
    offset = np.uint32(((column + 1) * 0x9E3779B9) & _M32)
    return _mix32(np.asarray(ranks, dtype=np.uint32) + offset)


def _hex8(ids: np.ndarray) -> np.ndarray:
    """uint32 ids as 8-hex-digit byte strings (dtype S8), vectorized."""
    digits = (ids.astype(np.uint32)[:, None] >> _HEX_SHIFTS) & np.uint32(0xF)
    return np.ascontiguousarray(_HEX[digits]).view("S8").reshape(-1)


def token(column: str, rank: int) -> str:
    """The 8-hex-digit token of a categorical column's ``rank``-th most likely value (from 1)."""
    ids = _token_ids(CAT_COLUMNS.index(column), np.array([rank]))
    return _hex8(ids)[0].decode()


def _unit(column: int, ranks: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per (column, rank, salt)."""
    return _mix32(_token_ids(column, ranks) ^ np.uint32(salt & _M32)) / 2.0**32


def token_weight(column: str, ranks: np.ndarray) -> np.ndarray:
    """The planted logit weight of the tokens of ``ranks`` in a `WEIGHTED_COLUMNS` column."""
    u = _unit(CAT_COLUMNS.index(column), np.asarray(ranks), salt=0x5EED)
    return TOKEN_WEIGHT_SCALE * (2.0 * u - 1.0)


def planted_pair(rank_a: np.ndarray, rank_b: np.ndarray) -> np.ndarray:
    """Whether the (C3 rank, C4 rank) pair is one of the memorized high-click pairs."""
    rank_a, rank_b = np.asarray(rank_a), np.asarray(rank_b)
    a = _token_ids(CAT_COLUMNS.index(PAIR_COLUMNS[0]), rank_a)
    h = _mix32(a ^ _mix32(_token_ids(CAT_COLUMNS.index(PAIR_COLUMNS[1]), rank_b)))
    top = (rank_a <= PAIR_TOP_RANKS) & (rank_b <= PAIR_TOP_RANKS)
    return top & (h % np.uint32(4) == 0)


def _logit(ints: np.ndarray, ranks: np.ndarray, cat_missing: np.ndarray) -> np.ndarray:
    """The planted model's logit; missing counts act as 0, missing tokens have no weight."""
    c = {name: j for j, name in enumerate(CAT_COLUMNS)}
    log_count = np.log1p(ints.astype(np.float64))
    z = (
        BIAS
        + 0.6 * (log_count[:, 0] - 0.6)  # I1: more is better
        - 0.4 * (log_count[:, 2] - 1.6)  # I3: more is worse
        - 0.3 * (log_count[:, 5] - 2.5) ** 2  # I6: a sweet spot (not monotonic)
        + 0.15 * (log_count[:, 4] - 6.0)  # I5
    )
    for name in WEIGHTED_COLUMNS:
        j = c[name]
        z += np.where(cat_missing[:, j], 0.0, token_weight(name, ranks[:, j]))
    a, b = c[PAIR_COLUMNS[0]], c[PAIR_COLUMNS[1]]
    pair = planted_pair(ranks[:, a], ranks[:, b]) & ~cat_missing[:, a] & ~cat_missing[:, b]
    return z + PAIR_WEIGHT * pair


def _block(rng: np.random.Generator, n: int, vocab_size: int, missing_rate: float):
    """One block of n rows: labels, counts, ranks and the missing masks (fixed draw order)."""
    ranks = rng.zipf(ZIPF_EXPONENT, size=(n, len(CAT_COLUMNS)))
    cards = np.minimum(np.array(CARDINALITY, dtype=np.int64), vocab_size)
    ranks = (ranks - 1) % cards + 1  # fold the tail back onto the column's tokens
    mu, sigma = np.array(INT_LOGNORMAL).T
    ints = np.floor(rng.lognormal(mu, sigma, size=(n, len(INT_COLUMNS)))).astype(np.int64)
    int_missing = rng.random((n, len(INT_COLUMNS))) < missing_rate
    cat_missing = rng.random((n, len(CAT_COLUMNS))) < missing_rate
    ints[int_missing] = 0
    label = rng.random(n) < 1.0 / (1.0 + np.exp(-_logit(ints, ranks, cat_missing)))
    return label, ints, int_missing, ranks, cat_missing


def _format(label, ints, int_missing, ranks, cat_missing) -> bytes:
    """Rows as tab-separated lines (bytes), missing fields empty."""
    columns = [np.where(label, b"1", b"0").tolist()]
    text = ints.astype("S20")
    text[int_missing] = b""
    columns += [text[:, k].tolist() for k in range(text.shape[1])]
    for j in range(len(CAT_COLUMNS)):
        hexes = _hex8(_token_ids(j, ranks[:, j])).astype("S8")
        hexes[cat_missing[:, j]] = b""
        columns.append(hexes.tolist())
    return b"".join(line + b"\n" for line in map(b"\t".join, zip(*columns)))


# ----------------------------------------------------------------------------------------
# Files.


def _write_file(path, rows, seed, file_index, vocab_size, missing_rate, compress) -> None:
    with atomic.atomic_path(path) as tmp:
        with gzip.open(tmp, "wb", compresslevel=6) if compress else open(tmp, "wb") as f:
            for block, start in enumerate(range(0, rows, BLOCK_ROWS)):
                rng = np.random.default_rng([seed, file_index, block])
                arrays = _block(rng, BLOCK_ROWS, vocab_size, missing_rate)
                keep = min(BLOCK_ROWS, rows - start)
                f.write(_format(*(a[:keep] for a in arrays)))


def write_synthetic(
    directory: str,
    rows: int,
    seed: int = 0,
    num_files: int = 1,
    vocab_size: int = 100_000,
    missing_rate: float = 0.02,
    compress: bool = False,
    name: str = "criteo_synthetic",
) -> list[str]:
    """Writes ``rows`` synthetic rows in the Criteo layout over ``num_files`` files.

    Each file is written to ``<path>.tmp-<pid>`` and renamed when complete. Deterministic
    given the arguments. Categorical ranks are Zipf-distributed (exponent 1.2) over
    min(`CARDINALITY`, ``vocab_size``) tokens per column; counts are floored lognormals;
    every integer and categorical field is missing (empty) with probability ``missing_rate``.

    Args:
      directory: where to write (created if needed).
      rows: total rows, split as evenly as possible over the files.
      seed: seed of the random streams (a nonnegative integer).
      num_files: number of files.
      vocab_size: cap on the number of distinct tokens per categorical column.
      missing_rate: probability of each integer/categorical field being empty.
      compress: gzip the files (names end in ``.gz``).
      name: file name prefix.

    Returns:
      The paths, ``<directory>/<name>_<rows>_<seed>-<i>-of-<num_files>.tsv[.gz]``.
    """
    for arg, value, minimum in (
        ("rows", rows, 1),
        ("num_files", num_files, 1),
        ("vocab_size", vocab_size, 1),
        ("seed", seed, 0),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{arg}: must be an integer >= {minimum}, got {value!r}")
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate: must be in [0, 1), got {missing_rate!r}")
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(num_files):
        n = rows // num_files + (1 if i < rows % num_files else 0)
        path = os.path.join(
            directory,
            f"{name}_{rows}_{seed}-{i:05d}-of-{num_files:05d}.tsv" + (".gz" if compress else ""),
        )
        _write_file(path, n, seed, i, vocab_size, missing_rate, compress)
        paths.append(path)
    return paths


def write_twin(directory: str, rows: int = 4000, seed: int = 0) -> tuple[str, str]:
    """Writes (or reuses) a train file of ``rows`` rows and an eval file of ``rows // 4``.

    The splits use the disjoint random streams of seeds ``2 * seed`` and ``2 * seed + 1``;
    the ``criteo_synthetic`` dataset. Returns (train path, eval path).
    """
    if rows < 10:
        raise ValueError(f"synthetic_rows: must be >= 10, got {rows}")
    paths = []
    for split, n, split_seed in (("train", rows, 2 * seed), ("eval", rows // 4, 2 * seed + 1)):
        name = f"criteo_synthetic_{split}"
        path = os.path.join(directory, f"{name}_{n}_{split_seed}-00000-of-00001.tsv")
        if not os.path.exists(path):
            path = write_synthetic(directory, n, split_seed, name=name)[0]
        paths.append(path)
    return paths[0], paths[1]
