"""Tests of wdl_tf.preprocessing: adapt, the CDF layer and FeaturePreprocessor encodings."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import features as fs
from wdl_tf import preprocessing as pp


def make_spec(features: list[dict], crosses: list[dict] | None = None) -> fs.FeatureSpec:
    return fs.from_dict(
        {
            "csv": {"columns": [f["name"] for f in features] + ["y"]},
            "label": {"name": "y"},
            "features": features,
            "crosses": crosses or [],
        }
    )


def strings(*values: str) -> tf.Tensor:
    """A [B, 1] string batch, as the input pipeline produces."""
    return tf.constant([[v] for v in values])


def floats(*values: float) -> tf.Tensor:
    return tf.constant([[v] for v in values], tf.float32)


def ints(*values: int) -> tf.Tensor:
    return tf.constant([[v] for v in values], tf.int64)


def column(t: tf.Tensor) -> list:
    return np.asarray(t).reshape(-1).tolist()


# ----------------------------------------------------------------------------------------
# Quantiles and the CDF normalization.


def test_quantile_boundaries_1_to_100():
    # np.quantile (linear) of 1..100 at q: position 99 q (0-based) between sorted values.
    # q = .25 -> 24.75 -> 25 + .75 = 25.75; q = .5 -> 49.5 -> 50.5; q = .75 -> 74.25 -> 75.25.
    values = np.arange(1, 101, dtype=np.float64)
    assert pp.quantile_boundaries(values, 4) == [25.75, 50.5, 75.25]


def test_quantile_boundaries_deduplicated():
    # Constant data: every cut point is 7, kept once.
    assert pp.quantile_boundaries(np.full(10, 7.0), 4) == [7.0]


def test_cdf_normalization_1_to_100():
    boundaries = pp.quantile_boundaries(np.arange(1, 101, dtype=np.float64), 4)
    layer = pp.CdfNormalization(boundaries)
    # #boundaries <= x over 3 boundaries: 10 -> 0, 30 -> 1, 60 -> 2, 90 -> 3; divided by 3.
    # 50.5 equals a boundary, which belongs to the upper bucket: 2 of 3 boundaries are <= it.
    out = column(layer(floats(10, 30, 60, 90, 50.5)))
    np.testing.assert_allclose(out, [0.0, 1 / 3, 2 / 3, 1.0, 2 / 3], rtol=1e-6)


def test_cdf_normalization_extremes_and_config():
    layer = pp.CdfNormalization([1.0, 2.0])
    # Far below the first cut point -> 0; far above the last -> 1 (never outside [0, 1]).
    np.testing.assert_allclose(column(layer(floats(-1e9, 1e9))), [0.0, 1.0])
    assert layer.get_config()["boundaries"] == [1.0, 2.0]


# ----------------------------------------------------------------------------------------
# Vocabularies.


def test_vocabulary_min_count_and_order():
    counts = collections.Counter({"b": 3, "a": 3, "c": 5, "d": 1, "e": 2})
    # min_count=2 drops d (1 occurrence); c (5) first, then a and b (3, tie by token), e (2).
    vocab = pp.vocabulary_from_counts(counts, fs.VocabularySpec(min_count=2))
    assert vocab == ["c", "a", "b", "e"]


def test_vocabulary_max_tokens():
    counts = collections.Counter({"b": 3, "a": 3, "c": 5, "d": 1, "e": 2})
    vocab = pp.vocabulary_from_counts(counts, fs.VocabularySpec(min_count=1, max_tokens=2))
    # The 2 most frequent: c (5), then a (3, before b by token).
    assert vocab == ["c", "a"]


def test_vocabulary_min_count_drops_everything():
    counts = collections.Counter({"a": 1, "b": 2})
    assert pp.vocabulary_from_counts(counts, fs.VocabularySpec(min_count=3)) == []


# ----------------------------------------------------------------------------------------
# adapt.


def test_adapt_learns_vocabulary_moments_and_quantiles():
    spec = make_spec(
        [
            {"name": "c", "kind": "categorical", "vocabulary": {"min_count": 2}},
            {
                "name": "x",
                "kind": "numeric",
                "normalization": "cdf",
                "num_quantiles": 2,
                "bucketize": {"num_quantiles": 2},
            },
            {"name": "t", "kind": "multivalent"},
        ]
    )
    batches = [
        {"c": strings("a", "b", "a"), "x": floats(1, 2, 3), "t": strings("p|q", "", "q")},
        {"c": strings("a", "b", "z"), "x": floats(4, 5, 6), "t": strings("q|r", "p", "")},
    ]
    state = pp.adapt(spec, batches)
    assert state.rows_seen == 6
    # c: a x3, b x2, z x1 -> z is below min_count 2.
    assert state.features["c"].vocabulary == ["a", "b"]
    # t elements: q x3, p x2, r x1 (empty lists contribute no token, min_count 1).
    assert state.features["t"].vocabulary == ["q", "p", "r"]
    # x = 1..6: mean 3.5, population variance 35/12.
    assert state.features["x"].mean == pytest.approx(3.5)
    assert state.features["x"].std == pytest.approx(np.sqrt(35 / 12))
    # The median of 1..6 (linear) is 3.5: the one cut point between 2 quantiles.
    assert state.features["x"].cdf_boundaries == pytest.approx([3.5])
    assert state.features["x"].bucket_boundaries == pytest.approx([3.5])
    assert state.features["c"].mean is None


def test_adapt_stops_after_max_rows():
    spec = make_spec([{"name": "x", "kind": "numeric", "normalization": "zscore"}])
    batches = [{"x": floats(1, 2)}, {"x": floats(3, 4)}, {"x": floats(100, 200)}]
    # max_rows=3 stops after the 2nd batch (the one that reaches it): mean of 1..4 = 2.5.
    state = pp.adapt(spec, batches, max_rows=3)
    assert state.rows_seen == 4
    assert state.features["x"].mean == pytest.approx(2.5)


def test_adapt_without_rows():
    spec = make_spec([{"name": "x", "kind": "numeric"}])
    with pytest.raises(ValueError, match="no rows"):
        pp.adapt(spec, [])


def test_adapt_missing_value_is_oov():
    spec = make_spec([{"name": "c", "kind": "categorical"}])
    # "" is what the CSV parser produces for an empty / na_values field of a string feature.
    state = pp.adapt(spec, [{"c": strings("a", "", "", "b")}])
    assert "" not in state.features["c"].vocabulary
    encoded = pp.FeaturePreprocessor(spec, state)({"c": strings("")})
    assert column(encoded["c"]) == [0]


# ----------------------------------------------------------------------------------------
# FeaturePreprocessor encodings, from hand-built states.


def state_of(**features: pp.FeatureState) -> pp.PreprocessingState:
    return pp.PreprocessingState(features=dict(features), rows_seen=1)


def test_string_lookup_oov_and_min_count():
    spec = make_spec([{"name": "c", "kind": "categorical", "vocabulary": {"min_count": 2}}])
    state = pp.adapt(spec, [{"c": strings("x", "y", "x", "y", "y", "rare")}])
    # y (3) before x (2); "rare" (1) is below min_count.
    assert state.features["c"].vocabulary == ["y", "x"]
    prep = pp.FeaturePreprocessor(spec, state)
    out = prep({"c": strings("y", "x", "rare", "never_seen")})
    # StringLookup: OOV at 0 (1 OOV bucket), vocabulary from 1 in order: y=1, x=2.
    assert column(out["c"]) == [1, 2, 0, 0]
    assert out["c"].dtype == tf.int64
    assert out["c"].shape == (4, 1)
    (enc,) = prep.encoded_features
    assert (enc.name, enc.kind, enc.size) == ("c", "ids", 3)  # 2 tokens + 1 OOV


def test_two_oov_buckets():
    spec = make_spec([{"name": "c", "kind": "categorical", "vocabulary": {"num_oov_buckets": 2}}])
    prep = pp.FeaturePreprocessor(spec, state_of(c=pp.FeatureState(vocabulary=["a", "b"])))
    out = column(prep({"c": strings("a", "b", "zz", "qq", "zz")})["c"])
    # OOV ids are 0 and 1, vocabulary from 2.
    assert out[:2] == [2, 3]
    assert all(i in (0, 1) for i in out[2:])
    assert out[2] == out[4]  # the same unseen token always lands in the same OOV bucket
    assert prep.encoded_features[0].size == 4


def test_integer_lookup():
    spec = make_spec([{"name": "i", "kind": "categorical", "dtype": "int"}])
    prep = pp.FeaturePreprocessor(spec, state_of(i=pp.FeatureState(vocabulary=[30, 10, 20])))
    out = prep({"i": ints(10, 20, 30, 99)})
    # OOV at 0; vocabulary order: 30 -> 1, 10 -> 2, 20 -> 3; 99 unseen -> 0.
    assert column(out["i"]) == [2, 3, 1, 0]
    assert prep.encoded_features[0].size == 4


def test_empty_vocabulary_maps_everything_to_oov():
    spec = make_spec([{"name": "c", "kind": "categorical"}])
    prep = pp.FeaturePreprocessor(spec, state_of(c=pp.FeatureState(vocabulary=[])))
    assert column(prep({"c": strings("a", "")})["c"]) == [0, 0]


def test_hashed_categorical_ids_in_range():
    spec = make_spec([{"name": "h", "kind": "categorical", "hash_buckets": 7}])
    prep = pp.FeaturePreprocessor(spec, state_of(h=pp.FeatureState()))
    tokens = [f"tok{i}" for i in range(60)]
    ids = column(prep({"h": strings(*tokens)})["h"])
    assert all(0 <= i < 7 for i in ids)
    # 60 tokens over 7 buckets cannot all share one bucket unless hashing is broken.
    assert len(set(ids)) > 1
    # Deterministic: the same token, alone in another batch, gets the same id.
    assert column(prep({"h": strings("tok5")})["h"]) == [ids[5]]
    assert prep.encoded_features[0].size == 7


def test_single_valued_cross():
    spec = make_spec(
        [
            {"name": "a", "kind": "categorical", "hash_buckets": 10},
            {"name": "b", "kind": "categorical", "dtype": "int", "hash_buckets": 10},
        ],
        [{"features": ["a", "b"], "hash_buckets": 1000}],
    )
    prep = pp.FeaturePreprocessor(spec, state_of(a=pp.FeatureState(), b=pp.FeatureState()))
    pairs_a = [f"v{i % 5}" for i in range(20)]
    pairs_b = [i % 3 for i in range(20)]
    out = column(prep({"a": strings(*pairs_a), "b": ints(*pairs_b)})["a_X_b"])
    assert all(0 <= i < 1000 for i in out)
    by_pair: dict = {}
    for pair, i in zip(zip(pairs_a, pairs_b), out):
        by_pair.setdefault(pair, set()).add(i)
    # 15 distinct pairs; every occurrence of a pair gets the same id...
    assert len(by_pair) == 15
    assert all(len(ids) == 1 for ids in by_pair.values())
    # ...and the pairs are not all hashed together.
    assert len({next(iter(ids)) for ids in by_pair.values()}) > 1
    cross = prep.encoded_features[-1]
    assert (cross.name, cross.kind, cross.size, cross.deep) == ("a_X_b", "ids", 1000, False)


def test_multivalent_ids_shifted_and_padded():
    spec = make_spec([{"name": "t", "kind": "multivalent"}])
    prep = pp.FeaturePreprocessor(spec, state_of(t=pp.FeatureState(vocabulary=["a", "b", "c"])))
    out = prep({"t": strings("a|b|c", "c", "", "zz|a")})["t"]
    # Lookup ids: OOV 0, a 1, b 2, c 3; +1 so that 0 is free for padding: a 2, b 3, c 4, OOV 1.
    assert out.numpy().tolist() == [[2, 3, 4], [4, 0, 0], [0, 0, 0], [1, 2, 0]]
    assert out.dtype == tf.int64
    enc = prep.encoded_features[0]
    assert (enc.kind, enc.size) == ("multi_ids", 5)  # 3 tokens + OOV + pad row


def test_multivalent_custom_separator_and_int_dtype():
    spec = make_spec([{"name": "t", "kind": "multivalent", "dtype": "int", "separator": ";"}])
    prep = pp.FeaturePreprocessor(spec, state_of(t=pp.FeatureState(vocabulary=[7, 9])))
    out = prep({"t": strings("9;7", "5")})["t"]
    # 7 -> 1 + 1 = 2, 9 -> 2 + 1 = 3, 5 unseen -> 0 + 1 = 1.
    assert out.numpy().tolist() == [[3, 2], [1, 0]]


def test_multivalent_ragged_input():
    # The TFRecord path gives multivalent features as ragged lists, not "a|b" strings.
    spec = make_spec([{"name": "t", "kind": "multivalent"}])
    prep = pp.FeaturePreprocessor(spec, state_of(t=pp.FeatureState(vocabulary=["a", "b"])))
    out = prep({"t": tf.ragged.constant([["b", "a"], []])})["t"]
    assert out.numpy().tolist() == [[3, 2], [0, 0]]


def test_multivalent_cross_with_single():
    spec = make_spec(
        [
            {"name": "apps", "kind": "multivalent", "hash_buckets": 100},
            {"name": "imp", "kind": "categorical", "hash_buckets": 100},
        ],
        [{"features": ["apps", "imp"], "hash_buckets": 50}],
    )
    prep = pp.FeaturePreprocessor(spec, state_of(apps=pp.FeatureState(), imp=pp.FeatureState()))
    out = prep({"apps": strings("x|y", "", "z"), "imp": strings("P", "Q", "R")})["apps_X_imp"]

    # The documented definition (preprocessing.py, _multivalent_cross): per element,
    # to_hash_bucket_fast("<elem>_X_<single>", n) + 1, padded with 0.
    def h(s):
        return int(tf.strings.to_hash_bucket_fast(s, 50).numpy()) + 1

    assert out.numpy().tolist() == [[h("x_X_P"), h("y_X_P")], [0, 0], [h("z_X_R"), 0]]
    enc = prep.encoded_features[-1]
    assert (enc.kind, enc.size) == ("multi_ids", 51)


def test_multivalent_cross_pools_like_its_list_in_the_wide_part():
    spec = make_spec(
        [
            {"name": "apps", "kind": "multivalent", "hash_buckets": 100, "wide_combiner": "mean"},
            {"name": "imp", "kind": "categorical", "hash_buckets": 100},
        ],
        [{"features": ["apps", "imp"], "hash_buckets": 50}],
    )
    prep = pp.FeaturePreprocessor(spec, state_of(apps=pp.FeatureState(), imp=pp.FeatureState()))
    pooling = {e.name: e.wide_combiner for e in prep.encoded_features}
    assert pooling == {"apps": "mean", "imp": "sum", "apps_X_imp": "mean"}


def test_multivalent_cross_with_bucketized_numeric():
    spec = make_spec(
        [
            {"name": "apps", "kind": "multivalent", "hash_buckets": 100},
            {"name": "age", "kind": "numeric", "bucketize": {"boundaries": [18, 30]}},
        ],
        [{"features": ["apps", "age"], "hash_buckets": 50}],
    )
    state = state_of(
        apps=pp.FeatureState(),
        age=pp.FeatureState(cdf_boundaries=[25.0], bucket_boundaries=[18.0, 30.0]),
    )
    out = pp.FeaturePreprocessor(spec, state)({"apps": strings("x"), "age": floats(20)})
    # The numeric takes part by its bucket id: 20 is >= 18 only -> bucket 1 -> "x_X_1".
    expected = int(tf.strings.to_hash_bucket_fast("x_X_1", 50).numpy()) + 1
    assert out["apps_X_age"].numpy().tolist() == [[expected]]


def test_bucketized_numeric():
    spec = make_spec(
        [
            {
                "name": "age",
                "kind": "numeric",
                "normalization": "none",
                "bucketize": {"boundaries": [18, 25, 30]},
            }
        ]
    )
    state = state_of(age=pp.FeatureState(bucket_boundaries=[18.0, 25.0, 30.0]))
    prep = pp.FeaturePreprocessor(spec, state)
    out = prep({"age": floats(17, 18, 24.9, 29, 30, 100)})
    # Bucket id = #boundaries <= x: 17 -> 0, 18 -> 1, 24.9 -> 1, 29 -> 2, 30 -> 3, 100 -> 3.
    assert column(out["age_bucket"]) == [0, 1, 1, 2, 3, 3]
    assert out["age_bucket"].dtype == tf.int64
    # The deep part still sees the (un-normalized, "none") value.
    np.testing.assert_allclose(column(out["age"]), [17, 18, 24.9, 29, 30, 100], rtol=1e-6)
    kinds = {e.name: (e.kind, e.size, e.wide, e.deep) for e in prep.encoded_features}
    # 3 boundaries -> 4 buckets; with buckets the wide part reads the bucket, not the value.
    assert kinds == {"age_bucket": ("ids", 4, True, False), "age": ("dense", 1, False, True)}


def test_zscore_normalization():
    spec = make_spec([{"name": "x", "kind": "numeric", "normalization": "zscore"}])
    prep = pp.FeaturePreprocessor(spec, state_of(x=pp.FeatureState(mean=10.0, std=2.0)))
    out = column(prep({"x": floats(14, 7, 10)})["x"])
    # (x - 10) / 2: 14 -> 2, 7 -> -1.5, 10 -> 0.
    np.testing.assert_allclose(out, [2.0, -1.5, 0.0], atol=1e-6)


def test_cdf_normalization_in_preprocessor():
    spec = make_spec([{"name": "x", "kind": "numeric", "num_quantiles": 4}])
    state = pp.adapt(spec, [{"x": floats(*range(1, 101))}])
    assert state.features["x"].cdf_boundaries == [25.75, 50.5, 75.25]
    out = column(pp.FeaturePreprocessor(spec, state)({"x": floats(10, 30, 60, 90, 50.5)})["x"])
    np.testing.assert_allclose(out, [0, 1 / 3, 2 / 3, 1, 2 / 3], rtol=1e-6)


def test_census_preprocessor_outputs():
    spec = fs.preset("census")
    row = {
        "age": floats(39, 50),
        "education_num": floats(13, 13),
        "capital_gain": floats(2174, 0),
        "capital_loss": floats(0, 0),
        "hours_per_week": floats(40, 13),
        "workclass": strings("State-gov", "Self-emp"),
        "education": strings("Bachelors", "HS"),
        "marital_status": strings("Never", "Married"),
        "relationship": strings("Not", "Husband"),
        "occupation": strings("Adm", "Exec"),
        "race": strings("White", "White"),
        "gender": strings("Male", "Male"),
        "native_country": strings("US", "US"),
    }
    state = pp.adapt(spec, [row])
    out = pp.FeaturePreprocessor(spec, state)(row)
    expected_keys = {e.name for e in pp.FeaturePreprocessor(spec, state).encoded_features}
    assert set(out) == expected_keys
    # 4 bucketized numerics feed the wide part through buckets; education_num is deep only.
    assert {"age_bucket", "capital_gain_bucket", "hours_per_week_bucket"} <= set(out)
    assert "education_num_bucket" not in out
    assert {c.key for c in spec.crosses} <= set(out)
    for name, value in out.items():
        assert value.shape == (2, 1), name
    # age 39 is >= 18, 25, 30, 35 -> bucket 4; 50 is also >= 40, 45, 50 -> bucket 7.
    assert column(out["age_bucket"]) == [4, 7]
    # native_country has min_count 10: two rows of "US" are not enough -> OOV.
    assert column(out["native_country"]) == [0, 0]


# ----------------------------------------------------------------------------------------
# PreprocessingState persistence.


def test_state_save_load_round_trip(tmp_path):
    state = pp.PreprocessingState(
        features={
            "c": pp.FeatureState(vocabulary=["b", "a", "with space"]),
            "i": pp.FeatureState(vocabulary=[3, -7]),
            "x": pp.FeatureState(
                cdf_boundaries=[0.5, 1.25], bucket_boundaries=[1.0], mean=2.5, std=0.75
            ),
            "h": pp.FeatureState(),
        },
        rows_seen=42,
    )
    assert not pp.PreprocessingState.exists(str(tmp_path))
    state.save(str(tmp_path))
    assert pp.PreprocessingState.exists(str(tmp_path))
    loaded = pp.PreprocessingState.load(str(tmp_path))
    assert loaded == state
    assert (tmp_path / "vocabularies" / "c.txt").read_text() == "b\na\nwith space\n"
    assert (tmp_path / "vocabularies" / "i.txt").read_text() == "3\n-7\n"
    assert not (tmp_path / "vocabularies" / "x.txt").exists()
    # No temporary files left behind by the atomic writes.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preprocessing.json", "vocabularies"]
    obj = json.loads((tmp_path / "preprocessing.json").read_text())
    assert obj["features"]["h"] == {}  # None fields are not written


def test_state_round_trip_encodes_the_same(tmp_path):
    spec = make_spec(
        [{"name": "c", "kind": "categorical"}, {"name": "x", "kind": "numeric", "num_quantiles": 3}]
    )
    raw = {"c": strings("a", "b", "b", "c"), "x": floats(1, 2, 3, 4)}
    state = pp.adapt(spec, [raw])
    state.save(str(tmp_path))
    before = pp.FeaturePreprocessor(spec, state)(raw)
    after = pp.FeaturePreprocessor(spec, pp.PreprocessingState.load(str(tmp_path)))(raw)
    for k in before:
        np.testing.assert_array_equal(before[k].numpy(), after[k].numpy())
