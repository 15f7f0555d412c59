"""MovieLens: GroupLens files → examples with a per-user time split and leakage-free
liked_movies, checked by hand on a tiny dataset; the files parse with the movielens spec and
train end to end. No real MovieLens data is used (its license forbids redistribution): every
file here is generated in the GroupLens layout."""

from __future__ import annotations

import csv
import math
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_script

from wdl_tf import config as config_lib
from wdl_tf import features as fs
from wdl_tf import input_pipeline as ip
from wdl_tf import model as model_lib
from wdl_tf import train_lib
from wdl_tf.datasets import movielens as ml

MOVIES = """\
movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"American President, The (1995)",Comedy|Drama|Romance
3,Untitled Short,(no genres listed)
4,Heat (1995),Action|Crime|Thriller
5,"Matrix, The (1999)",Action|Sci-Fi
6,Babylon 5 (1994-1998),Drama|Sci-Fi
8,Spirited Away (2001) ,Animation
9,"Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) (1966)",Western
10,Alien (1979),Horror|Sci-Fi
11,Heat (1986),Action
"""
# Movie 7 is rated but missing from movies.csv. Lines are in no particular order.
# (user, movie, rating, timestamp)
RATINGS = [
    (10, 5, 4.0, 1005),
    (1, 6, 1.0, 400),
    (2, 7, 5.0, 70),
    (1, 3, 2.0, 200),
    (10, 8, 4.0, 1000),
    (10, 1, 4.0, 1001),
    (1, 1, 5.0, 100),
    (10, 11, 4.5, 1007),
    (10, 2, 1.0, 1002),
    (1, 5, 3.5, 300),
    (10, 3, 5.0, 1003),
    (2, 5, 4.0, 50),
    (10, 10, 5.0, 1008),
    (1, 2, 4.0, 200),
    (10, 4, 2.0, 1004),
    (10, 9, 4.0, 1007),
    (2, 1, 3.0, 60),
    (10, 6, 3.0, 1006),
    (1, 4, 4.5, 300),
]

# What the rules give, worked out by hand: (split, user, movie, liked_movies, label).
# User 1 (6 ratings): floor(0.2 * 6) = 1 test row. Movies 2 and 3 share t=200 and movies 4
# and 5 share t=300: a rating at the same time is not "earlier".
# User 2 (3 ratings < 5): all train.
# User 10 (10 ratings): floor(0.2 * 10) = 2 test rows. Movies 9 and 11 share t=1007; the
# order (timestamp, movieId) puts 9 in train and 11 in test. Movie 10's history includes
# movie 11, an earlier *test* rating (known at prediction time).
EXPECTED = [
    ("train", 1, 1, (), 1),
    ("train", 1, 2, (1,), 1),
    ("train", 1, 3, (1,), 0),
    ("train", 1, 4, (1, 2), 1),
    ("train", 1, 5, (1, 2), 0),
    ("test", 1, 6, (1, 2, 4), 0),
    ("train", 2, 5, (), 1),
    ("train", 2, 1, (5,), 0),
    ("train", 2, 7, (5,), 1),
    ("train", 10, 8, (), 1),
    ("train", 10, 1, (8,), 1),
    ("train", 10, 2, (8, 1), 0),
    ("train", 10, 3, (8, 1), 1),
    ("train", 10, 4, (8, 1, 3), 0),
    ("train", 10, 5, (8, 1, 3), 1),
    ("train", 10, 6, (8, 1, 3, 5), 0),
    ("train", 10, 9, (8, 1, 3, 5), 1),
    ("test", 10, 11, (8, 1, 3, 5), 1),
    ("test", 10, 10, (8, 1, 3, 5, 9, 11), 1),
]
GENRES = {
    1: "Adventure|Animation|Children|Comedy|Fantasy",
    2: "Comedy|Drama|Romance",
    3: "",
    4: "Action|Crime|Thriller",
    5: "Action|Sci-Fi",
    6: "Drama|Sci-Fi",
    7: "",
    8: "Animation",
    9: "Western",
    10: "Horror|Sci-Fi",
    11: "Action",
}
YEARS = {1: 1995, 2: 1995, 3: None, 4: 1995, 5: 1999, 6: 1994, 7: None, 8: 2001, 9: 1966}
YEARS.update({10: 1979, 11: 1986})


