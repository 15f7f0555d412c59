"""Continuous training: evolving vocabularies (by hand), the span loop, its gate and resume."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, run_script

from wdl_tf import checkpoints, continuous, export_versions, input_pipeline, train_lib
from wdl_tf import config as config_lib
from wdl_tf import features as fs
from wdl_tf import preprocessing as pp
from wdl_tf.config import DataConfig, ExportOptions, ModelConfig, TrainConfig

# ----------------------------------------------------------------------------------------
# Evolving vocabularies, with hand-made counts.


def _evolve(spans, min_count=3, window=2, evict_after=2, max_tokens=None, dtype="string"):
    """Runs evolve_vocabulary over {span: counts}; returns the vocabulary after each span."""
    spec = fs.VocabularySpec(min_count=min_count, max_tokens=max_tokens)
    history, vocab, out = pp.TokenHistory(), [], {}
    for span, counts in spans.items():
        history.add_span(span, collections.Counter(counts), window)
        vocab = pp.evolve_vocabulary(vocab, history, span, spec, evict_after, dtype)
        history.forget(vocab)
        out[span] = vocab
    return out


def test_tokens_are_admitted_kept_evicted_and_keep_their_ids():
    # min_count 3 over a window of 2 spans; evicted when unseen for 2 spans.
    vocab = _evolve(
        {
            1: {"a": 5, "b": 3, "c": 2},  # a, b in (most frequent first); c has 2 < 3
            2: {"a": 1, "c": 2, "d": 4},  # window: c 4, d 4 → admitted, ties by token
            3: {"a": 2, "d": 1, "e": 3},  # b unseen in 2 and 3 → evicted; e takes its id
            4: {"a": 3},  # c unseen in 3 and 4 → evicted, id 2 free
            5: {"a": 1, "f": 3, "g": 4},  # d, e evicted; g, f fill ids 1, 2; id 3 dropped
        }
    )
    free2 = pp.free_id_token("string", 2)
    assert vocab == {
        1: ["a", "b"],
        2: ["a", "b", "c", "d"],
        3: ["a", "e", "c", "d"],
        4: ["a", "e", free2, "d"],
        5: ["a", "g", "f"],
    }


def test_a_token_below_min_count_in_the_window_is_kept_while_seen():
    # "a" was admitted with 5; later spans see it once each (< min_count), it stays at id 0.
    vocab = _evolve({1: {"a": 5}, 2: {"a": 1, "b": 9}, 3: {"a": 1}, 4: {"a": 1}})
    assert [v[0] for v in vocab.values()] == ["a"] * 4
    assert vocab[3] == ["a", "b"]  # b unseen in span 3 only: kept
    assert vocab[4] == ["a"]  # unseen in spans 3 and 4: evicted (a trailing id: dropped)


def test_max_tokens_caps_new_tokens_never_kept_ones():
    vocab = _evolve({1: {"a": 3, "b": 9}, 2: {"a": 3, "b": 3, "c": 50}}, max_tokens=2)
    assert vocab[1] == ["b", "a"]
    assert vocab[2] == ["b", "a"]  # c is more frequent, but the kept tokens hold the cap


def test_first_span_is_vocabulary_from_counts():
    counts = collections.Counter({"x": 7, "y": 2, "z": 7, "w": 4})
    spec = fs.VocabularySpec(min_count=3)
    history = pp.TokenHistory()
    history.add_span(1, counts, 3)
    assert pp.evolve_vocabulary([], history, 1, spec, 2) == pp.vocabulary_from_counts(counts, spec)


def test_int_vocabulary_placeholders_are_ints_that_data_cannot_hold():
    vocab = _evolve({1: {7: 5, 8: 4, 9: 3}, 2: {7: 3, 9: 3}, 3: {7: 3, 9: 3}}, dtype="int")
    assert vocab[3][0] == 7 and vocab[3][2] == 9
    free = vocab[3][1]
    assert isinstance(free, int) and free < -(2**62) and pp.is_free_id_token(free)
    assert not pp.is_free_id_token(-1) and not pp.is_free_id_token(8)


def test_token_history_survives_json():
    history = pp.TokenHistory()
    history.add_span(3, {"a": 2, 5: 1}, 2)
    history.add_span(4, {"b": 1}, 2)
    history.add_span(5, {"a": 1}, 2)
    again = pp.TokenHistory.from_json(json.loads(json.dumps(history.to_json())))
    assert again == history
    assert [s for s, _ in again.window] == [4, 5]
    assert again.last_seen == {"a": 5, 5: 3, "b": 4}
    with pytest.raises(ValueError, match="span 5 is not after the last recorded 5"):
        again.add_span(5, {}, 2)


# ----------------------------------------------------------------------------------------
# Bad input: named, before anything is trained or written.


def _config(tmp_path, spans=3, **changes) -> continuous.ContinuousConfig:
    spec = fs.load("apps").to_dict()
    spec["crosses"][0]["hash_buckets"] = 1000  # small tables: quick saves and exports
    spec_path = tmp_path / "apps_small.json"
    spec_path.write_text(json.dumps(spec))
    data = changes.pop("data", {})
    train = TrainConfig(
        data=DataConfig(
            **{
                "dataset": "apps_synthetic",
                "feature_spec": str(spec_path),
                "synthetic_rows": 3000,
                "batch_size": 128,
                "eval_batch_size": 1024,
                **data,
            }
        ),
        model=ModelConfig(hidden_units=(16,)),
        export=ExportOptions(model_name="apps", max_auc_drop=0.0),
        model_dir=str(tmp_path / "run"),
        export_base=str(tmp_path / "export"),
        epochs=1,
        verbose=0,
    )
    settings = {"eval_every_steps": 6, "curve_eval_rows": 3000, **changes}
    return continuous.ContinuousConfig(train=train, spans=spans, **settings)


def test_every_span_dataset_the_config_accepts_has_a_span_source():
    """`config.SPAN_DATASETS` (what a config accepts; the config imports nothing from
    wdl_tf) and `continuous.SPAN_SOURCES` (how spans are made) must name the same datasets;
    the module-level assert that ties them is stripped by ``python -O``."""
    assert set(config_lib.SPAN_DATASETS) == set(continuous.SPAN_SOURCES)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"spans": 1}, "spans: must be >= 2 .* got 1"),
        ({"vocab_window": 0}, "vocab_window: must be >= 1, got 0"),
        ({"first_span": -1}, "first_span: must be >= 0, got -1"),
        ({"evict_after_spans": 0}, "evict_after_spans: must be >= 1, got 0"),
        ({"eval_every_steps": -1}, "eval_every_steps: must be >= 0, got -1"),
        ({"data": {"dataset": "census"}}, "'census' has no spans; allowed values are"),
        ({"span_files": "x.csv,y.csv,z.csv"}, "span_files: only with dataset 'files'"),
        ({"data": {"dataset": "files"}}, "dataset 'files' needs span_files"),
        (
            {"data": {"dataset": "files"}, "span_files": "a.csv,b.csv"},
            "span_files: 2 globs for spans=3",
        ),
    ],
)
def test_bad_settings_fail_before_training(tmp_path, changes, message):
    config = _config(tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        continuous.run(config)
    assert not os.path.exists(config.train.model_dir)


def test_a_span_glob_that_matches_nothing_is_named(tmp_path):
    for day in (1, 2):
        (tmp_path / f"day-{day}").mkdir()
        (tmp_path / f"day-{day}" / "part-0.csv").write_text("")
    pattern = str(tmp_path / "day-{span}" / "*.csv")
    config = _config(tmp_path, data={"dataset": "files"}, span_files=pattern)
    missing = pattern.replace("{span}", "3")
    with pytest.raises(input_pipeline.DataError, match=re.escape(f"span 3: data file '{missing}'")):
        continuous.run(config)
    assert not os.path.exists(config.train.model_dir)


def test_an_export_base_of_another_model_is_refused_before_training(tmp_path):
    config = _config(tmp_path)
    other = tmp_path / "export" / "1" / "assets.extra"
    other.mkdir(parents=True)
    fs.load("census").save(str(other / "feature_spec.json"))
    with pytest.raises(ValueError, match="version 1 was exported with another feature spec"):
        continuous.run(config)
    assert not os.path.exists(os.path.join(config.train.model_dir, "span-0001"))


# ----------------------------------------------------------------------------------------
# The loop, on three spans of the synthetic app store (two trained, each warm and cold).


@pytest.fixture(scope="module")
def three_spans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("continuous")
    config = _config(tmp)
    lines = []
    records = continuous.run(config, progress=lines.append)
    return config, records, lines


def _span_dir(config, n):
    return os.path.join(config.train.model_dir, f"span-{n:04d}")


@pytest.mark.slow
def test_continuous_json_has_a_record_per_trained_span(three_spans):
    config, records, lines = three_spans
    with open(os.path.join(config.train.model_dir, "continuous.json")) as f:
        saved = json.load(f)
    assert saved["spans"] == records
    assert [(r["span"], r["eval_span"]) for r in records] == [(1, 2), (2, 3)]
    assert [r["warm_started"] for r in records] == [False, True]
    published = [r["published_version"] for r in records if r["published_version"]]
    assert records[0]["published_version"] == 1  # nothing served yet: no gate
    assert export_versions.versions(config.train.export_base) == published
    for r in records:
        assert 0.0 < r["auc"] < 1.0
        assert r["steps"] == -(-3000 // 128)
        curves = json.load(open(os.path.join(_span_dir(config, r["span"]), "curves.json")))
        cold = curves["cold"]
        assert cold[0][0] == 0 and cold[-1][0] == r["steps"]
        assert r["cold_final_auc"] == cold[-1][1]
        assert r["steps_to_reach_cold"] == min(s for s, a in cold if a >= cold[-1][1])
        if r["published_version"]:
            path = os.path.join(config.train.export_base, str(r["published_version"]))
            stored = json.load(open(os.path.join(path, "assets.extra", "metrics.json")))
            assert stored["auc"] == r["auc"] and stored["span"] == r["span"]
        else:
            assert r["publish_note"].startswith("refused")
    assert records[0]["steps_to_reach_warm"] is None
    warm = json.load(open(os.path.join(_span_dir(config, 2), "curves.json")))["warm"]
    reached = [s for s, a in warm if a >= records[1]["cold_final_auc"]]
    assert records[1]["steps_to_reach_warm"] == (reached[0] if reached else None)
    assert any(line.startswith("span 2: auc") for line in lines)  # progress was shown


@pytest.mark.slow
def test_kept_tokens_keep_their_ids_and_new_ones_are_admitted(three_spans):
    config, records, _ = three_spans
    one = pp.PreprocessingState.load(_span_dir(config, 1)).features
    two = pp.PreprocessingState.load(_span_dir(config, 2)).features
    for name in ("impression_app", "installed_apps", "developer"):
        before, after = one[name].vocabulary, two[name].vocabulary
        assert after[: len(before)] == before  # nothing unseen for 3 spans yet: all kept
        assert records[1]["vocabulary"][name]["admitted"] == len(after) - len(before) > 0
        assert records[1]["vocabulary"][name]["evicted"] == 0


def _trained(config, n):
    """Span n's model as trained (restored from its checkpoint), with its spec and state."""
    directory = _span_dir(config, n)
    spec = fs.load(os.path.join(directory, "feature_spec.json"))
    state = pp.PreprocessingState.load(directory)
    preprocessor, model, _ = continuous.start_model(config, spec, state, None)
    latest = tf.train.latest_checkpoint(os.path.join(directory, "checkpoints"))
    checkpoints.make_checkpoint(model).restore(latest).assert_consumed()
    return spec, state, preprocessor, model


