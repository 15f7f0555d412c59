"""The Criteo layout: the preset parses real-format rows, the generator writes that layout with
learnable labels, and the wdl_tf model learns them."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import config as config_lib
from wdl_tf import datasets, train_lib
from wdl_tf import features as fs
from wdl_tf import input_pipeline as ip
from wdl_tf.datasets import criteo

HEX = re.compile(r"[0-9a-f]{8}")
INT = re.compile(r"\d+")


def read_rows(path: str) -> list[list[str]]:
    with open(path) as f:
        text = f.read()
    assert text.endswith("\n")
    return [line.split("\t") for line in text[:-1].split("\n")]


def test_generator_writes_the_criteo_layout(tmp_path):
    (path,) = criteo.write_synthetic(str(tmp_path), 500, seed=3, missing_rate=0.1)
    assert path == str(tmp_path / "criteo_synthetic_500_3-00000-of-00001.tsv")
    assert os.listdir(tmp_path) == [os.path.basename(path)]  # no .tmp file left
    rows = read_rows(path)
    assert len(rows) == 500
    empty_ints = empty_cats = 0
    for row in rows:
        assert len(row) == 40
        assert row[0] in ("0", "1")
        for v in row[1:14]:
            assert v == "" or INT.fullmatch(v), v
            empty_ints += v == ""
        for v in row[14:]:
            assert v == "" or HEX.fullmatch(v), v
            empty_cats += v == ""
    # missing_rate 0.1 of 500 * 13 integer and 500 * 26 categorical fields.
    assert 500 < empty_ints < 800
    assert 1100 < empty_cats < 1500


def test_generator_is_deterministic_by_seed(tmp_path):
    a = criteo.write_synthetic(str(tmp_path / "a"), 200, seed=1)[0]
    b = criteo.write_synthetic(str(tmp_path / "b"), 200, seed=1)[0]
    c = criteo.write_synthetic(str(tmp_path / "c"), 200, seed=2)[0]
    assert open(a).read() == open(b).read()
    assert open(a).read() != open(c).read()


def test_generator_streams_fixed_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(criteo, "BLOCK_ROWS", 10)
    generated = []
    block = criteo._block
    monkeypatch.setattr(
        criteo, "_block", lambda rng, n, *a: generated.append(n) or block(rng, n, *a)
    )
    rows = read_rows(criteo.write_synthetic(str(tmp_path / "a"), 25)[0])
    assert len(rows) == 25
    assert generated == [10, 10, 10]  # three blocks, never the whole file at once
    # Every block has its own random stream (no block repeats another) ...
    assert rows[:5] != rows[10:15] and rows[10:15] != rows[20:25]
    # ... so the first rows do not depend on how many follow.
    assert read_rows(criteo.write_synthetic(str(tmp_path / "b"), 12)[0]) == rows[:12]


def test_generator_shards_and_compresses(tmp_path):
    import gzip

    paths = criteo.write_synthetic(str(tmp_path), 10, num_files=3, compress=True)
    assert [os.path.basename(p) for p in paths] == [
        f"criteo_synthetic_10_0-0000{i}-of-00003.tsv.gz" for i in range(3)
    ]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)
    counts = [len(gzip.open(p, "rt").read().splitlines()) for p in paths]
    assert counts == [4, 3, 3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rows": 0}, "rows: must be an integer >= 1, got 0"),
        ({"rows": 10, "num_files": 0}, "num_files: must be an integer >= 1, got 0"),
        ({"rows": 10, "missing_rate": 1.0}, r"missing_rate: must be in \[0, 1\), got 1.0"),
    ],
)
def test_generator_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        criteo.write_synthetic(str(tmp_path), **kwargs)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """20,000 generated rows as columns: labels, and the C1, C3, C4 fields."""
    path = criteo.write_synthetic(str(tmp_path_factory.mktemp("sample")), 20_000, seed=7)[0]
    rows = read_rows(path)
    col = {name: j for j, name in enumerate(criteo.COLUMNS)}
    pick = lambda name: np.array([r[col[name]] for r in rows])  # noqa: E731
    return {"label": pick("label") == "1", **{c: pick(c) for c in ("C1", "C3", "C4")}}


def test_positive_rate_and_zipf_tokens(sample):
    assert 0.2 < sample["label"].mean() < 0.3
    # The most frequent C1 token is the rank-1 token, with about 1/zeta(1.2) = 18% of rows.
    tokens, counts = np.unique(sample["C1"], return_counts=True)
    assert tokens[counts.argmax()] == criteo.token("C1", 1)
    assert 0.14 < counts.max() / len(sample["C1"]) < 0.24


def test_planted_pairs_click_more(sample):
    """The memorized C3 x C4 pairs (a quarter of the top-10 x top-10) raise the click rate."""
    top = range(1, criteo.PAIR_TOP_RANKS + 1)
    planted = {
        (criteo.token("C3", a), criteo.token("C4", b))
        for a in top
        for b in top
        if criteo.planted_pair(a, b)
    }
    assert 10 <= len(planted) <= 40
    is_planted = np.array([p in planted for p in zip(sample["C3"], sample["C4"])])
    assert is_planted.mean() > 0.02
    assert sample["label"][is_planted].mean() > sample["label"][~is_planted].mean() + 0.2


def test_spec_parses_a_hand_written_tsv(tmp_path):
    ints1 = ["5", "-3", "", "0", "12", "", "1", "2", "3", "4", "", "7", "100"]
    cats1 = ["68fd1e64", "", "80e26c9b"] + [f"{i:08x}" for i in range(3, 25)] + [""]
    ints2 = [""] * 12 + ["8"]
    cats2 = [""] + ["0a519c5c"] * 25
    path = tmp_path / "day_0.tsv"
    path.write_text("\t".join(["1", *ints1, *cats1]) + "\n" + "\t".join(["0", *ints2, *cats2]))
    raw, labels = next(iter(ip.read_raw(fs.preset("criteo"), str(path), ip.ReadOptions())))
    assert labels.numpy().reshape(-1).tolist() == [1.0, 0.0]
    for i, (a, b) in enumerate(zip(ints1, ints2), start=1):
        expected = [float(a or 0), float(b or 0)]  # missing counts parse as 0.0
        assert raw[f"I{i}"].numpy().reshape(-1).tolist() == expected, f"I{i}"
    for i, (a, b) in enumerate(zip(cats1, cats2), start=1):
        got = [v.decode() for v in raw[f"C{i}"].numpy().reshape(-1)]
        assert got == [a, b], f"C{i}"  # missing ids parse as "" (out of vocabulary)


def test_spec_rejects_a_short_row(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("\t".join(["1"] + ["1"] * 13 + ["68fd1e64"] * 25) + "\n")
    with pytest.raises(ip.DataError, match=f"{path}:1: expected 40 fields, got 39"):
        try:
            list(ip.read_raw(fs.preset("criteo"), str(path), ip.ReadOptions()))
        except tf.errors.InvalidArgumentError as e:  # the row check inside tf.data
            ip.raise_data_error(e)


def test_spec_sets_hash_buckets():
    preset = fs.preset("criteo")
    assert criteo.spec() == preset
    big = criteo.spec(1_000_000)
    cats = [f for f in big.features if f.kind == fs.CATEGORICAL]
    assert [f.name for f in cats] == list(criteo.CAT_COLUMNS)
    assert {f.hash_buckets for f in cats} == {1_000_000}
    assert {c.hash_buckets for c in big.crosses} == {1_000_000}
    assert len(big.crosses) == len(preset.crosses) >= 3
    numerics = [f for f in big.features if f.kind == fs.NUMERIC]
    assert numerics == [f for f in preset.features if f.kind == fs.NUMERIC]
    mixed = criteo.spec(1_000_000, cross_buckets=5000)
    assert {c.hash_buckets for c in mixed.crosses} == {5000}
    with pytest.raises(fs.FeatureSpecError, match=r"features\[13\]\.hash_buckets"):
        criteo.spec(0)


def test_registered_datasets(tmp_path):
    files = datasets.get_dataset("criteo_synthetic", str(tmp_path), synthetic_rows=400, seed=1)
    assert files.feature_spec == "criteo"
    (train,), (test,) = files.train_files, files.eval_files
    assert os.path.dirname(train) == str(tmp_path / "synthetic_data")
    assert len(read_rows(train)) == 400 and len(read_rows(test)) == 100
    assert read_rows(train)[:100] != read_rows(test)  # different random streams
    mtime = os.path.getmtime(train)
    again = datasets.get_dataset("criteo_synthetic", str(tmp_path), synthetic_rows=400, seed=1)
    assert again == files
    assert os.path.getmtime(train) == mtime  # reused, not rewritten
    real = datasets.get_dataset("criteo", str(tmp_path))
    assert (real.feature_spec, real.train_files, real.eval_files) == ("criteo", (), ())
    config_lib.DataConfig(dataset="criteo_synthetic").validate()


def test_model_learns_the_synthetic_labels(tmp_path):
    spec_path = tmp_path / "criteo_1k.json"
    spec_path.write_text(json.dumps(criteo.spec(1000).to_dict()))
    config = config_lib.preset(
        "test",
        model_dir=str(tmp_path / "model"),
        export_base="",
        epochs=2,
        data=config_lib.DataConfig(
            dataset="criteo_synthetic",
            feature_spec=str(spec_path),
            synthetic_rows=8000,
            batch_size=64,
        ),
    )
    result = train_lib.train_and_evaluate(config)  # 2 epochs x 125 steps
    assert result.metrics["examples"] == 2000
    assert result.metrics["auc"] > 0.6