def write_grouplens(directory, ratings=RATINGS, movies=MOVIES) -> str:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "movies.csv"), "w", newline="") as f:
        f.write(movies)
    with open(os.path.join(directory, "ratings.csv"), "w", newline="") as f:
        f.write("userId,movieId,rating,timestamp\n")
        for user, movie, rating, ts in ratings:
            f.write(f"{user},{movie},{rating:.1f},{ts}\n")
    return str(directory)


def read_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        assert tuple(header) == ml.COLUMNS
        return [dict(zip(header, row, strict=True)) for row in reader]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("movielens")
    data_dir = write_grouplens(tmp / "ml")
    train, test = ml.prepare(data_dir, str(tmp / "out"))
    return train, test


def _expected_rows(split):
    return [
        {
            "user_id": str(user),
            "movie_id": str(movie),
            "genres": GENRES[movie],
            "release_year": "" if YEARS[movie] is None else str(YEARS[movie]),
            "liked_movies": "|".join(str(m) for m in liked),
            "label": str(label),
        }
        for s, user, movie, liked, label in EXPECTED
        if s == split
    ]


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_liked_movies_labels_genres_and_years_by_hand(prepared, split):
    train, test = prepared
    rows = read_rows(train if split == "train" else test)
    got = [{k: v for k, v in row.items() if k != "timestamp"} for row in rows]
    assert got == _expected_rows(split)


def test_files_are_written_atomically_with_the_expected_names(prepared):
    train, test = prepared
    out = os.path.dirname(train)
    assert (os.path.basename(train), os.path.basename(test)) == ("train.csv", "test.csv")
    assert sorted(os.listdir(out)) == ["test.csv", "train.csv"]  # no .tmp file left
    assert (ml.count_rows(train), ml.count_rows(test)) == (16, 3)


def test_no_leakage_and_time_order_on_a_random_dataset():
    """The rules as invariants, on random ratings with many timestamp ties."""
    rng = np.random.default_rng(0)
    n = 3000
    ratings = ml.Ratings(
        user=rng.integers(1, 60, n).astype(np.int64),
        movie=rng.permutation(n).astype(np.int64),  # distinct movies: unique (user, movie)
        rating=(rng.integers(1, 11, n) / 2).astype(np.float32),
        timestamp=rng.integers(0, 40, n).astype(np.int64),
    )
    by_user: dict[int, list[ml.Example]] = {}
    for ex in ml.examples(ratings, {}, max_liked=7):
        by_user.setdefault(ex.user_id, []).append(ex)
    assert sum(len(v) for v in by_user.values()) == n
    assert list(by_user) == sorted(by_user)
    for user, exs in by_user.items():
        k = len(exs)
        n_test = 0 if k < 5 else math.floor(0.2 * k)
        assert [e.split for e in exs] == ["train"] * (k - n_test) + ["test"] * n_test
        train_times = [e.timestamp for e in exs if e.split == "train"]
        test_times = [e.timestamp for e in exs if e.split == "test"]
        if test_times:
            assert max(train_times) <= min(test_times)
        for e in exs:
            earlier = sorted(
                (o.timestamp, o.movie_id) for o in exs if o.timestamp < e.timestamp and o.label
            )
            assert e.liked_movies == tuple(m for _, m in earlier[-7:]), (user, e)
            assert e.label == int(e.rating >= 4)


@pytest.mark.parametrize(
    "n, expected", [(1, 0), (4, 0), (5, 1), (9, 1), (10, 2), (14, 2), (15, 3), (100, 20)]
)
def test_num_test_is_floor_of_a_fifth_from_five_ratings(n, expected):
    assert ml.num_test(n) == expected


def test_liked_movies_are_capped_to_the_most_recent(tmp_path):
    ratings = ml.read_ratings(os.path.join(write_grouplens(tmp_path), "ratings.csv"))
    exs = list(ml.examples(ratings, {}, max_liked=2))
    assert [e.liked_movies for e in exs if e.user_id == 10][-1] == (9, 11)
    assert all(e.liked_movies == () for e in ml.examples(ratings, {}, max_liked=0))


def test_parse_year_and_genres():
    assert ml.parse_year("Toy Story (1995)") == 1995
    assert ml.parse_year("Hamlet (2000) ") == 2000
    assert ml.parse_year("Babylon 5 (1994-1998)") == 1994
    assert ml.parse_year("1984 (1984)") == 1984
    assert ml.parse_year("Untitled Short") is None
    assert ml.parse_year("The Year 2000") is None
    assert ml.parse_genres("(no genres listed)") == ()
    assert ml.parse_genres("Action|Sci-Fi") == ("Action", "Sci-Fi")
    assert ml.parse_genres("Odd\tGenre") == ("Odd Genre",)


