"""The training command as a user runs it: in a subprocess, with flags; and BUILD.md's table."""

import functools
import json
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT, run_script

_run = functools.partial(run_script, "train")


@pytest.mark.slow
def test_train_exports_a_servable_model(tmp_path):
    """With TensorFlow's default kernels (oneDNN on x86), which the rest of the suite turns
    off for speed (tests/conftest.py): the export's pre-publish checks compare the SavedModel
    with the trained model under them."""
    env = dict(os.environ)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    proc = _run(
        "--dataset=census_synthetic",
        "--synthetic_rows=600",
        "--hidden_units=16",
        "--epochs=1",
        "--verbose=1",
        f"--model_dir={tmp_path}/model",
        f"--export_base={tmp_path}/export",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eval metrics" in proc.stdout
    assert f"exported SavedModel: {tmp_path}/export/1" in proc.stdout
    assert os.path.isfile(os.path.join(tmp_path, "export", "1", "saved_model.pb"))
    metrics = json.load(open(os.path.join(tmp_path, "model", "metrics.json")))
    assert 0.0 <= metrics["auc"] <= 1.0 and metrics["examples"] == 300


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model_type=linear"], r"--model_type=linear: value should be one of <wide\|deep"),
        (["--epochs=0"], "epochs: must be >= 1, got 0"),
        (["--hidden_units=64,x"], "hidden_units: expected comma-separated integers"),
        (
            [
                "--dataset=files",
                "--feature_spec=census",
                "--train_files=/no/such.csv",
                "--eval_files=/no/such.csv",
            ],
            "data file '/no/such.csv' does not exist",
        ),
        (["--feature_spec=/no/spec.json"], "feature spec file '/no/spec.json' does not exist"),
    ],
)
def test_bad_flags_fail_before_training(tmp_path, flags, message):
    proc = _run(*flags, f"--model_dir={tmp_path}/model", f"--export_base={tmp_path}/export")
    assert proc.returncode != 0
    assert re.search(message, proc.stderr), proc.stderr[-2000:]
    assert not os.path.exists(os.path.join(tmp_path, "model", "checkpoints"))
    assert not os.path.exists(os.path.join(tmp_path, "export"))


def test_named_inputs_are_checked_before_tensorflow_loads(tmp_path):
    # A typo in a path, a bad TF_CONFIG or an export base under a file is reported at once:
    # the check runs without importing TensorFlow (seconds), in a fresh interpreter so that
    # no earlier import hides one.
    code = (
        "import os, sys\n"
        "from wdl_tf import cli, config\n"
        "def run(export_base='', **data):\n"
        "    try:\n"
        "        cli.check_before_tensorflow(config.TrainConfig(\n"
        "            data=config.DataConfig(**data), export_base=export_base))\n"
        "        print('ok')\n"
        "    except ValueError as e:\n"
        "        print(type(e).__name__, e)\n"
        "present = dict(dataset='files', feature_spec='census', train_files=sys.argv[3])\n"
        "run(feature_spec=sys.argv[1])\n"
        "run(dataset='files', feature_spec='census', train_files=sys.argv[2])\n"
        "run(**dict(present, eval_files=sys.argv[2]))\n"
        "run(export_base=sys.argv[3] + '/export', **present)\n"
        'os.environ[\'TF_CONFIG\'] = \'{"cluster": {"worker": ["127.0.0.1:1"]}}\'\n'
        "run(**present)\n"
        'os.environ[\'TF_CONFIG\'] = (\'{"cluster": {"worker": ["h:1", "h:2"]}, \'\n'
        '                           \'"task": {"type": "worker", "index": 1}}\')\n'
        "run(export_base=sys.argv[3] + '/export', **present)  # not the chief: not its job\n"
        "del os.environ['TF_CONFIG']\n"
        "run(export_base=os.path.dirname(sys.argv[3]) + '/export', **present)\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules)\n"
    )
    present = tmp_path / "train.csv"
    present.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "spec.json"), "/no/*.csv", str(present)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        f"FeatureSpecError feature spec file '{tmp_path / 'spec.json'}' does not exist",
        "DataError data file '/no/*.csv' does not exist (or matches no file)",
        "DataError data file '/no/*.csv' does not exist (or matches no file)",
        f"ValueError export_base '{present}/export': '{present}' is not a directory; it must "
        "be a writable directory, or one that can be created",
        'ValueError TF_CONFIG has no \'task\' object: \'{"cluster": {"worker": ["127.0.0.1:1"]}}\'',
        "ok",
        "ok",
        "tensorflow loaded: False",
    ]


