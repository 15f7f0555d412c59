"""MovieLens ratings as Wide & Deep examples: "will this user like this movie?".

Reads a GroupLens directory (ml-latest-small, ml-latest, ml-25m, ml-32m: the CSV layout)::

    ratings.csv   userId,movieId,rating,timestamp        (one line per rating)
    movies.csv    movieId,title,genres                   (titles quoted when they hold commas:
                  2,"American President, The (1995)",Comedy|Drama|Romance)

and writes ``train.csv`` and ``test.csv`` in the layout of the ``movielens`` feature spec
(``wdl_tf/specs/movielens.json``): tab-separated, one header line, one rating per line::

    user_id  movie_id  timestamp  genres  release_year  liked_movies  label

* ``genres``: the movie's genres, "|"-joined; "(no genres listed)" is the empty list.
* ``release_year``: the year in the title's trailing "(YYYY)" (the first year of a
  "(YYYY-YYYY)" range); empty when the title has none (the spec then reads its default, 0).
* ``liked_movies``: the movies this user rated >= 4 STRICTLY EARLIER in time than this
  rating (a rating with the same timestamp is not earlier), at most the `MAX_LIKED` = 50
  most recent, oldest first, "|"-joined. The paper's "user installed apps", with no leakage:
  a row never sees its own rating or any rating at or after its time.
* ``label``: 1 when the rating is >= 4 (of 5 stars), else 0.

The split is by time, per user (leave-last-out): each user's ratings are ordered by
(timestamp, movieId); when the user has at least `MIN_RATINGS_FOR_TEST` = 5 ratings, the last
``floor(0.2 * n)`` of them are test rows and the rest train rows; a user with fewer than 5
ratings is all train. So for every user, every test rating is at or after (never before) every
train rating in time; ties in timestamp across the boundary are broken by movieId. A test row's
``liked_movies`` includes the user's earlier *test* ratings: at prediction time a recommender
knows the history up to now. Users are split independently, so one user's train rows may be
later in absolute time than another user's test rows. Titles are not written (not a feature),
so no field can hold a tab; genres are cleaned of tabs and line breaks all the same.

Memory: movies.csv is read whole (small: ~90K movies in ml-32m); ratings.csv is streamed with
the csv module into four typed columns (user, movie, timestamp as int64, rating as float32:
28 bytes per rating, plus 8 for the sort order), so ml-25m needs about 1 GB, not the ~4 GB of
Python tuples. Examples are then generated user by user and streamed to disk.

Rows are written grouped by user (ascending userId), each user's rows in time order; the
training pipeline's shuffle buffer (``--shuffle_buffer``) mixes them, so for the large sets
give it room for a few hundred users' rows.

`load_tfds` builds the same examples from TFDS's ``movielens/*-ratings`` (network needed on the
first call); only on an explicit call.

The MovieLens license forbids redistribution: nothing here ships or downloads the data, and
the tests generate tiny files in the GroupLens layout.
"""

from __future__ import annotations

import array
import collections
import csv
import dataclasses
import math
import os
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from wdl_tf import atomic

RATINGS_FILE = "ratings.csv"
MOVIES_FILE = "movies.csv"
RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
MOVIES_HEADER = ("movieId", "title", "genres")
NO_GENRES = ("(no genres listed)",)

COLUMNS = ("user_id", "movie_id", "timestamp", "genres", "release_year", "liked_movies", "label")
DELIMITER = "\t"
LIST_SEPARATOR = "|"
TRAIN_FILE = "train.csv"
TEST_FILE = "test.csv"

LIKE_THRESHOLD = 4.0  # a rating >= this is "liked" (label 1, and enters liked_movies)
MAX_LIKED = 50  # liked_movies keeps the most recent this many
TEST_FRACTION = 0.2  # each user's last floor(TEST_FRACTION * n) ratings are test rows
MIN_RATINGS_FOR_TEST = 5  # users with fewer ratings are all train

TFDS_DEFAULT = "movielens/latest-small-ratings"

_YEAR_RE = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$")
_CONTROL_RE = re.compile(r"[\t\r\n]+")


@dataclasses.dataclass(frozen=True)
class Movie:
    """One line of movies.csv, parsed."""

    title: str
    genres: tuple[str, ...]
    year: int | None


