"""Tests of wdl_tf.features: loading, validation errors and serialization of FeatureSpec."""

from __future__ import annotations

import copy
import json
import os

import pytest

from wdl_tf import features as fs


def base_spec() -> dict:
    """A small valid spec: one of each kind, plus a cross. Tests mutate a fresh copy."""
    return {
        "name": "tiny",
        "csv": {"columns": ["age", "city", "job", "tags", "more_tags", "y"]},
        "label": {"name": "y"},
        "features": [
            {"name": "age", "kind": "numeric", "bucketize": {"boundaries": [18, 30, 60]}},
            {"name": "city", "kind": "categorical", "vocabulary": {"min_count": 2}},
            {"name": "job", "kind": "categorical", "hash_buckets": 100},
            {"name": "tags", "kind": "multivalent", "separator": "|"},
            {"name": "more_tags", "kind": "multivalent"},
        ],
        "crosses": [{"features": ["city", "job"], "hash_buckets": 50}],
    }


def test_base_spec_is_valid():
    # Guards every error test below: each one changes exactly one thing in a valid spec.
    spec = fs.from_dict(base_spec())
    assert spec.feature_names == ("age", "city", "job", "tags", "more_tags")
    assert spec.crosses[0].key == "city_X_job"


# ----------------------------------------------------------------------------------------
# The census preset.


def test_census_preset_loads():
    spec = fs.load("census")
    # Values read off wdl_tf/specs/census.json.
    assert spec.name == "census"
    assert len(spec.csv.columns) == 15
    assert spec.csv.na_values == ("?",)
    assert spec.csv.comment_prefix == "|"
    assert spec.label.name == "income_bracket"
    assert spec.label.positive_values == (">50K", ">50K.")
    assert len(spec.features) == 13
    assert len(spec.crosses) == 5
    age = spec.feature("age")
    assert age.kind == fs.NUMERIC and age.dtype == "float"
    assert age.bucketize.boundaries == (18.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0)
    # 10 boundaries cut the line into 11 buckets.
    assert age.bucketize.num_buckets == 11
    assert age.is_sparse
    assert not spec.feature("education_num").is_sparse  # numeric without buckets
    assert spec.feature("education_num").wide is False
    assert spec.feature("occupation").hash_buckets == 1000
    assert spec.feature("occupation").vocabulary is None
    assert spec.feature("native_country").vocabulary.min_count == 10
    assert spec.crosses[1].features == ("age", "education", "occupation")
    assert "census" in fs.preset_names()


def test_load_by_path_equals_preset():
    spec = fs.load(os.path.join(fs.SPEC_DIR, "census.json"))
    assert spec == fs.preset("census")


def test_raw_defaults():
    spec = fs.from_dict(
        {
            "csv": {"columns": ["n", "s", "i", "m", "d", "y"]},
            "label": {"name": "y"},
            "features": [
                {"name": "n", "kind": "numeric"},
                {"name": "s", "kind": "categorical"},
                {"name": "i", "kind": "categorical", "dtype": "int"},
                {"name": "m", "kind": "multivalent"},
                {"name": "d", "kind": "numeric", "default": 3},
            ],
        }
    )
    # Documented in FeatureConfig.raw_default: 0.0 for numerics, -1 for int ids, "" otherwise.
    assert spec.feature("n").raw_default == 0.0
    assert spec.feature("s").raw_default == ""
    assert spec.feature("i").raw_default == -1
    assert spec.feature("m").raw_default == ""
    assert spec.feature("d").raw_default == 3.0
    assert isinstance(spec.feature("d").raw_default, float)


def test_defaults_filled_in():
    spec = fs.from_dict(base_spec())
    city = spec.feature("city")
    assert city.vocabulary == fs.VocabularySpec(min_count=2, num_oov_buckets=1, max_tokens=None)
    assert city.embedding_dim == fs.DEFAULT_EMBEDDING_DIM
    # A categorical without vocabulary or hash_buckets gets a default vocabulary.
    assert spec.feature("more_tags").vocabulary == fs.VocabularySpec()
    assert spec.feature("job").vocabulary is None
    assert spec.name == "tiny"
    assert spec.label.negative_values == ("0",)