def _by_path(variables):
    return {v.path: np.array(v.numpy()) for v in variables}


@pytest.mark.slow
def test_a_warm_started_span_starts_from_the_previous_weights(three_spans):
    config, _, _ = three_spans
    _, state1, _, previous = _trained(config, 1)
    spec = fs.load(os.path.join(_span_dir(config, 2), "feature_spec.json"))
    state2 = pp.PreprocessingState.load(_span_dir(config, 2))
    _, warm, report = continuous.start_model(config, spec, state2, _span_dir(config, 1))
    _, cold, _ = continuous.start_model(config, spec, state2, None)
    old, new, fresh = (
        _by_path(previous.variables),
        _by_path(warm.variables),
        _by_path(cold.variables),
    )
    vocab1, vocab2 = (
        state1.features["impression_app"].vocabulary,
        state2.features["impression_app"].vocabulary,
    )
    kept, admitted = vocab1[0], vocab2[len(vocab1)]
    row = 1 + vocab2.index(kept)  # one OOV bucket before the vocabulary
    assert row == 1 + vocab1.index(kept)
    for path in ("wide/impression_app", "deep/emb_impression_app"):
        assert np.array_equal(new[path][row], old[path][row])
        assert not np.array_equal(new[path][row], fresh[path][row])
        new_row = 1 + vocab2.index(admitted)  # a new token starts from a fresh row
        assert np.array_equal(new[path][new_row], fresh[path][new_row])
    assert np.array_equal(new["deep/hidden_0/kernel"], old["deep/hidden_0/kernel"])
    # FTRL computes each wide weight from its slots: they come along, row by row.
    slots_old = _by_path(previous.optimizer.variables)
    slots_new = _by_path(warm.optimizer.variables)
    ftrl = [p for p in slots_new if "wide_impression_app" in p]
    assert len(ftrl) == 2
    for path in ftrl:
        assert np.array_equal(slots_new[path][row], slots_old[path][row])
    assert report.remapped["wide/impression_app"] == len(vocab1) + 1
    with open(os.path.join(_span_dir(config, 2), "warm_start.json")) as f:
        assert json.load(f)["remapped"]["wide/impression_app"] == len(vocab1) + 1


