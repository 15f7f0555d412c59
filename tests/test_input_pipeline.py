"""Tests of wdl_tf.input_pipeline: CSV / TFRecord reading, row checks, splits."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import features as fs
from wdl_tf import input_pipeline as ip

pytestmark = pytest.mark.filterwarnings("ignore:The `deterministic` argument:UserWarning")


def tiny_spec(**csv) -> fs.FeatureSpec:
    """hours (numeric, default 7.5), city (string), zip (int), tags (multivalent), label y."""
    return fs.from_dict(
        {
            "csv": {
                "columns": ["hours", "city", "zip", "tags", "y"],
                "na_values": ["?", "NA"],
                "comment_prefix": "#",
                **csv,
            },
            "label": {"name": "y", "positive_values": ["yes"], "negative_values": ["no"]},
            "features": [
                {"name": "hours", "kind": "numeric", "default": 7.5},
                {"name": "city", "kind": "categorical"},
                {"name": "zip", "kind": "categorical", "dtype": "int"},
                {"name": "tags", "kind": "multivalent"},
            ],
        }
    )


def write(path, lines: list[str]) -> str:
    text = "".join(line + "\n" for line in lines)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return str(path)


def collect(ds: tf.data.Dataset) -> tuple[dict[str, list], list[float]]:
    """All rows of a dataset, as python lists per feature, converting row errors."""
    feats: dict[str, list] = {}
    labels: list[float] = []
    try:
        for raw, y in ds:
            for k, v in raw.items():
                v = v.to_list() if isinstance(v, tf.RaggedTensor) else v.numpy().tolist()
                feats.setdefault(k, []).extend(v)
            labels.extend(np.asarray(y).reshape(-1).tolist())
    except tf.errors.InvalidArgumentError as e:
        ip.raise_data_error(e)
    return feats, labels


def flat(values: list) -> list:
    """[[a], [b]] -> [a, b], decoding bytes."""
    out = [v[0] for v in values]
    return [v.decode() if isinstance(v, bytes) else v for v in out]


OPTS = ip.ReadOptions(batch_size=4)

GOOD_ROWS = [
    "40, Paris, 75001, a|b, yes",
    "12.5,Oslo,150,,no",
    "?,NA,?,c,no",  # every feature missing
    "-3e1, Rome , 100 ,x, yes",
    "0.5,Lyon,69000,a,no",
]


def test_read_raw_parses_values(tmp_path):
    path = write(tmp_path / "data.csv", GOOD_ROWS)
    feats, labels = collect(ip.read_raw(tiny_spec(), path, OPTS))
    # Fields are stripped; "?" and "NA" are missing -> the feature default:
    # hours 7.5 (given), city "" (string default), zip -1 (int default).
    assert flat(feats["hours"]) == [40.0, 12.5, 7.5, -30.0, 0.5]
    assert flat(feats["city"]) == ["Paris", "Oslo", "", "Rome", "Lyon"]
    assert flat(feats["zip"]) == [75001, 150, -1, 100, 69000]
    # Multivalent fields stay raw strings here; the preprocessor splits them.
    assert flat(feats["tags"]) == ["a|b", "", "c", "x", "a"]
    # yes -> 1, no -> 0.
    assert labels == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_read_raw_dtypes_and_shapes(tmp_path):
    path = write(tmp_path / "data.csv", GOOD_ROWS)
    raw, y = next(iter(ip.read_raw(tiny_spec(), path, OPTS)))
    assert raw["hours"].dtype == tf.float32
    assert raw["city"].dtype == tf.string
    assert raw["zip"].dtype == tf.int64
    assert y.dtype == tf.float32
    # Batches of 4: the first has 4 rows, each feature [B, 1].
    assert all(v.shape == (4, 1) for v in raw.values())
    assert y.shape == (4, 1)


def test_comments_blank_lines_and_header_skipped(tmp_path):
    lines = [
        "hours,city,zip,tags,y",  # header
        "# a comment line",
        "",
        "   ",
        "1,A,1,a,yes",
        "  # an indented comment",
        "2,B,2,b,no",
    ]
    path = write(tmp_path / "data.csv", lines)
    feats, labels = collect(ip.read_raw(tiny_spec(skip_header_lines=1), path, OPTS))
    assert flat(feats["city"]) == ["A", "B"]
    assert labels == [1.0, 0.0]


def test_header_skipped_in_every_file(tmp_path):
    spec = tiny_spec(skip_header_lines=2)
    a = write(tmp_path / "a.csv", ["h1", "h2", "1,A,1,a,yes"])
    b = write(tmp_path / "b.csv", ["h1", "h2", "2,B,2,b,no", "3,C,3,c,no"])
    feats, _ = collect(ip.read_raw(spec, [a, b], OPTS))
    assert sorted(flat(feats["city"])) == ["A", "B", "C"]


def test_gzip_csv(tmp_path):
    path = write(tmp_path / "data.csv.gz", GOOD_ROWS)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # really gzip on disk
    feats, labels = collect(ip.read_raw(tiny_spec(), path, OPTS))
    assert flat(feats["city"]) == ["Paris", "Oslo", "", "Rome", "Lyon"]
    assert labels == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_comma_separated_files_and_max_rows(tmp_path):
    a = write(tmp_path / "a.csv", GOOD_ROWS[:2])
    b = write(tmp_path / "b.csv", GOOD_ROWS[2:])
    feats, _ = collect(ip.read_raw(tiny_spec(), f"{a},{b}", OPTS))
    assert len(feats["city"]) == 5
    feats, _ = collect(ip.read_raw(tiny_spec(), [a, b], ip.ReadOptions(batch_size=2, max_rows=3)))
    assert len(feats["city"]) == 3


def test_other_delimiter(tmp_path):
    path = write(tmp_path / "data.tsv", ["1\tA B\t5\ta|b\tyes"])
    feats, _ = collect(ip.read_raw(tiny_spec(delimiter="\t"), path, OPTS))
    assert flat(feats["city"]) == ["A B"]
    assert flat(feats["zip"]) == [5]


# ----------------------------------------------------------------------------------------
# Malformed rows.

BAD_CASES = {
    # name: (bad line, what the message must say besides the file and the line)
    "field_count": ("1,A,1,yes", ["expected 5 fields, got 4"]),
    "not_a_number": ("1x5,A,1,a,yes", ["field 'hours'", "'1x5'", "not a number"]),
    "not_an_int": ("1,A,12.5,a,yes", ["field 'zip'", "'12.5'", "not an integer"]),
    "unknown_label": ("1,A,1,a,maybe", ["field 'y'", "'maybe'", "not a label"]),
    # A float32 holds at most ~3.4e38: 1e39 would be read as inf.
    "overflow": ("1e39,A,1,a,yes", ["field 'hours'", "'1e39'", "not a finite float32 number"]),
    "overflow_negative": ("-5e38,A,1,a,yes", ["field 'hours'", "'-5e38'", "not a finite"]),
}


def bad_file(tmp_path, bad_line: str, gz: bool = False) -> str:
    # The bad row is physical line 5: after a comment, a blank line and a good row.
    name = "rows.csv.gz" if gz else "rows.csv"
    return write(
        tmp_path / name, ["# comment", "", "1,A,1,a,yes", "2,B,2,b,no", bad_line, "3,C,3,c,yes"]
    )


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_row_fails_iteration_naming_file_line_field(tmp_path, case):
    # The row check itself: the tf.data error carries the file, the physical line and field.
    line, expected = BAD_CASES[case]
    path = bad_file(tmp_path, line)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        list(ip.read_raw(tiny_spec(), path, OPTS))
    message = info.value.message.replace("\\'", "'")  # TF escapes quotes in Assert data
    assert ip.MALFORMED in message
    assert "rows.csv:5: " in message
    for part in expected:
        assert part in message


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_row_data_error_message(tmp_path, case):
    line, expected = BAD_CASES[case]
    path = bad_file(tmp_path, line)
    with pytest.raises(ip.DataError) as info:
        collect(ip.read_raw(tiny_spec(), path, OPTS))
    message = str(info.value)
    assert message.startswith(ip.MALFORMED)
    assert f"{path}:5: " in message
    for part in expected:
        assert part in message


def test_malformed_row_raises_data_error(tmp_path):
    # Whatever its message, a bad row is converted into a DataError (a ValueError).
    path = bad_file(tmp_path, BAD_CASES["not_a_number"][0])
    with pytest.raises(ip.DataError, match=ip.MALFORMED):
        collect(ip.read_raw(tiny_spec(), path, OPTS))


def test_malformed_row_line_number_in_gzip_file(tmp_path):
    path = bad_file(tmp_path, BAD_CASES["unknown_label"][0], gz=True)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        list(ip.read_raw(tiny_spec(), path, OPTS))
    assert "rows.csv.gz:5: " in info.value.message


def test_raise_data_error_passes_other_errors_through():
    error = tf.errors.InvalidArgumentError(None, None, "some other failure")
    with pytest.raises(tf.errors.InvalidArgumentError, match="some other failure"):
        ip.raise_data_error(error)


def test_skip_bad_rows_drops_and_counts(tmp_path):
    lines = [
        "1,A,1,a,yes",
        "oops,B,2,b,no",  # not a number
        "3,C,3,c,no",
        "4,D,4,d",  # 4 fields
        "5,E,5,e,perhaps",  # unknown label
        "6,F,x,f,no",  # not an integer
        "7,G,7,g,yes",
    ]
    path = write(tmp_path / "data.csv", lines)
    counter = ip.BadRowCounter()
    opts = ip.ReadOptions(batch_size=3, skip_bad_rows=True)
    feats, labels = collect(ip.read_raw(tiny_spec(), path, opts, counter))
    assert flat(feats["city"]) == ["A", "C", "G"]
    assert labels == [1.0, 0.0, 1.0]
    assert counter.count == 4


def test_pipelines_of_one_spec_share_one_traced_parser(tmp_path, monkeypatch):
    """A training run builds several pipelines over one spec (training, validation, final
    evaluation): the parser is traced once per (spec, checks, counter), and each pipeline
    still reads its own rows and counts into its own counter."""
    traces = []
    make = ip._csv_parser

    def counting(spec, skip_bad_rows, counter):
        parse = make(spec, skip_bad_rows, counter)

        def traced(*args):
            traces.append(counter)
            return parse(*args)

        return traced

    monkeypatch.setattr(ip, "_csv_parser", counting)
    spec = tiny_spec()
    first = write(tmp_path / "a.csv", GOOD_ROWS)
    second = write(tmp_path / "b.csv", ["1,A,1,a,yes", "oops,B,2,b,no"])
    assert flat(collect(ip.read_raw(spec, first, OPTS))[0]["city"])[:2] == ["Paris", "Oslo"]
    assert collect(ip.read_raw(spec, first, OPTS))[1] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert len(traces) == 1
    skipping = ip.ReadOptions(batch_size=4, skip_bad_rows=True)
    counters = [ip.BadRowCounter(), ip.BadRowCounter()]
    for counter in counters:
        assert flat(collect(ip.read_raw(spec, second, skipping, counter))[0]["city"]) == ["A"]
    assert [c.count for c in counters] == [1, 1]  # each its own, not one counter twice
    assert traces[1:] == counters
    collect(ip.read_raw(tiny_spec(), first, OPTS))  # an equal spec, another object: traced
    assert len(traces) == 4


def test_missing_label_is_a_bad_row(tmp_path):
    # An empty label is neither positive nor negative: malformed, not a silent 0.
    path = write(tmp_path / "data.csv", ["1,A,1,a,"])
    counter = ip.BadRowCounter()
    feats, _ = collect(ip.read_raw(tiny_spec(), path, ip.ReadOptions(skip_bad_rows=True), counter))
    assert feats.get("city", []) == []
    assert counter.count == 1


# ----------------------------------------------------------------------------------------
# Files.


def test_resolve_files_missing(tmp_path):
    missing = str(tmp_path / "absent.csv")
    with pytest.raises(ip.DataError, match=r"absent\.csv.*does not exist"):
        ip.resolve_files(missing)


def test_resolve_files_glob_without_match(tmp_path):
    with pytest.raises(ip.DataError, match=r"nothing-\*\.csv"):
        ip.resolve_files(str(tmp_path / "nothing-*.csv"))


def test_resolve_files_glob_and_list(tmp_path):
    b = write(tmp_path / "part-b.csv", ["x"])
    a = write(tmp_path / "part-a.csv", ["x"])
    assert ip.resolve_files(str(tmp_path / "part-*.csv")) == [a, b]  # sorted
    assert ip.resolve_files(f"{b}, {a}") == [b, a]  # given order, spaces stripped
    with pytest.raises(ip.DataError, match="no data files"):
        ip.resolve_files("")


def test_read_raw_missing_file(tmp_path):
    with pytest.raises(ip.DataError, match=r"gone\.csv"):
        ip.read_raw(tiny_spec(), str(tmp_path / "gone.csv"), OPTS)


def test_cannot_mix_csv_and_tfrecord(tmp_path):
    a = write(tmp_path / "a.csv", GOOD_ROWS)
    b = str(tmp_path / "b.tfrecord")
    with tf.io.TFRecordWriter(b):
        pass
    with pytest.raises(ip.DataError, match="cannot mix"):
        ip.read_raw(tiny_spec(), [a, b], OPTS)


# ----------------------------------------------------------------------------------------
# Train / validation split.


def test_split_train_validation_disjoint_and_complete(tmp_path):
    # Each row carries its own id in "zip", so rows can be told apart after the split.
    a = write(tmp_path / "a.csv", [f"1,A,{i},t,yes" for i in range(60)])
    b = write(tmp_path / "b.csv", [f"1,B,{100 + i},t,no" for i in range(60)])
    spec = tiny_spec()

    def ids(split):
        opts = ip.ReadOptions(batch_size=16, split=split, validation_fraction=0.3)
        feats, _ = collect(ip.read_raw(spec, [a, b], opts))
        return flat(feats["zip"])

    train, val, everything = ids("train"), ids("validation"), ids(None)
    assert len(everything) == 120
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == sorted(everything)
    # A 30% hash split of 120 rows: both sides are far from empty (expected 36 in validation).
    assert 15 <= len(val) <= 60
    # Deterministic: the same split again gives the same rows.
    assert ids("validation") == val


# ----------------------------------------------------------------------------------------
# TFRecord.

TF_ROWS = [
    ({"hours": 1.5, "city": "Paris", "zip": 75001, "tags": ["a", "b"]}, 1.0),
    ({"hours": -2.0, "city": "Oslo", "zip": 150, "tags": []}, 0.0),
    ({"hours": 40.0, "city": "", "zip": -1, "tags": ["c"]}, 0.0),
]


@pytest.mark.parametrize("name", ["data.tfrecord", "data.tfrecords.gz"])
def test_tfrecord_round_trip(tmp_path, name):
    spec = tiny_spec()
    path = str(tmp_path / name)
    options = tf.io.TFRecordOptions(compression_type="GZIP" if name.endswith(".gz") else "")
    with tf.io.TFRecordWriter(path, options) as writer:
        for row, label in TF_ROWS:
            writer.write(ip.make_example(spec, row, label).SerializeToString())
    feats, labels = collect(ip.read_raw(spec, path, ip.ReadOptions(batch_size=2)))
    assert flat(feats["hours"]) == [1.5, -2.0, 40.0]
    assert flat(feats["city"]) == ["Paris", "Oslo", ""]
    assert flat(feats["zip"]) == [75001, 150, -1]
    assert feats["tags"] == [[b"a", b"b"], [], [b"c"]]
    assert labels == [1.0, 0.0, 0.0]


def test_tfrecord_missing_feature_gets_default(tmp_path):
    spec = tiny_spec()
    path = str(tmp_path / "data.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(ip.make_example(spec, {"city": "X"}, 1.0).SerializeToString())
    feats, _ = collect(ip.read_raw(spec, path, OPTS))
    # Absent features take raw_default: hours 7.5 (given), zip -1; tags an empty list.
    assert flat(feats["hours"]) == [7.5]
    assert flat(feats["zip"]) == [-1]
    assert feats["tags"] == [[]]


def test_parse_examples_without_label():
    spec = tiny_spec()
    serialized = tf.constant([ip.make_example(spec, TF_ROWS[0][0]).SerializeToString()])
    parsed = ip.parse_examples(spec, serialized, with_label=False)
    assert "y" not in parsed
    assert parsed["city"].numpy().tolist() == [[b"Paris"]]


def test_is_tfrecord():
    assert ip.is_tfrecord("x.tfrecord") and ip.is_tfrecord("x.tfrecords.gz")
    assert not ip.is_tfrecord("x.csv") and not ip.is_tfrecord("x.csv.gz")
    assert not ip.is_tfrecord(os.path.join("tfrecord", "x.csv"))


# ----------------------------------------------------------------------------------------
# Non-finite numbers are bad rows (refused, never read as missing), in CSV and TFRecord.


def write_tfrecord(path, rows: list[tuple[dict, float]]) -> str:
    spec = tiny_spec()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row, label in rows:
            writer.write(ip.make_example(spec, row, label).SerializeToString())
    return str(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_tfrecord_non_finite_number_names_file_record_and_field(tmp_path, value):
    rows = [TF_ROWS[0], ({**TF_ROWS[1][0], "hours": value}, 0.0), TF_ROWS[2]]
    path = write_tfrecord(tmp_path / "data.tfrecord", rows)
    with pytest.raises(ip.DataError) as info:
        collect(ip.read_raw(tiny_spec(), path, OPTS))
    message = str(info.value)
    assert message.startswith(ip.MALFORMED)
    assert f"{path}:record 2: field 'hours' value '{value}' is not a finite number" in message


def test_tfrecord_non_finite_label_is_a_bad_row(tmp_path):
    path = write_tfrecord(tmp_path / "data.tfrecord", [(TF_ROWS[0][0], float("nan"))])
    with pytest.raises(ip.DataError, match=r"data.tfrecord:record 1: field 'y' value 'nan'"):
        collect(ip.read_raw(tiny_spec(), path, OPTS))


def test_non_finite_rows_skipped_and_counted(tmp_path):
    rows = [
        TF_ROWS[0],
        ({**TF_ROWS[1][0], "hours": float("inf")}, 0.0),
        TF_ROWS[2],
        ({**TF_ROWS[0][0], "hours": float("nan")}, 1.0),
    ]
    records = write_tfrecord(tmp_path / "data.tfrecord", rows)
    csv = write(tmp_path / "data.csv", ["1,A,1,a,yes", "1e39,B,2,b,no", "3,C,3,c,no"])
    for path, kept in ((records, ["Paris", ""]), (csv, ["A", "C"])):
        counter = ip.BadRowCounter()
        opts = ip.ReadOptions(batch_size=3, skip_bad_rows=True)
        feats, _ = collect(ip.read_raw(tiny_spec(), path, opts, counter))
        assert flat(feats["city"]) == kept
        assert all(np.isfinite(flat(feats["hours"])))
        assert counter.count == len(rows) - 2 if path == records else 1


# ----------------------------------------------------------------------------------------
# Serving: numeric features of serialized tf.Examples (parse_examples(lenient_numbers=True)).


def example(**features) -> bytes:
    """A serialized tf.Example built with example_pb2: float → float_list, int → int64_list,
    bytes → bytes_list, a list of floats → a float_list of several values."""
    from tensorflow.core.example import example_pb2

    e = example_pb2.Example()
    for name, value in features.items():
        f = e.features.feature[name]
        if isinstance(value, float):
            f.float_list.value.append(value)
        elif isinstance(value, int):
            f.int64_list.value.append(value)
        elif isinstance(value, bytes):
            f.bytes_list.value.append(value)
        else:
            f.float_list.value.extend(value)
    return e.SerializeToString()


def merged(serialized: bytes) -> bytes:
    """What protobuf itself makes of a byte string: parse and serialize again."""
    from tensorflow.core.example import example_pb2

    return example_pb2.Example.FromString(serialized).SerializeToString()


def lenient(serialized: list[bytes]) -> dict[str, list]:
    parsed = ip.parse_examples(tiny_spec(), tf.constant(serialized), False, lenient_numbers=True)
    return {
        k: v.to_list() if isinstance(v, tf.RaggedTensor) else v.numpy().tolist()
        for k, v in parsed.items()
    }


def test_context_plus_example_parses_as_the_merged_example():
    """TF Serving feeds serialized context + serialized example (ExampleListWithContext):
    every feature kind must come out as protobuf merges the two (the last key wins)."""
    cases = [
        # numeric and categorical split between context and example
        (example(hours=41.0, zip=75001), example(city=b"Paris", tags=b"t")),
        (example(city=b"Oslo", tags=b"x"), example(hours=12, zip=7)),
        # the same key on both sides: the example's wins, for every kind
        (example(hours=1.0, city=b"A", zip=1, tags=b"a"), example(hours=2.0, city=b"B", zip=2)),
        (example(hours=[1.0, 2.0]), example(hours=3.0)),  # a replaced entry is not checked
        (b"", example(hours=5.0)),
        (example(hours=6.0), b""),
    ]
    for context, ex in cases:
        got = lenient([context + ex])
        want = lenient([merged(context + ex)])
        assert got == want, (context, ex)
    # and the expectations, spelt out for the first and third case
    first = lenient([cases[0][0] + cases[0][1]])
    assert (first["hours"], first["zip"], first["city"]) == ([[41.0]], [[75001]], [[b"Paris"]])
    third = lenient([cases[2][0] + cases[2][1]])
    assert (third["hours"], third["city"], third["zip"]) == ([[2.0]], [[b"B"]], [[2]])


def test_numeric_feature_int64_or_float_or_absent():
    got = lenient([example(hours=39), example(hours=39.5), example(city=b"x")])
    assert got["hours"] == [[39.0], [39.5], [7.5]]  # absent: the spec's default


@pytest.mark.parametrize(
    "serialized, message",
    [
        (
            example(hours=b"39"),
            "feature hours is numeric: send a float or int64 value, not bytes",
        ),
        (example(hours=[39.0, 40.0]), "feature hours is numeric: it takes exactly one value"),
        (example(hours=[]), "feature hours is numeric: it takes exactly one value"),
    ],
    ids=["bytes", "two_values", "no_value"],
)
def test_numeric_feature_of_the_wrong_type_or_count_is_invalid_argument(serialized, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        lenient([example(hours=1.0), serialized])