# ----------------------------------------------------------------------------------------
# Serialization round trips.


def test_census_round_trip_to_dict_from_dict():
    spec = fs.preset("census")
    assert fs.from_dict(spec.to_dict()) == spec


def test_save_load_round_trip(tmp_path):
    spec = fs.from_dict(base_spec())
    path = tmp_path / "spec.json"
    spec.save(str(path))
    assert fs.load(str(path)) == spec


def test_round_trip_of_every_field_kind():
    # Non-default values everywhere, so that a field dropped by to_dict would show.
    obj = {
        "name": "rich",
        "csv": {
            "columns": ["n", "q", "i", "m", "y"],
            "delimiter": ";",
            "na_values": ["?", "-"],
            "comment_prefix": "#",
            "skip_header_lines": 2,
        },
        "label": {"name": "y", "positive_values": ["p"], "negative_values": ["n", "nn"]},
        "features": [
            {
                "name": "n",
                "kind": "numeric",
                "normalization": "zscore",
                "default": 1.5,
                "wide": False,
                "embedding_dim": 8,
            },
            {"name": "q", "kind": "numeric", "num_quantiles": 7, "bucketize": {"num_quantiles": 3}},
            {
                "name": "i",
                "kind": "categorical",
                "dtype": "int",
                "default": 4,
                "vocabulary": {"min_count": 3, "num_oov_buckets": 2, "max_tokens": 10},
            },
            {
                "name": "m",
                "kind": "multivalent",
                "separator": ";;",
                "combiner": "sqrtn",
                "wide_combiner": "mean",
                "hash_buckets": 64,
                "deep": False,
            },
        ],
        "crosses": [{"features": ["m", "q", "i"], "hash_buckets": 5, "name": "mqi"}],
    }
    spec = fs.from_dict(obj)
    assert spec.feature("m").combiner == "sqrtn"  # the values really were read
    assert spec.feature("m").wide_combiner == "mean"
    assert spec.feature("i").wide_combiner == "sum"  # the default, not written for ids
    assert spec.crosses[0].key == "mqi"
    assert fs.from_dict(spec.to_dict()) == spec
    assert fs.from_json(spec.to_json()) == spec


def test_to_dict_is_json_and_drops_none():
    spec = fs.from_dict(base_spec())
    obj = json.loads(spec.to_json())
    assert obj == spec.to_dict()
    job = obj["features"][2]
    # job has hash_buckets and no vocabulary: the None must not be written out.
    assert job["hash_buckets"] == 100
    assert "vocabulary" not in job
    assert "default" not in job


# ----------------------------------------------------------------------------------------
# Validation errors: each names the field and the bad value.


def _mutated(mutate) -> dict:
    obj = copy.deepcopy(base_spec())
    mutate(obj)
    return obj


def spec_error(mutate) -> str:
    with pytest.raises(fs.FeatureSpecError) as info:
        fs.from_dict(_mutated(mutate))
    return str(info.value)


def test_cross_with_unknown_feature():
    def mutate(o):
        o["crosses"] = [{"features": ["city", "planet"], "hash_buckets": 10}]

    with pytest.raises(fs.FeatureSpecError, match=r"crosses\[0\]\.features\[1\].*'planet'"):
        fs.from_dict(_mutated(mutate))


@pytest.mark.parametrize("value", [0, -3])
def test_feature_hash_buckets_not_positive(value):
    def mutate(o):
        o["features"][2]["hash_buckets"] = value

    with pytest.raises(
        fs.FeatureSpecError, match=rf"features\[2\]\.hash_buckets: .*>= 1, got {value}"
    ):
        fs.from_dict(_mutated(mutate))