@pytest.mark.slow
def test_the_gate_refuses_a_worse_model(three_spans):
    config, _, _ = three_spans
    spec, _, preprocessor, model = _trained(config, 2)
    # A worse model: span 2's with its logit negated (AUC becomes 1 - AUC).
    negated = [v for v in model.variables if v.path.startswith(("wide/", "deep/logit/"))]
    assert any(v.path.startswith("deep/logit/") for v in negated)
    for v in negated:
        v.assign(-v)
    eval_files = continuous.span_files(config)[1][2]  # span 3
    raw = continuous._raw(spec, eval_files, config.train)
    worse = train_lib.evaluate(model, raw.map(lambda x, y: (preprocessor(x), y)))
    served = continuous.served_auc(config.train.export_base, raw)
    assert worse["auc"] < served  # the precondition that makes it worse
    before = os.listdir(config.train.export_base)
    sample = next(iter(raw))[0]
    out = continuous.publish_if_better(spec, preprocessor, model, worse, raw, sample, config.train)
    assert out["published_version"] is None
    assert out["served_auc"] == pytest.approx(served)
    assert out["publish_note"].startswith("refused: AUC")
    assert os.listdir(config.train.export_base) == before  # nothing written, not even temp-*


@pytest.mark.slow
def test_served_auc_scores_the_published_savedmodel(three_spans):
    config, records, _ = three_spans
    latest = export_versions.versions(config.train.export_base)[-1]
    record = next(r for r in records if r["published_version"] == latest)
    spec = fs.load(os.path.join(_span_dir(config, record["span"]), "feature_spec.json"))
    files = continuous.span_files(config)[1][record["eval_span"] - 1]
    raw = continuous._raw(spec, files, config.train)
    assert continuous.served_auc(config.train.export_base, raw) == pytest.approx(
        record["auc"], abs=1e-6
    )