class Ratings(NamedTuple):
    """All ratings as typed columns (one entry per rating, in file order)."""

    user: np.ndarray  # int64
    movie: np.ndarray  # int64
    rating: np.ndarray  # float32
    timestamp: np.ndarray  # int64 (seconds since the epoch)


@dataclasses.dataclass(frozen=True)
class Example:
    """One rating as a Wide & Deep example, with its split.

    ``liked_movies`` holds movie ids, oldest first; ``release_year`` is None when unknown.
    """

    split: str  # "train" or "test"
    user_id: int
    movie_id: int
    timestamp: int
    rating: float
    genres: tuple[str, ...]
    release_year: int | None
    liked_movies: tuple[int, ...]

    @property
    def label(self) -> int:
        return int(self.rating >= LIKE_THRESHOLD)

    def to_row(self) -> list[str]:
        """The fields of `COLUMNS`, as written to train.csv/test.csv."""
        return [
            str(self.user_id),
            str(self.movie_id),
            str(self.timestamp),
            LIST_SEPARATOR.join(self.genres),
            "" if self.release_year is None else str(self.release_year),
            LIST_SEPARATOR.join(str(m) for m in self.liked_movies),
            str(self.label),
        ]


# ----------------------------------------------------------------------------------------
# Parsing.


def parse_year(title: str) -> int | None:
    """The release year in a title's trailing "(YYYY)" or "(YYYY-YYYY)"; None if absent."""
    match = _YEAR_RE.search(title)
    return int(match.group(1)) if match else None


def parse_genres(text: str) -> tuple[str, ...]:
    """ "A|B|C" → ("A", "B", "C"); "(no genres listed)" and "" → ()."""
    out = []
    for g in text.split(LIST_SEPARATOR):
        g = _CONTROL_RE.sub(" ", g).strip()
        if g and g not in NO_GENRES:
            out.append(g)
    return tuple(out)


def _check_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MovieLens {what} file {path!r} does not exist (expected the GroupLens CSV layout: "
            f"{RATINGS_FILE} and {MOVIES_FILE}, e.g. from ml-latest-small.zip)"
        )


def _check_header(path: str, row: list[str] | None, expected: tuple[str, ...]) -> None:
    if row is None or tuple(c.strip() for c in row) != expected:
        raise ValueError(
            f"{path}:1: expected the header {','.join(expected)!r}, got "
            f"{'an empty file' if row is None else repr(','.join(row))}"
        )