@pytest.mark.parametrize("value", [0, -1])
def test_cross_hash_buckets_not_positive(value):
    def mutate(o):
        o["crosses"][0]["hash_buckets"] = value

    with pytest.raises(fs.FeatureSpecError, match=rf"crosses\[0\]\.hash_buckets: .*got {value}"):
        fs.from_dict(_mutated(mutate))


def test_hash_buckets_not_an_int():
    def mutate(o):
        o["features"][2]["hash_buckets"] = "many"

    with pytest.raises(fs.FeatureSpecError, match=r"features\[2\]\.hash_buckets.*'many'"):
        fs.from_dict(_mutated(mutate))


def test_hash_buckets_bool_rejected():
    # JSON true is an int in Python; the spec must not read it as 1 bucket.
    def mutate(o):
        o["features"][2]["hash_buckets"] = True

    with pytest.raises(fs.FeatureSpecError, match=r"features\[2\]\.hash_buckets.*True"):
        fs.from_dict(_mutated(mutate))


def test_unknown_normalization():
    def mutate(o):
        o["features"][0]["normalization"] = "minmax"

    msg = spec_error(mutate)
    assert "features[0].normalization" in msg
    assert "'minmax'" in msg
    for allowed in ("cdf", "zscore", "none"):
        assert allowed in msg


def test_unknown_kind():
    def mutate(o):
        o["features"][1]["kind"] = "image"

    with pytest.raises(
        fs.FeatureSpecError, match=r"features\[1\]\.kind: unknown value 'image'.*categorical"
    ):
        fs.from_dict(_mutated(mutate))


def test_unknown_field():
    def mutate(o):
        o["features"][1]["colour"] = "red"

    with pytest.raises(fs.FeatureSpecError, match=r"features\[1\]: unknown field.*'colour'"):
        fs.from_dict(_mutated(mutate))


def test_unknown_top_level_field():
    def mutate(o):
        o["labels"] = {}

    with pytest.raises(fs.FeatureSpecError, match=r"unknown field.*'labels'"):
        fs.from_dict(_mutated(mutate))


@pytest.mark.parametrize("bounds", [[1, 1, 2], [5, 3], [0, 10, 9]])
def test_bucket_boundaries_not_increasing(bounds):
    def mutate(o):
        o["features"][0]["bucketize"] = {"boundaries": bounds}

    with pytest.raises(
        fs.FeatureSpecError,
        match=r"features\[0\]\.bucketize\.boundaries: must be strictly increasing, got "
        + json.dumps(bounds).replace("[", r"\["),
    ):
        fs.from_dict(_mutated(mutate))


def test_bucketize_needs_exactly_one_of():
    def mutate(o):
        o["features"][0]["bucketize"] = {"boundaries": [1.0], "num_quantiles": 4}

    with pytest.raises(fs.FeatureSpecError, match=r"features\[0\]\.bucketize: give exactly one"):
        fs.from_dict(_mutated(mutate))


def test_feature_not_a_csv_column():
    def mutate(o):
        o["features"].append({"name": "salary", "kind": "numeric"})

    with pytest.raises(fs.FeatureSpecError, match=r"features\[5\]\.name: 'salary' is not a column"):
        fs.from_dict(_mutated(mutate))


def test_label_not_a_csv_column():
    def mutate(o):
        o["label"]["name"] = "clicked"

    with pytest.raises(fs.FeatureSpecError, match=r"label\.name: 'clicked' is not a column"):
        fs.from_dict(_mutated(mutate))


def test_feature_is_the_label():
    def mutate(o):
        o["features"].append({"name": "y", "kind": "numeric"})

    with pytest.raises(fs.FeatureSpecError, match=r"features\[5\]\.name: 'y' is the label"):
        fs.from_dict(_mutated(mutate))


def test_two_multivalent_in_one_cross():
    def mutate(o):
        o["crosses"] = [{"features": ["tags", "more_tags"], "hash_buckets": 10}]

    with pytest.raises(
        fs.FeatureSpecError,
        match=r"crosses\[0\]\.features: at most one multivalent.*'tags'.*'more_tags'",
    ):
        fs.from_dict(_mutated(mutate))