def test_read_movies_handles_quoted_titles(tmp_path):
    movies = ml.read_movies(os.path.join(write_grouplens(tmp_path), "movies.csv"))
    assert movies[2] == ml.Movie(
        "American President, The (1995)", tuple(GENRES[2].split("|")), 1995
    )
    assert movies[3] == ml.Movie("Untitled Short", (), None)
    assert movies[8].title == "Spirited Away (2001)" and movies[8].year == 2001
    assert movies[9].year == 1966 and movies[9].genres == ("Western",)
    assert 7 not in movies


def test_output_parses_with_the_movielens_spec(prepared):
    spec = fs.preset("movielens")
    assert spec.csv.columns == ml.COLUMNS
    # One file at a time: read_raw interleaves the lines of several files.
    batches = [next(iter(ip.read_raw(spec, p, ip.ReadOptions(batch_size=100)))) for p in prepared]
    raw = {k: tf.concat([b[0][k] for b in batches], 0) for k in spec.feature_names}
    labels = tf.concat([b[1] for b in batches], 0)
    expected = [r for r in EXPECTED if r[0] == "train"] + [r for r in EXPECTED if r[0] == "test"]
    text = lambda name: [v.decode() for v in raw[name].numpy().reshape(-1)]  # noqa: E731
    assert text("user_id") == [str(r[1]) for r in expected]
    assert text("movie_id") == [str(r[2]) for r in expected]
    assert text("genres") == [GENRES[r[2]] for r in expected]
    assert text("liked_movies") == ["|".join(map(str, r[3])) for r in expected]
    # A missing year reads as the spec's default (0), which lands in its own bucket (< 1900).
    years = raw["release_year"].numpy().reshape(-1).tolist()
    assert years == [float(YEARS[r[2]] or 0) for r in expected]
    assert labels.numpy().reshape(-1).tolist() == [float(r[4]) for r in expected]


def test_missing_paths_are_named(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=f"data_dir '{missing}' does not exist"):
        ml.prepare(missing, str(tmp_path / "out"))
    data_dir = write_grouplens(tmp_path / "ml")
    for name in ("ratings.csv", "movies.csv"):
        path = os.path.join(data_dir, name)
        os.rename(path, path + ".bak")
        with pytest.raises(FileNotFoundError, match=f"file '{path}' does not exist"):
            ml.prepare(data_dir, str(tmp_path / "out"))
        os.rename(path + ".bak", path)
    assert not os.path.exists(tmp_path / "out" / "train.csv")


