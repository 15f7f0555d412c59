"""Warm start: rows copied by token through changed vocabularies; hashed layouts must match."""

import collections
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import checkpoints, input_pipeline, train_lib, warm_start
from wdl_tf import config as config_lib
from wdl_tf import features as fs


def test_vocabulary_rows_hand_built_remap():
    # Old: OOV=0, a=1, b=2, c=3. New: OOV=0, c=1, d=2, a=3.
    new_rows, old_rows = warm_start.vocabulary_rows(["a", "b", "c"], ["c", "d", "a"], 1, 1)
    assert dict(zip(new_rows.tolist(), old_rows.tolist())) == {0: 0, 1: 3, 3: 1}
    # Different OOV counts: OOV rows are not copied; tokens move by the OOV offset.
    new_rows, old_rows = warm_start.vocabulary_rows(["a", "b"], ["b", "a"], 1, 2)
    assert dict(zip(new_rows.tolist(), old_rows.tolist())) == {2: 2, 3: 1}
    # Multivalent tables keep row 0 for padding: everything moves by one.
    new_rows, old_rows = warm_start.vocabulary_rows(["a"], ["x", "a"], 1, 1, shift=1)
    assert dict(zip(new_rows.tolist(), old_rows.tolist())) == {1: 1, 3: 2}


def _spec_with(base: fs.FeatureSpec, **changes) -> dict:
    obj = base.to_dict()
    for f in obj["features"]:
        if f["name"] in changes:
            f.update(changes[f["name"]])
    return obj


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm")
    config = config_lib.preset(
        "test",
        model_dir=str(tmp / "old"),
        export_base="",
        epochs=2,
        model=config_lib.ModelConfig(hidden_units=(16, 8)),
    )
    # No validation split: both runs adapt their numeric normalization on the same rows, so
    # the only differences between them are the vocabularies under test.
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, validation_fraction=0.0)
    )
    train_lib.train_and_evaluate(config)
    return tmp, config


def _rebuild(config):
    spec = fs.load(os.path.join(config.model_dir, "feature_spec.json"))
    state = train_lib.pp.PreprocessingState.load(config.model_dir)
    preprocessor, model = train_lib.build_for_training(config, state, spec)
    return spec, state, preprocessor, model