@pytest.mark.slow
def test_rerun_skips_finished_spans_and_refuses_other_settings(three_spans):
    config, records, _ = three_spans
    versions = export_versions.versions(config.train.export_base)
    lines = []
    assert continuous.run(config, progress=lines.append) == records
    assert lines == [
        f"span {r['span']}: done before (auc {r['auc']:.4f}), skipped" for r in records
    ]
    assert export_versions.versions(config.train.export_base) == versions
    with pytest.raises(ValueError, match=r"other settings \(differing: \['vocab_window'\]\)"):
        continuous.run(dataclasses.replace(config, vocab_window=2))


@pytest.mark.slow
def test_cli_names_bad_input(tmp_path):
    proc = run_script("continuous_train", "--spans=1", f"--model_dir={tmp_path}/run")
    assert proc.returncode == 2
    assert "error: spans: must be >= 2" in proc.stderr and "got 1" in proc.stderr
    assert not os.path.exists(tmp_path / "run")


def test_build_md_lists_every_continuous_flag_with_its_default():
    import importlib.util

    from absl import flags

    from wdl_tf import cli

    path = os.path.join(ROOT, "scripts", "continuous_train.py")
    module_spec = importlib.util.spec_from_file_location("continuous_train", path)
    script = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(script)
    fv = flags.FlagValues()
    cli.define_train_flags(fv)
    train_flags = set(fv)
    script.define_flags(fv)
    text = open(os.path.join(ROOT, "BUILD.md")).read()
    section = text[text.index("## Continuous training") :]
    rows = dict(re.findall(r"^\| `--(\w+)` \| `([^`]*)` \|", section, flags=re.M))
    for name in set(fv) - train_flags:
        assert rows.get(name) == str(fv[name].default), f"--{name} in BUILD.md"
    for name, default in (("epochs", "(1)"), ("max_auc_drop", "(0.0")):
        assert str(fv[name].default) in default and f"`--{name}` {default}" in section
