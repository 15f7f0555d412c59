"""Permutation importance and top wide tokens (scripts/importance.py), and the HTML report
(scripts/report.py): importance checked on a scorer built by hand and against what the wide
part can see, tokens against the checkpoint and the rows, the report parsed and every
embedded PNG decoded."""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_script

from wdl_tf import config as config_lib
from wdl_tf import evaluate_lib, explain, importance, report, samples, train_lib
from wdl_tf import features as fs
from wdl_tf import model as model_lib
from wdl_tf import preprocessing as pp

OPTIONS = importance.ImportanceOptions(repeats=2, max_rows=500, top_tokens=5)


def _train(model_dir: str, model_type: str, epochs: int):
    config = config_lib.preset("test", model_dir=model_dir, export_base="", epochs=epochs)
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, synthetic_rows=1000),
        model=dataclasses.replace(config.model, model_type=model_type),
    )
    return train_lib.train_and_evaluate(config)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A comparison dir as compare_models.py lays it out: a Wide & Deep run (2 epochs, for
    training curves) and a wide one (1 epoch), on the census twin."""
    tmp = tmp_path_factory.mktemp("insights")
    cmp_dir = tmp / "cmp"
    joint = str(cmp_dir / "wide_deep")
    _train(joint, "wide_deep", 2)
    _train(str(cmp_dir / "wide"), "wide", 1)
    return str(cmp_dir), joint


def test_permutation_importance_on_a_scorer_built_by_hand():
    """The score is one column: shuffling it drops the AUC to about 0.5; shuffling a column
    the score does not read changes nothing at all."""
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.4).astype(np.float64)
    rows = {
        "signal": (labels + rng.normal(0, 0.5, 400)).reshape(-1, 1),
        "noise": rng.normal(0, 1, 400).reshape(-1, 1),
    }
    result = importance.permutation_importance(
        lambda r: {"joint": r["signal"].reshape(-1)}, rows, labels, repeats=4
    )
    base = result["baseline_auc"]["joint"]
    assert base > 0.8
    assert result["features"]["noise"]["joint"] == {"mean": 0.0, "std": 0.0, "drops": [0.0] * 4}
    assert result["features"]["signal"]["joint"]["mean"] == pytest.approx(base - 0.5, abs=0.07)
    assert result["features"]["signal"]["joint"]["std"] > 0
    assert result["ranking"]["joint"] == ["signal", "noise"]
    with pytest.raises(ValueError, match="needs both labels"):
        importance.permutation_importance(lambda r: {"joint": r["noise"]}, rows, labels * 0)


def test_model_dir_importance_per_part(runs):
    _, joint = runs
    result = importance.importance(model_dir=joint, options=OPTIONS)
    spec = fs.load(os.path.join(joint, "feature_spec.json"))
    assert list(result["baseline_auc"]) == ["joint", "wide", "deep"]
    assert set(result["features"]) == set(spec.feature_names)
    # The census spec keeps education_num out of the wide part: shuffling it cannot move the
    # wide logit, while the joint model (its deep part) does read it.
    assert not spec.feature("education_num").wide
    assert result["features"]["education_num"]["wide"]["drops"] == [0.0, 0.0]
    assert result["features"]["education_num"]["deep"]["mean"] != 0.0
    own = evaluate_lib.evaluate_model_dir(joint)  # all 500 eval rows, the model's own path
    assert result["rows"] == own["examples"] == 500
    assert result["baseline_auc"]["joint"] == pytest.approx(own["auc"], abs=1e-6)
    text = importance.format_importance(result)
    assert text.splitlines()[2].startswith(result["ranking"]["joint"][0])


def test_top_tokens_are_the_wide_weights(runs):
    _, joint = runs
    result = importance.importance(model_dir=joint, options=OPTIONS)["top_tokens"]
    reader = tf.train.load_checkpoint(os.path.join(joint, "checkpoints"))

    def table(name):
        return reader.get_tensor(f"model/wide..{name}/.ATTRIBUTES/VARIABLE_VALUE").reshape(-1)

    state = json.load(open(os.path.join(joint, "preprocessing.json")))["features"]
    vocab = state["education"]["vocabulary"]
    top = result["education"]["top_positive"]
    assert [e["weight"] for e in top] == sorted((e["weight"] for e in top), reverse=True)
    for e in top + result["education"]["top_negative"]:
        # StringLookup: id 0 is the OOV bucket, then the vocabulary in order.
        expected_id = vocab.index(e["token"]) + 1 if not e["token"].startswith("(OOV") else 0
        assert e["id"] == expected_id
        assert e["weight"] == pytest.approx(table("education")[expected_id])
    assert top[0]["weight"] == pytest.approx(table("education").max())
    boundaries = state["age"]["bucket_boundaries"]
    for e in result["age"]["top_positive"]:
        lower = e["token"].split(",")[0].lstrip("[")
        bucket = 0 if lower == "-inf" else boundaries.index(float(lower)) + 1
        assert e["id"] == bucket and e["weight"] == pytest.approx(table("age_bucket")[bucket])
    # A hashed cross: each top id's token is a value pair seen in the rows, counted by hand.
    spec = fs.load(os.path.join(joint, "feature_spec.json"))
    eval_file = evaluate_lib.default_eval_data(
        config_lib.TrainConfig.from_dict(json.load(open(os.path.join(joint, "config.json")))),
        joint,
    ).files
    sample = samples.read_rows(spec, eval_file)
    pairs = [
        f"{e or '(missing)'} × {o or '(missing)'}"
        for e, o in zip(sample.columns["education"], sample.columns["occupation"])
    ]
    cross = result["education_X_occupation"]["top_positive"]
    assert cross and all(e["token"] in pairs for e in cross)
    for e in cross:
        if e["other_tokens"] == 0:  # no hash collision among the rows
            assert e["rows"] == pairs.count(e["token"])


def _random_model(spec, state, model_type):
    preprocessor = pp.FeaturePreprocessor(spec, state, name="preprocessor")
    model = model_lib.build_model(
        preprocessor.encoded_features,
        model_lib.ModelConfig(model_type=model_type, hidden_units=(4,)),
    )
    rng = np.random.default_rng(1)
    for v in model.trainable_variables:
        v.assign(rng.normal(0, 0.3, v.shape).astype(np.float32))
    return preprocessor, model


def test_wide_and_deep_only_models(runs):
    _, joint = runs
    spec = fs.load(os.path.join(joint, "feature_spec.json"))
    state = pp.PreprocessingState.load(joint)
    data = evaluate_lib.EvalData(
        [os.path.join(joint, "synthetic_data", "census_synthetic_test_1000_0.csv")]
    )
    rows, labels = importance.read_rows(spec, data, 200)
    for model_type in ("wide", "deep"):
        preprocessor, model = _random_model(spec, state, model_type)
        scored = importance.model_scorer(preprocessor, model)(rows)
        assert list(scored) == ["joint"]  # one part: it is the model
        p = model(preprocessor({k: tf.constant(v) for k, v in rows.items()})).numpy()
        np.testing.assert_allclose(1 / (1 + np.exp(-scored["joint"])), p.reshape(-1), atol=1e-5)
    with pytest.raises(explain.NoWidePartError, match="deep-only"):
        importance.top_tokens(spec, preprocessor, model, rows, 3)


class _Tags(html.parser.HTMLParser):
    """Every tag with its attributes, and the text of every <h2>."""

    def __init__(self):
        super().__init__()
        self.tags, self.h2, self._in_h2 = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def test_report_is_self_contained_and_every_png_decodes(runs, tmp_path):
    import matplotlib.image

    cmp_dir, joint = runs
    document = report.build_report([cmp_dir], importance_repeats=1)
    path = tmp_path / "report.html"
    report.write_report(str(path), document)
    parser = _Tags()
    parser.feed(path.read_text(encoding="utf-8"))
    assert parser.h2 == [
        "Metrics",
        "ROC",
        "Calibration",
        "Score distribution by label",
        "Permutation importance",
        "Training curves (TensorBoard logs)",
    ]
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == 6  # ROC, reliability, scores, 2 importance charts, curves
    for tag, attrs in parser.tags:  # nothing loaded from elsewhere
        for key in ("src", "href"):
            assert key not in attrs or attrs[key].startswith("data:image/png;base64,"), tag
    for attrs in images:
        png = base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels[..., :3].std() > 0.01  # not a blank image
    # The metrics table shows the AUC evaluate_lib computes on the same rows.
    own = evaluate_lib.evaluate_model_dir(joint)
    assert f"<td>{own['auc']:.4f}</td>" in document
    curves = report.training_curves(joint)
    assert curves["epoch_loss"][0] == [0, 1] and "epoch_auc" in curves


def test_report_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="is neither a model dir .* nor a comparison dir"):
        report.build_report([str(tmp_path)])
    with pytest.raises(ValueError, match="give exactly one of --model_dir and --saved_model"):
        importance.importance()
    with pytest.raises(ValueError, match="repeats: must be >= 1, got 0"):
        importance.importance(model_dir="x", options=importance.ImportanceOptions(repeats=0))


@pytest.mark.slow
def test_scripts_write_their_files(runs, tmp_path):
    cmp_dir, joint = runs
    out = tmp_path / "imp.json"
    proc = run_script("importance", f"--model_dir={joint}", "--repeats=1", "--max_rows=200",
                      f"--output={out}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.load(open(out))["repeats"] == 1
    assert (tmp_path / "imp.png").read_bytes().startswith(b"\x89PNG")
    html_path = tmp_path / "r.html"
    proc = run_script("report", f"--model_dir={cmp_dir}", "--importance_repeats=0",
                      "--max_rows=200", f"--output={html_path}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert html_path.read_text().count("data:image/png;base64,") == 4
    proc = run_script("report", f"--model_dir={tmp_path}")
    assert proc.returncode == 2 and "is neither a model dir" in proc.stderr