def test_warm_started_model_scores_like_the_old_one_on_shared_tokens(previous):
    tmp, old_config = previous
    old_spec, _, old_prep, old_model = _rebuild(old_config)
    ckpt = tf.train.latest_checkpoint(os.path.join(old_config.model_dir, "checkpoints"))
    checkpoints.make_checkpoint(old_model, epoch=tf.Variable(0, dtype=tf.int64)).restore(
        ckpt
    ).assert_consumed()

    data = os.path.join(old_config.model_dir, "synthetic_data")
    train_file = os.path.join(data, next(f for f in os.listdir(data) if "train" in f))
    # The new run: two OOV buckets for workclass (every id moves) and a min_count that keeps
    # only the two most frequent education values of the file (the rows of dropped ones are
    # not copied; shared ones are). The synthetic values are near-uniform, so the threshold
    # is read from the file rather than fixed.
    column = old_spec.csv.columns.index("education")
    with open(train_file) as f:
        counts = collections.Counter(line.split(",")[column].strip() for line in f)
    min_count = sorted(counts.values(), reverse=True)[1]
    new_spec_obj = _spec_with(
        old_spec,
        workclass={"vocabulary": {"min_count": 5, "num_oov_buckets": 2}},
        education={"vocabulary": {"min_count": min_count}},
    )
    spec_path = tmp / "new_spec.json"
    spec_path.write_text(json.dumps(new_spec_obj))
    new_config = dataclasses.replace(
        old_config,
        model_dir=str(tmp / "new"),
        data=config_lib.DataConfig(
            dataset="files",
            feature_spec=str(spec_path),
            train_files=train_file,
            eval_files=train_file,
            validation_fraction=0.0,  # adapt on every row, so the counts above are the ones
        ),
    )
    os.makedirs(new_config.model_dir)
    new_spec = fs.load(str(spec_path))
    state = train_lib.load_or_adapt(new_config, new_spec, [train_file])
    old_vocab = set(
        train_lib.pp.PreprocessingState.load(old_config.model_dir).features["education"].vocabulary
    )
    assert set(state.features["education"].vocabulary) < old_vocab  # some tokens dropped

    prep, model = train_lib.build_for_training(new_config, state, new_spec)
    report = warm_start.warm_start(model, new_spec, state, old_config.model_dir)
    assert "wide/workclass" in report.remapped and "deep/emb_education" in report.remapped
    assert "deep/hidden_0/kernel" in report.copied and "wide/occupation" in report.copied

    raw, _ = next(
        iter(
            input_pipeline.read_raw(
                new_spec, train_file, input_pipeline.ReadOptions(batch_size=500)
            )
        )
    )
    # Shared tokens: education and workclass both in the new vocabularies (a missing
    # workclass is OOV, whose rows are not copied since the OOV count changed).
    shared = np.ones(500, dtype=bool)
    for name in ("education", "workclass"):
        values = raw[name].numpy().reshape(-1).astype(str)
        shared &= np.isin(values, list(state.features[name].vocabulary))
    old_p = old_model(old_prep(raw), training=False).numpy().reshape(-1)
    new_p = model(prep(raw), training=False).numpy().reshape(-1)
    assert shared.sum() > 30 and (~shared).sum() > 30
    np.testing.assert_allclose(new_p[shared], old_p[shared], atol=1e-5)
    # Rows with a dropped education value now hit fresh (OOV) rows: they do differ.
    assert np.max(np.abs(new_p[~shared] - old_p[~shared])) > 1e-4


def test_optimizer_slots_follow_their_rows(previous):
    _, old_config = previous
    spec, state, _, model = _rebuild(old_config)
    report = warm_start.warm_start(model, spec, state, old_config.model_dir, True)
    reader = tf.train.load_checkpoint(
        tf.train.latest_checkpoint(os.path.join(old_config.model_dir, "checkpoints"))
    )
    slot = next(
        v for v in model.optimizer.variables if v.path == "wide_ftrl/wide_education_accumulator"
    )
    saved = reader.get_tensor(
        "optimizer/wide_ftrl..wide_education_accumulator/.ATTRIBUTES/VARIABLE_VALUE"
    )
    np.testing.assert_array_equal(slot.numpy(), saved)
    assert slot.path in report.remapped


def test_hashed_bucket_change_fails_clearly(previous, tmp_path):
    _, old_config = previous
    spec, state, _, _ = _rebuild(old_config)
    obj = _spec_with(spec, occupation={"hash_buckets": 500})
    new_spec = fs.from_dict(obj)
    _, model = train_lib.build_for_training(old_config, state, new_spec)
    with pytest.raises(warm_start.WarmStartError, match="'occupation': hash bucket counts differ"):
        warm_start.warm_start(model, new_spec, state, old_config.model_dir)


def test_train_flag_warm_starts_a_new_model_dir(previous, tmp_path):
    _, old_config = previous
    config = dataclasses.replace(
        old_config, model_dir=str(tmp_path / "next"), epochs=1, warm_start_from=old_config.model_dir
    )
    result = train_lib.train_and_evaluate(config)
    report = json.load(open(os.path.join(config.model_dir, "warm_start.json")))
    assert "wide/bias" in report["copied"]
    assert result.metrics["auc"] > 0.7


def test_missing_previous_checkpoint(tmp_path, previous):
    _, old_config = previous
    spec, state, _, model = _rebuild(old_config)
    with pytest.raises(warm_start.WarmStartError, match="no checkpoint"):
        warm_start.warm_start(model, spec, state, str(tmp_path))
