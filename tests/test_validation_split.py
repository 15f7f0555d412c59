"""The validation split carved from the training files: by time (per user) when the spec
names a time column, else random with the seed; checked on hand-made files whose expected
split is worked out by hand. Bad input (a time that is not a number, an empty split, bad
split columns) fails before training with the value named."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import config as config_lib
from wdl_tf import features as fs
from wdl_tf import input_pipeline as ip
from wdl_tf import train_lib

pytestmark = pytest.mark.filterwarnings("ignore:The `deterministic` argument:UserWarning")


def spec_dict(split: dict | None = None) -> dict:
    """user, item (features), ts (the time: not a feature), label y; tab-separated, header."""
    obj = {
        "csv": {"columns": ["user", "item", "ts", "y"], "delimiter": "\t", "skip_header_lines": 1},
        "label": {"name": "y"},
        "features": [
            {"name": "user", "kind": "categorical"},
            {"name": "item", "kind": "categorical"},
        ],
    }
    if split is not None:
        obj["split"] = split
    return obj


PER_USER = {"time_column": "ts", "user_column": "user"}

# (user, time): user a rates at times 1..10, user b at 5, 3, 1 (out of order), user c once.
ROWS = [("a", t) for t in range(1, 11)] + [("b", 5), ("b", 3), ("b", 1), ("c", 7)]


def write_rows(path, rows, header="user\titem\tts\ty") -> str:
    lines = [header] + [f"{u}\ti{n}\t{t}\t{n % 2}" for n, (u, t) in enumerate(rows)]
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def pairs(spec, files, opts) -> list[tuple[str, int]]:
    """(user, item number) of every row of a split."""
    out = []
    try:
        for raw, _ in ip.read_raw(spec, files, opts):
            users = raw["user"].numpy().reshape(-1)
            items = raw["item"].numpy().reshape(-1)
            out.extend((u.decode(), int(i.decode()[1:])) for u, i in zip(users, items))
    except tf.errors.InvalidArgumentError as e:
        ip.raise_data_error(e)
    return sorted(out)


def split_rows(spec, path, fraction):
    ts = ip.time_split(spec, [path], fraction)
    read = {
        name: pairs(
            spec,
            [path],
            ip.ReadOptions(batch_size=3, split=name, validation_fraction=fraction, time_split=ts),
        )
        for name in ("train", "validation")
    }
    return ts, read


def test_spec_split_round_trips_and_preset_names_it():
    spec = fs.from_dict(spec_dict(PER_USER))
    assert spec.split == fs.SplitSpec(time_column="ts", user_column="user")
    assert fs.from_dict(spec.to_dict()) == spec
    assert fs.from_dict(spec_dict({"time_column": "ts"})).split.user_column == ""
    assert fs.preset("movielens").split == fs.SplitSpec("timestamp", "user_id")


@pytest.mark.parametrize(
    "split, message",
    [
        ({"time_column": "when"}, "split.time_column: 'when' is not a column of csv.columns"),
        ({"time_column": "y"}, "split.time_column: 'y' is the label"),
        ({"time_column": "ts", "user_column": "who"}, "split.user_column: 'who' is not a column"),
        ({"time_column": "ts", "user_column": "ts"}, "split.user_column: 'ts' is also the time"),
        ({"user_column": "user"}, "split.time_column: required field is missing"),
        ({"time_column": "ts", "by": "x"}, r"split: unknown field\(s\) \['by'\]"),
        ({"time_column": 3}, "split.time_column: expected str, got 3"),
    ],
)
def test_bad_split_spec_is_named(split, message):
    with pytest.raises(fs.FeatureSpecError, match=message):
        fs.from_dict(spec_dict(split))


def test_per_user_time_split_takes_each_users_latest_rows(tmp_path):
    spec = fs.from_dict(spec_dict(PER_USER))
    path = write_rows(tmp_path / "train.tsv", ROWS)
    ts, read = split_rows(spec, path, 0.2)
    # a: round(0.2 * 10) = 2 -> times 9 and 10 (items 8, 9); b: round(0.2 * 3) = 1 -> its
    # latest, time 5 (item 10); c: round(0.2 * 1) = 0 -> none.
    assert read["validation"] == [("a", 8), ("a", 9), ("b", 10)]
    everything = sorted((u, n) for n, (u, _) in enumerate(ROWS))
    assert sorted(read["train"] + read["validation"]) == everything
    assert not set(read["train"]) & set(read["validation"])
    assert ts.rows_seen == 14 and ts.validation_rows == 3
    # A user the pass never saw falls back to the global threshold: round(0.2 * 14) = 3
    # latest of all times (1..10, 1, 3, 5, 7) -> threshold 8.
    assert ts.default_threshold == 8.0


def test_global_time_split_without_user_column(tmp_path):
    spec = fs.from_dict(spec_dict({"time_column": "ts"}))
    path = write_rows(tmp_path / "train.tsv", ROWS)
    ts, read = split_rows(spec, path, 0.2)
    # The 3 latest rows of all: times 8, 9, 10 (user a's items 7, 8, 9).
    assert read["validation"] == [("a", 7), ("a", 8), ("a", 9)]
    assert len(read["train"]) == 11 and ts.user_keys.size == 0


def test_time_split_saves_and_loads(tmp_path):
    spec = fs.from_dict(spec_dict(PER_USER))
    ts = ip.time_split(spec, [write_rows(tmp_path / "t.tsv", ROWS)], 0.2)
    ts.save(str(tmp_path))
    back = ip.TimeSplit.load(str(tmp_path))
    np.testing.assert_array_equal(back.user_keys, ts.user_keys)
    np.testing.assert_array_equal(back.thresholds, ts.thresholds)
    assert (back.default_threshold, back.validation_rows) == (8.0, 3)
    assert back.matches(spec, 0.2) and not back.matches(spec, 0.3)
    assert ip.TimeSplit.load(str(tmp_path / "none")) is None


def test_time_that_is_not_a_number_names_file_line_and_value(tmp_path):
    spec = fs.from_dict(spec_dict(PER_USER))
    path = tmp_path / "train.tsv"
    write_rows(path, ROWS)
    lines = path.read_text().splitlines()
    lines[5] = "a\ti4\tyesterday\t0"  # line 6 of the file
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ip.DataError) as err:
        ip.time_split(spec, [str(path)], 0.2)
    message = str(err.value)
    assert f"{path}:6:" in message and "'ts'" in message and "'yesterday'" in message
    assert "is not a number" in message
    # With skip_bad_rows the row is in neither split.
    ts = ip.time_split(spec, [str(path)], 0.2, skip_bad_rows=True)
    assert ts.rows_seen == 13


def test_time_split_of_tfrecord_files_is_refused(tmp_path):
    spec = fs.from_dict(spec_dict(PER_USER))
    path = str(tmp_path / "train.tfrecord")
    with tf.io.TFRecordWriter(path):
        pass
    with pytest.raises(ip.DataError, match="reads CSV files only"):
        ip.time_split(spec, [path], 0.2)


def test_random_split_depends_on_the_seed(tmp_path):
    spec = fs.from_dict(spec_dict())
    path = write_rows(tmp_path / "t.tsv", [(f"u{i}", i) for i in range(200)])

    def validation(seed):
        opts = ip.ReadOptions(batch_size=64, split="validation", validation_fraction=0.3)
        return pairs(spec, [path], ip.dataclasses.replace(opts, split_seed=seed))

    a, b = validation(0), validation(1)
    assert a == validation(0)  # deterministic
    assert a != b  # another seed, another random share
    assert 30 <= len(a) <= 90 and 30 <= len(b) <= 90  # ~60 of 200 each


def _files_config(tmp_path, train, spec_path, fraction, **kw):
    return config_lib.preset(
        "test",
        model_dir=str(tmp_path / "model"),
        export_base="",
        epochs=1,
        data=config_lib.DataConfig(
            dataset="files",
            feature_spec=spec_path,
            train_files=train,
            validation_fraction=fraction,
            batch_size=4,
            **kw,
        ),
    )


def _spec_file(tmp_path, split) -> str:
    path = tmp_path / "spec.json"
    path.write_text(fs.from_dict(spec_dict(split)).to_json())
    return str(path)


def test_empty_time_split_fails_before_training_naming_fraction_and_files(tmp_path):
    # Three users with 3 rows each: round(0.1 * 3) = 0 validation rows per user.
    train = write_rows(tmp_path / "t.tsv", [(u, t) for u in "abc" for t in (1, 2, 3)])
    config = _files_config(tmp_path, train, _spec_file(tmp_path, PER_USER), 0.1)
    with pytest.raises(ValueError) as err:
        train_lib.train_and_evaluate(config)
    message = str(err.value)
    assert "validation split is empty: validation_fraction=0.1" in message
    assert "'ts'" in message and "'user'" in message and train in message
    assert not os.path.exists(os.path.join(config.model_dir, "checkpoints"))
    assert not os.path.exists(os.path.join(config.model_dir, "preprocessing.json"))


def test_empty_random_split_fails_before_training(tmp_path):
    train = write_rows(tmp_path / "t.tsv", [("a", 1), ("b", 2)])
    config = _files_config(tmp_path, train, _spec_file(tmp_path, None), 0.001)
    with pytest.raises(ValueError, match=r"validation split is empty: validation_fraction=0.001 "
                       r"\(a random share of the rows\)"):  # fmt: skip
        train_lib.train_and_evaluate(config)
    assert not os.path.exists(os.path.join(config.model_dir, "checkpoints"))


def test_bad_time_fails_training_before_it_starts(tmp_path):
    rows = [(u, t) for u in "abcd" for t in range(1, 9)]
    path = tmp_path / "t.tsv"
    write_rows(path, rows)
    path.write_text(path.read_text().replace("c\ti18\t3\t", "c\ti18\t3pm\t"))
    config = _files_config(tmp_path, str(path), _spec_file(tmp_path, PER_USER), 0.25)
    with pytest.raises(ip.DataError, match=r"t.tsv:20: split time column 'ts' .*'3pm'"):
        train_lib.train_and_evaluate(config)
    assert not os.path.exists(os.path.join(config.model_dir, "checkpoints"))


def test_training_reads_the_time_split_and_adapts_on_train_rows_only(tmp_path):
    # Every user's last 2 of 8 rows are validation; items named "late" only appear there,
    # so the vocabulary (adapted on the train split) must not hold them.
    rows = [(u, t) for u in "abcd" for t in range(1, 9)]
    path = tmp_path / "t.tsv"
    lines = ["user\titem\tts\ty"]
    for n, (u, t) in enumerate(rows):
        lines.append(f"{u}\t{'late' if t > 6 else 'early'}{n % 3}\t{t}\t{n % 2}")
    path.write_text("\n".join(lines) + "\n")
    config = _files_config(tmp_path, str(path), _spec_file(tmp_path, PER_USER), 0.25)
    result = train_lib.train_and_evaluate(config)
    assert result.metrics["eval_split"] == "validation"
    assert result.metrics["examples"] == 8  # round(0.25 * 8) = 2 rows of each of 4 users
    vocab = open(os.path.join(config.model_dir, "vocabularies", "item.txt")).read().split()
    assert vocab and all(token.startswith("early") for token in vocab)
    assert ip.TimeSplit.load(config.model_dir).validation_rows == 8