def test_multivalent_with_single_cross_is_allowed():
    obj = _mutated(lambda o: o["crosses"].append({"features": ["tags", "city"], "hash_buckets": 9}))
    spec = fs.from_dict(obj)
    assert spec.cross_is_multivalent(spec.crosses[1])
    assert not spec.cross_is_multivalent(spec.crosses[0])


def test_cross_of_unbucketized_numeric():
    def mutate(o):
        del o["features"][0]["bucketize"]
        o["crosses"] = [{"features": ["age", "city"], "hash_buckets": 10}]

    with pytest.raises(fs.FeatureSpecError, match=r"crosses\[0\]\.features\[0\].*'age'.*bucketize"):
        fs.from_dict(_mutated(mutate))


def test_cross_needs_two_features():
    def mutate(o):
        o["crosses"] = [{"features": ["city"], "hash_buckets": 10}]

    with pytest.raises(fs.FeatureSpecError, match=r"crosses\[0\]\.features: .*at least 2"):
        fs.from_dict(_mutated(mutate))


def test_vocabulary_and_hash_buckets_exclusive():
    def mutate(o):
        o["features"][1]["hash_buckets"] = 10

    with pytest.raises(fs.FeatureSpecError, match=r"features\[1\] \('city'\).*not both"):
        fs.from_dict(_mutated(mutate))


def test_numeric_only_field_on_categorical():
    def mutate(o):
        o["features"][1]["normalization"] = "zscore"

    with pytest.raises(
        fs.FeatureSpecError, match=r"features\[1\]\.normalization: only allowed for a numeric"
    ):
        fs.from_dict(_mutated(mutate))


def test_wide_combiner_is_checked_and_only_for_lists():
    def bad_value(o):
        o["features"][3]["wide_combiner"] = "max"

    def on_categorical(o):
        o["features"][1]["wide_combiner"] = "mean"

    assert "features[3].wide_combiner" in spec_error(bad_value)
    assert "'max'" in spec_error(bad_value) and "sqrtn" in spec_error(bad_value)
    assert "only allowed for a multivalent feature" in spec_error(on_categorical)


def test_feature_defined_twice():
    def mutate(o):
        o["features"].append({"name": "city", "kind": "categorical"})

    with pytest.raises(fs.FeatureSpecError, match=r"features\[5\]\.name: feature 'city'.*twice"):
        fs.from_dict(_mutated(mutate))


def test_label_value_both_positive_and_negative():
    def mutate(o):
        o["label"] = {"name": "y", "positive_values": ["yes", "1"], "negative_values": ["1"]}

    with pytest.raises(fs.FeatureSpecError, match=r"label: value\(s\) \['1'\]"):
        fs.from_dict(_mutated(mutate))


def test_cross_name_clashes_with_feature():
    def mutate(o):
        o["crosses"][0]["name"] = "city"

    with pytest.raises(fs.FeatureSpecError, match=r"crosses: name\(s\) \['city'\]"):
        fs.from_dict(_mutated(mutate))


def test_invalid_json_names_source():
    with pytest.raises(fs.FeatureSpecError, match=r"my\.json: not valid JSON"):
        fs.from_json("{not json", source="my.json")


# ----------------------------------------------------------------------------------------
# load().


def test_load_missing_file(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(fs.FeatureSpecError, match=r"nope\.json.*does not exist"):
        fs.load(path)


def test_load_unknown_preset():
    with pytest.raises(
        fs.FeatureSpecError, match=r"unknown feature spec preset 'censu'; presets are .*census"
    ):
        fs.load("censu")


def test_load_invalid_file_names_field(tmp_path):
    obj = _mutated(lambda o: o["features"][1].update(kind="nope"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(fs.FeatureSpecError, match=r"features\[1\]\.kind: unknown value 'nope'"):
        fs.load(str(path))