def _int(path: str, line: int, name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{path}:{line}: {name} {value!r} is not an integer") from None


def read_movies(path: str) -> dict[int, Movie]:
    """movies.csv (read whole: it is small) as {movieId: Movie}."""
    _check_file(path, "movies")
    movies = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        _check_header(path, next(reader, None), MOVIES_HEADER)
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != 3:
                raise ValueError(f"{path}:{line}: expected 3 fields, got {len(row)}: {row!r}")
            title = row[1].strip()
            movies[_int(path, line, "movieId", row[0])] = Movie(
                title, parse_genres(row[2]), parse_year(title)
            )
    return movies


def read_ratings(path: str) -> Ratings:
    """ratings.csv streamed row by row into typed columns (28 bytes per rating)."""
    _check_file(path, "ratings")
    user, movie, ts = array.array("q"), array.array("q"), array.array("q")
    rating = array.array("f")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        _check_header(path, next(reader, None), RATINGS_HEADER)
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != 4:
                raise ValueError(f"{path}:{line}: expected 4 fields, got {len(row)}: {row!r}")
            user.append(_int(path, line, "userId", row[0]))
            movie.append(_int(path, line, "movieId", row[1]))
            try:
                rating.append(float(row[2]))
            except ValueError:
                raise ValueError(f"{path}:{line}: rating {row[2]!r} is not a number") from None
            ts.append(_int(path, line, "timestamp", row[3]))
    return Ratings(
        np.frombuffer(user, dtype=np.int64),
        np.frombuffer(movie, dtype=np.int64),
        np.frombuffer(rating, dtype=np.float32),
        np.frombuffer(ts, dtype=np.int64),
    )


# ----------------------------------------------------------------------------------------
# Examples.


def num_test(
    n: int, test_fraction: float = TEST_FRACTION, min_ratings: int = MIN_RATINGS_FOR_TEST
) -> int:
    """Test rows of a user with ``n`` ratings: floor(test_fraction * n), or 0 if n < min."""
    if n < min_ratings:
        return 0
    return math.floor(n * test_fraction + 1e-9)


def examples(
    ratings: Ratings,
    movies: dict[int, Movie],
    *,
    max_liked: int = MAX_LIKED,
    test_fraction: float = TEST_FRACTION,
    min_ratings_for_test: int = MIN_RATINGS_FOR_TEST,
) -> Iterator[Example]:
    """Every rating as an Example (module docstring: split and liked_movies rules).

    Yields users in ascending id order, each user's ratings ordered by (timestamp, movieId).
    A movie missing from ``movies`` gets no genres and no year.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: must be in [0, 1), got {test_fraction}")
    if max_liked < 0:
        raise ValueError(f"max_liked: must be >= 0, got {max_liked}")
    if min_ratings_for_test < 1:
        raise ValueError(f"min_ratings_for_test: must be >= 1, got {min_ratings_for_test}")
    return _generate(ratings, movies, max_liked, test_fraction, min_ratings_for_test)


def _generate(
    ratings: Ratings,
    movies: dict[int, Movie],
    max_liked: int,
    test_fraction: float,
    min_ratings_for_test: int,
) -> Iterator[Example]:
    if len(ratings.user) == 0:
        return
    order = np.lexsort((ratings.movie, ratings.timestamp, ratings.user))
    users = ratings.user[order]
    starts = [0, *(np.flatnonzero(np.diff(users)) + 1).tolist(), len(users)]
    unknown = Movie("", (), None)
    for a, b in zip(starts[:-1], starts[1:]):
        idx = order[a:b]
        user = int(users[a])
        movie_ids = ratings.movie[idx].tolist()
        stars = ratings.rating[idx].tolist()
        times = ratings.timestamp[idx].tolist()
        n = len(movie_ids)
        cut = n - num_test(n, test_fraction, min_ratings_for_test)
        liked: collections.deque[int] = collections.deque(maxlen=max_liked)
        i = 0
        while i < n:
            j = i  # [i, j): the ratings sharing timestamp times[i]
            while j < n and times[j] == times[i]:
                j += 1
            history = tuple(liked)  # only ratings strictly earlier than times[i]
            for k in range(i, j):
                movie = movies.get(movie_ids[k], unknown)
                yield Example(
                    split="test" if k >= cut else "train",
                    user_id=user,
                    movie_id=movie_ids[k],
                    timestamp=times[k],
                    rating=stars[k],
                    genres=movie.genres,
                    release_year=movie.year,
                    liked_movies=history,
                )
            if max_liked:
                liked.extend(movie_ids[k] for k in range(i, j) if stars[k] >= LIKE_THRESHOLD)
            i = j


def write_examples(examples_: Iterable[Example], out_dir: str) -> tuple[str, str]:
    """Streams examples to ``out_dir``/train.csv and test.csv; both appear atomically."""
    paths = {"train": os.path.join(out_dir, TRAIN_FILE), "test": os.path.join(out_dir, TEST_FILE)}
    # Both are renamed into place only when every example is written (test.csv first).
    with (
        atomic.atomic_path(paths["train"]) as train_tmp,
        atomic.atomic_path(paths["test"]) as test_tmp,
        open(train_tmp, "w", encoding="utf-8", newline="\n") as train,
        open(test_tmp, "w", encoding="utf-8", newline="\n") as test,
    ):
        files = {"train": train, "test": test}
        for f in files.values():
            f.write(DELIMITER.join(COLUMNS) + "\n")
        for ex in examples_:
            files[ex.split].write(DELIMITER.join(ex.to_row()) + "\n")
    return paths["train"], paths["test"]


def prepare(
    data_dir: str,
    out_dir: str,
    *,
    max_liked: int = MAX_LIKED,
    test_fraction: float = TEST_FRACTION,
    min_ratings_for_test: int = MIN_RATINGS_FOR_TEST,
) -> tuple[str, str]:
    """GroupLens ``data_dir`` (ratings.csv, movies.csv) → (train.csv, test.csv) in ``out_dir``.

    Raises:
      FileNotFoundError: data_dir or one of its files is missing (the message names the path).
      ValueError: a malformed line (file and line named).
    """
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"MovieLens data_dir {data_dir!r} does not exist")
    ratings_path = os.path.join(data_dir, RATINGS_FILE)
    movies_path = os.path.join(data_dir, MOVIES_FILE)
    _check_file(ratings_path, "ratings")
    _check_file(movies_path, "movies")
    movies = read_movies(movies_path)
    ratings = read_ratings(ratings_path)
    return write_examples(
        examples(
            ratings,
            movies,
            max_liked=max_liked,
            test_fraction=test_fraction,
            min_ratings_for_test=min_ratings_for_test,
        ),
        out_dir,
    )


def count_rows(path: str) -> int:
    """Data rows of a written train/test file (lines after the header)."""
    with open(path, "rb") as f:
        return max(sum(1 for _ in f) - 1, 0)


# ----------------------------------------------------------------------------------------
# TFDS.


def load_tfds(
    name: str = TFDS_DEFAULT,
    data_dir: str | None = None,
    *,
    max_liked: int = MAX_LIKED,
    test_fraction: float = TEST_FRACTION,
    min_ratings_for_test: int = MIN_RATINGS_FOR_TEST,
) -> Iterator[Example]:
    """The same examples from TFDS's MovieLens ratings (``movielens/<config>-ratings``).

    Calls ``tfds.load(name, split="train", data_dir=data_dir)``: the first call downloads and
    builds the dataset (network needed), later ones read ``data_dir``'s copy. TFDS ids are
    numeric strings and genres class labels; both become what `prepare` writes. To write the
    CSV files: ``write_examples(load_tfds(), out_dir)``.

    Raises:
      RuntimeError: tfds.load failed (no network, unknown name, ...), with the cause.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        ds, info = tfds.load(
            name, split="train", data_dir=data_dir, shuffle_files=False, with_info=True
        )
    except Exception as e:
        raise RuntimeError(
            f"tfds.load({name!r}, data_dir={data_dir!r}) failed: {type(e).__name__}: {e}. "
            "The first load downloads MovieLens from GroupLens (network needed); without a "
            f"network, download a GroupLens zip elsewhere and use prepare(data_dir, out_dir)"
        ) from e
    names = tf.constant(list(info.features["movie_genres"].feature.names))

    def scalars(x):
        genres = tf.strings.reduce_join(tf.gather(names, x["movie_genres"]), separator="|")
        return {
            "user_id": x["user_id"],
            "movie_id": x["movie_id"],
            "user_rating": x["user_rating"],
            "timestamp": x["timestamp"],
            "movie_title": x["movie_title"],
            "genres": genres,
        }

    cols: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    movies: dict[int, Movie] = {}
    for batch in tfds.as_numpy(ds.map(scalars).batch(65_536)):
        movie_ids = batch["movie_id"].astype(np.int64)
        cols["user"].append(batch["user_id"].astype(np.int64))
        cols["movie"].append(movie_ids)
        cols["rating"].append(batch["user_rating"].astype(np.float32))
        cols["timestamp"].append(batch["timestamp"].astype(np.int64))
        _, first = np.unique(movie_ids, return_index=True)
        for i in first.tolist():
            if int(movie_ids[i]) not in movies:
                title = batch["movie_title"][i].decode("utf-8", "replace").strip()
                genres = parse_genres(batch["genres"][i].decode("utf-8", "replace"))
                movies[int(movie_ids[i])] = Movie(title, genres, parse_year(title))
    ratings = Ratings(
        *(
            np.concatenate(cols[k]) if cols[k] else np.zeros(0, dtype)
            for k, dtype in (
                ("user", np.int64),
                ("movie", np.int64),
                ("rating", np.float32),
                ("timestamp", np.int64),
            )
        )
    )
    return examples(
        ratings,
        movies,
        max_liked=max_liked,
        test_fraction=test_fraction,
        min_ratings_for_test=min_ratings_for_test,
    )