def test_malformed_files_name_the_line(tmp_path):
    data_dir = write_grouplens(tmp_path)
    ratings = os.path.join(data_dir, "ratings.csv")
    with open(ratings, "a") as f:
        f.write("3,1,x,5\n")
    with pytest.raises(ValueError, match=r"ratings.csv:21: rating 'x' is not a number"):
        ml.prepare(data_dir, str(tmp_path / "out"))
    with open(ratings, "w") as f:
        f.write("user,movie,rating,timestamp\n1,1,4.0,1\n")
    with pytest.raises(ValueError, match=r"ratings.csv:1: expected the header"):
        ml.prepare(data_dir, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def _run_script(*flags):
    return run_script("prepare_movielens", *flags, timeout=120)


@pytest.mark.slow
def test_script_prints_files_and_counts_and_exits_2_on_missing_files(tmp_path):
    data_dir = write_grouplens(tmp_path / "ml")
    out = tmp_path / "out"
    proc = _run_script(f"--data_dir={data_dir}", f"--out_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{out}/train.csv: 16 rows" in proc.stdout
    assert f"{out}/test.csv: 3 rows" in proc.stdout
    assert "--feature_spec=movielens" in proc.stdout

    os.remove(os.path.join(data_dir, "movies.csv"))
    proc = _run_script(f"--data_dir={data_dir}", f"--out_dir={out}")
    assert proc.returncode == 2
    assert f"'{data_dir}/movies.csv' does not exist" in proc.stderr


# ----------------------------------------------------------------------------------------
# TFDS, without network: tfds.load is replaced by a dataset in TFDS's movielens format.

TFDS_GENRES = [
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "Unknown", "War", "Western", "(no genres listed)",
]  # fmt: skip


def _fake_tfds_load(movies):
    def load(name, split, data_dir, shuffle_files, with_info):
        assert (name, split, with_info) == ("movielens/latest-small-ratings", "train", True)
        rows = {k: [] for k in ("user_id", "movie_id", "movie_title", "user_rating", "timestamp")}
        genres = []
        for user, movie, rating, ts in RATINGS:
            m = movies.get(movie, ml.Movie("", (), None))
            rows["user_id"].append(str(user))
            rows["movie_id"].append(str(movie))
            rows["movie_title"].append(m.title)
            rows["user_rating"].append(rating)
            rows["timestamp"].append(ts)
            names = m.genres or (("(no genres listed)",) if movie == 3 else ())
            genres.append([TFDS_GENRES.index(g) for g in names])
        ds = tf.data.Dataset.from_tensor_slices(
            {
                **{k: tf.constant(v) for k, v in rows.items() if k != "user_rating"},
                "user_rating": tf.constant(rows["user_rating"], tf.float32),
                "movie_genres": tf.ragged.constant(genres, dtype=tf.int64),
            }
        )
        feature = types.SimpleNamespace(names=TFDS_GENRES)
        info = types.SimpleNamespace(
            features={"movie_genres": types.SimpleNamespace(feature=feature)}
        )
        return ds, info

    return load


def test_load_tfds_gives_the_same_examples(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    data_dir = write_grouplens(tmp_path)
    movies = ml.read_movies(os.path.join(data_dir, "movies.csv"))
    monkeypatch.setattr(tfds, "load", _fake_tfds_load(movies))
    got = list(ml.load_tfds())
    expected = list(ml.examples(ml.read_ratings(os.path.join(data_dir, "ratings.csv")), movies))
    assert got == expected


def test_load_tfds_failure_is_explained(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(RuntimeError, match=r"movielens/latest-small-ratings.*no route.*network"):
        ml.load_tfds()


# ----------------------------------------------------------------------------------------
# End to end: a generated dataset with a planted preference structure trains.

N_USERS, N_MOVIES, PER_USER = 50, 60, 40
E2E_GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")
GENRE_LIKE_RATE = {"Action": 0.5, "Comedy": 0.3, "Drama": 0.15, "Horror": 0.03}
GENRE_LIKE_RATE.update({"Romance": 0.05, "Sci-Fi": 0.3})


def _planted(directory, seed=0) -> str:
    """Each user loves one genre (likes 90% of it); other genres are liked at a rate of their
    own, the same for every user (generalization) or memorized per user (user × genre)."""
    rng = np.random.default_rng(seed)
    movies = ["movieId,title,genres"]
    genre_of = {}
    for m in range(1, N_MOVIES + 1):
        genre_of[m] = E2E_GENRES[m % len(E2E_GENRES)]
        year = "" if m % 13 == 0 else f" ({1950 + m})"
        movies.append(f'{m},"Movie {m}, The{year}",{genre_of[m]}|Extra{m % 3}')
    ratings = []
    for u in range(1, N_USERS + 1):
        loves = E2E_GENRES[u % len(E2E_GENRES)]
        times = rng.integers(0, 10_000, PER_USER)
        for m, t in zip(rng.choice(np.arange(1, N_MOVIES + 1), PER_USER, replace=False), times):
            if genre_of[int(m)] == loves:
                r = 4.0 + 0.5 * rng.integers(0, 3) if rng.random() < 0.9 else 3.0
            else:
                liked = rng.random() < GENRE_LIKE_RATE[genre_of[int(m)]]
                r = 4.0 if liked else 1.0 + 0.5 * rng.integers(0, 6)
            ratings.append((u, int(m), r, int(t)))
    rng.shuffle(ratings)
    return write_grouplens(directory, ratings=ratings, movies="\n".join(movies) + "\n")


def test_trains_end_to_end(tmp_path):
    train, test = ml.prepare(_planted(tmp_path / "ml"), str(tmp_path / "out"))
    assert (ml.count_rows(train), ml.count_rows(test)) == (N_USERS * 32, N_USERS * 8)
    config = config_lib.TrainConfig(
        data=config_lib.DataConfig(
            dataset="files",
            feature_spec="movielens",
            train_files=train,
            eval_files=test,
            batch_size=32,
        ),
        model=model_lib.ModelConfig(hidden_units=(16, 8)),
        model_dir=str(tmp_path / "model"),
        export_base="",
        epochs=2,
        verbose=0,
    )
    result = train_lib.train_and_evaluate(config)
    assert math.isfinite(result.metrics["auc"])
    assert result.metrics["examples"] == N_USERS * 8
    # The planted user × genre preference is far above chance even after 2 tiny epochs.
    assert result.metrics["auc"] > 0.6, result.metrics