@pytest.mark.slow
def test_bad_spec_names_the_unknown_cross_feature(tmp_path):
    spec = json.load(open(os.path.join(ROOT, "wdl_tf", "specs", "census.json")))
    spec["crosses"].append({"features": ["education", "zodiac_sign"], "hash_buckets": 10})
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    proc = _run(f"--feature_spec={path}", f"--model_dir={tmp_path}/model", "--export_base=")
    assert proc.returncode == 2
    assert "crosses[5].features[1]: unknown feature 'zodiac_sign'" in proc.stderr


def test_build_md_lists_every_flag_with_its_default():
    from absl import flags

    from wdl_tf import cli

    fv = flags.FlagValues()
    cli.define_train_flags(fv)
    table = open(os.path.join(ROOT, "BUILD.md")).read()
    rows = dict(re.findall(r"^\| `--(\w+)` \| `([^`]*)` \|", table, flags=re.M))
    for name in fv:
        default = fv[name].default
        assert name in rows, f"--{name} is missing from BUILD.md's flag table"
        shown = ",".join(default) if isinstance(default, list) else str(default)
        assert rows[name] == shown, f"--{name}: BUILD.md says {rows[name]!r}, default {shown!r}"


def test_flags_are_the_config_fields_written_once():
    """Every config field with help text is a flag whose default is the field's, and the
    parsed flags build exactly the config they name (each section reached)."""
    import dataclasses

    from absl import flags

    from wdl_tf import cli
    from wdl_tf import config as config_lib

    fv = flags.FlagValues()
    cli.define_train_flags(fv)
    sections = (config_lib.DataConfig, config_lib.ModelConfig, config_lib.ExportOptions)
    fields = [f for cls in (*sections, config_lib.TrainConfig) for f in config_lib.flag_fields(cls)]
    # One flag per field, and no other but --preset (which picks the fields' starting point).
    assert sorted(f.name for f in fields) == sorted(set(fv) - {"preset"})
    for f in fields:
        # (absl prefixes an enum's help with its allowed values)
        assert fv[f.name].help.endswith(f.metadata["help"]) and f.metadata["help"]
    fv(["train.py"])
    assert cli.config_from_flags(fv) == config_lib.TrainConfig()
    fv(["train.py", "--shuffle_buffer=7", "--hidden_units=8,4", "--keep_versions=2", "--seed=5"])
    config = cli.config_from_flags(fv)
    assert config.data.shuffle_buffer == 7 and config.model.hidden_units == (8, 4)
    assert config.export.keep_versions == 2
    assert config.seed == config.model.seed == 5  # --seed sets both
    assert config.export.atol == config_lib.ExportOptions().atol  # not a flag: its default
    assert "atol" not in fv and dataclasses.fields(config_lib.ExportOptions)


def test_a_preset_is_the_start_and_given_flags_override_it():
    from absl import flags

    from wdl_tf import cli
    from wdl_tf import config as config_lib

    def parse(*argv):
        fv = flags.FlagValues()
        cli.define_train_flags(fv)
        fv(["train.py", *argv])
        return cli.config_from_flags(fv)

    tiny = parse("--preset=test")
    assert tiny == config_lib.preset("test")
    assert tiny.model.hidden_units == (32, 16) and tiny.data.dataset == "census_synthetic"
    mixed = parse("--preset=test", "--hidden_units=64", "--epochs=3")
    assert mixed.model.hidden_units == (64,) and mixed.epochs == 3
    assert mixed.data.batch_size == 128  # still the preset's
    with pytest.raises(flags.IllegalFlagValueError, match="preset"):
        parse("--preset=imdb")


def test_every_named_preset_is_a_valid_config():
    """The issue's five named presets exist and validate (criteo once given its files, as
    its dataset requires); a dataset without a preset of its own starts from the defaults."""
    import dataclasses

    from wdl_tf import config as config_lib

    assert {"census", "apps", "movielens", "criteo", "test"} <= set(config_lib.PRESETS)
    for name in config_lib.PRESETS:
        config = config_lib.preset(name)
        if config.data.dataset == "criteo":
            with pytest.raises(ValueError, match="criteo"):
                config.validate()
            data = dataclasses.replace(config.data, train_files="a.tsv", eval_files="b.tsv")
            config = dataclasses.replace(config, data=data)
        config.validate()
    assert config_lib.preset("criteo").data.batch_size == 1024
    apps = config_lib.preset(config_lib.dataset_preset("apps_synthetic"))
    assert apps.data.dataset == "apps_synthetic"
    assert apps.model == config_lib.preset("census").model
    assert config_lib.dataset_preset("census_synthetic") == "census"
