"""Tests of wdl_tf.encoded_cache: the cached pipeline gives the uncached pipeline's rows,
later passes read the cache (not the files), and the key follows the data and the state."""

from __future__ import annotations

import collections
import dataclasses
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import encoded_cache as ec
from wdl_tf import features as fs
from wdl_tf import input_pipeline as ip
from wdl_tf import preprocessing as pp

pytestmark = pytest.mark.filterwarnings("ignore:The `deterministic` argument:UserWarning")

SPEC = fs.from_dict(
    {
        "csv": {"columns": ["hours", "city", "tags", "y"], "na_values": ["?"]},
        "label": {"name": "y", "positive_values": ["yes"], "negative_values": ["no"]},
        "features": [
            {"name": "hours", "kind": "numeric", "default": 7.5},
            {"name": "city", "kind": "categorical"},
            {"name": "tags", "kind": "multivalent"},
        ],
    }
)
CITIES = ["paris", "rome", "oslo", "lima", "kyiv"]
TAGS = ["a", "b", "c", "d"]


def write_rows(path, n: int, seed: int = 0) -> str:
    """``n`` rows; row i has hours = i (unique, so rows can be matched) and 0-4 tags."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        tags = "|".join(rng.choice(TAGS, size=int(rng.integers(0, 5))))
        city = CITIES[int(rng.integers(len(CITIES)))]
        lines.append(f"{i},{city},{tags},{'yes' if rng.random() < 0.3 else 'no'}")
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def rows_of(ds: tf.data.Dataset) -> collections.Counter:
    """The multiset of rows of one pass: (hours input, city id, tag ids without pads, label)."""
    out: collections.Counter = collections.Counter()
    for inputs, y in ds:
        hours = inputs["hours"].numpy().reshape(-1)
        city = inputs["city"].numpy().reshape(-1)
        tags = inputs["tags"].numpy()
        labels = y.numpy().reshape(-1)
        for i in range(len(hours)):
            tag_ids = tuple(int(t) for t in tags[i] if t != 0)
            out[(float(hours[i]), int(city[i]), tag_ids, float(labels[i]))] += 1
    return out


def adapt(data: str, skip_bad_rows: bool = False) -> pp.PreprocessingState:
    opts = ip.ReadOptions(batch_size=128, skip_bad_rows=skip_bad_rows)
    return pp.adapt(SPEC, (raw for raw, _ in ip.read_raw(SPEC, [data], opts)))


@pytest.fixture
def setup(tmp_path):
    data = write_rows(tmp_path / "train.csv", 700)
    state = adapt(data)
    preprocessor = pp.FeaturePreprocessor(SPEC, state)
    opts = ip.ReadOptions(batch_size=64, shuffle=True, shuffle_buffer=200, seed=3)
    cache = ec.for_run(str(tmp_path / "model"), [data], SPEC, state, opts)
    return data, state, preprocessor, opts, cache


def test_every_pass_has_the_uncached_rows_and_later_passes_read_the_cache(setup):
    data, _, preprocessor, opts, cache = setup
    uncached = rows_of(ip.make_dataset(SPEC, [data], opts, preprocessor))
    assert sum(uncached.values()) == 700 and len(uncached) > 600
    ds = ec.training_dataset(SPEC, [data], opts, preprocessor, cache)

    first = rows_of(ds)
    assert first == uncached
    for _ in range(600):  # the snapshot is finalized by a writer thread after the pass
        if cache.is_complete():
            break
        time.sleep(0.1)
    assert cache.is_complete() and cache.disk_bytes() > 0

    os.remove(data)  # a later pass that touched the files would fail now
    assert rows_of(ds) == uncached


def test_batches_are_shuffled_per_pass_and_padded_to_their_own_longest_list(setup):
    data, _, preprocessor, opts, cache = setup
    ds = ec.training_dataset(SPEC, [data], opts, preprocessor, cache)
    orders = []
    for _ in range(3):
        hours, widths = [], []
        for inputs, _ in ds:
            hours.extend(inputs["hours"].numpy().reshape(-1).tolist())
            tags = inputs["tags"].numpy()
            assert tags.shape[0] <= opts.batch_size
            # as the uncached pipeline: as wide as the batch's longest list, no wider
            widths.append((tags.shape[1], int((tags != 0).sum(axis=1).max())))
        assert all(width == longest for width, longest in widths)
        orders.append(hours)
    assert orders[0] != orders[1] != orders[2]
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(orders[2])


def test_key_follows_files_state_and_row_selection_not_order(setup, tmp_path):
    data, state, _, opts, cache = setup
    key = cache.key
    same = [
        dataclasses.replace(opts, seed=9),
        dataclasses.replace(opts, batch_size=7),
        dataclasses.replace(opts, shuffle=False, shuffle_buffer=1),
    ]
    for other in same:
        assert ec.cache_key([data], SPEC, state, other) == key, other
    changed = [
        dataclasses.replace(opts, split="train"),
        dataclasses.replace(opts, max_rows=10),
        dataclasses.replace(opts, num_shards=2),
    ]
    for other in changed:
        assert ec.cache_key([data], SPEC, state, other) != key, other
    fewer = dataclasses.replace(state, rows_seen=state.rows_seen - 1)
    assert ec.cache_key([data], SPEC, fewer, opts) != key

    stat = os.stat(data)
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert ec.cache_key([data], SPEC, state, opts) != key
    write_rows(tmp_path / "train.csv", 701)
    assert ec.cache_key([data], SPEC, state, opts) != key


def test_a_new_key_removes_the_old_cache(setup, tmp_path):
    data, state, preprocessor, opts, cache = setup
    for _ in ec.training_dataset(SPEC, [data], opts, preprocessor, cache):
        pass
    assert os.path.isdir(cache.path)
    write_rows(tmp_path / "train.csv", 650, seed=1)
    newer = ec.for_run(str(tmp_path / "model"), [data], SPEC, state, opts)
    assert newer.key != cache.key
    assert not os.path.exists(cache.path)


def test_bad_rows_are_counted_once_across_passes(tmp_path):
    path = tmp_path / "train.csv"
    write_rows(path, 300)
    with open(path, "a") as f:
        f.write("notanumber,rome,a,no\n1000,paris,b\n")  # a bad number, a short row
    data = str(path)
    opts = ip.ReadOptions(batch_size=64, shuffle=True, skip_bad_rows=True)
    state = adapt(data, skip_bad_rows=True)
    preprocessor = pp.FeaturePreprocessor(SPEC, state)
    cache = ec.for_run(str(tmp_path / "model"), [data], SPEC, state, opts)
    counter = ip.BadRowCounter()
    ds = ec.training_dataset(SPEC, [data], opts, preprocessor, cache, counter)
    for _ in range(3):
        assert sum(int(y.shape[0]) for _, y in ds) == 300
    assert counter.count == 2


def test_without_shuffling_every_pass_gives_the_uncached_batches_in_file_order(tmp_path):
    """3,000 rows: three blocks in three snapshot shards, read back in file order, batches
    carried across blocks (no multivalent input here: see `encoded_cache._batches`)."""
    spec = fs.from_dict({**SPEC.to_dict(), "features": SPEC.to_dict()["features"][:2]})
    data = write_rows(tmp_path / "train.csv", 3000)
    opts = ip.ReadOptions(batch_size=128)
    state = pp.adapt(spec, (raw for raw, _ in ip.read_raw(spec, [data], opts)))
    preprocessor = pp.FeaturePreprocessor(spec, state)
    for opts in (
        ip.ReadOptions(batch_size=100, shuffle=False),
        ip.ReadOptions(batch_size=100, shuffle=True, shuffle_buffer=1),  # keeps the order
    ):
        expected = [
            (x["hours"].numpy().tolist(), x["city"].numpy().tolist(), y.numpy().tolist())
            for x, y in ip.make_dataset(spec, [data], opts, preprocessor)
        ]
        cache = ec.for_run(str(tmp_path / "model"), [data], spec, state, opts)
        ds = ec.training_dataset(spec, [data], opts, preprocessor, cache)
        for _ in range(3):
            got = [
                (x["hours"].numpy().tolist(), x["city"].numpy().tolist(), y.numpy().tolist())
                for x, y in ds
            ]
            assert got == expected
        assert cache.is_complete()
