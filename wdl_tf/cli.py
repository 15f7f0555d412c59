"""absl flags of the training entry point (scripts/train.py, the ``wdl-train`` command).

This is the only module that reads FLAGS: it turns them into one `TrainConfig`, which the
library validates before any data is read.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from absl import app, flags, logging

from wdl_tf import config as config_lib

FLAGS = flags.FLAGS

# The config sections whose fields are training flags: (TrainConfig attribute, class).
_SECTIONS = (
    ("data", config_lib.DataConfig),
    ("model", config_lib.ModelConfig),
    ("export", config_lib.ExportOptions),
    (None, config_lib.TrainConfig),
)


def define_train_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines one flag per config field (`config_lib.flag_fields`) in ``fv``: name, default,
    help and allowed values come from the field, so a setting is written once."""
    flags.DEFINE_enum(
        "preset",
        "",
        ["", *config_lib.PRESETS],
        "Start from this named preset (empty: the dataset's, else the defaults); flags given "
        "on the command line override it.",
        flag_values=fv,
    )
    for _, cls in _SECTIONS:
        for field in config_lib.flag_fields(cls):
            _define(fv, field)


def _define(fv: flags.FlagValues, field) -> None:
    name, default, help_ = field.name, field.default, field.metadata["help"]
    choices = field.metadata["choices"]
    kind = str(field.type).replace(" | None", "")
    if choices:
        flags.DEFINE_enum(name, default, list(choices), help_, flag_values=fv)
    elif kind == "bool":
        flags.DEFINE_boolean(name, default, help_, flag_values=fv)
    elif kind == "int":
        flags.DEFINE_integer(name, default, help_, flag_values=fv)
    elif kind == "float":
        flags.DEFINE_float(name, default, help_, flag_values=fv)
    elif kind == "str":
        flags.DEFINE_string(name, default, help_, flag_values=fv)
    elif kind == "tuple[int, ...]":
        flags.DEFINE_list(name, [str(v) for v in default], help_, flag_values=fv)
    else:
        raise TypeError(f"config field {name!r}: no flag type for {field.type!r}")


def _flag_value(field, fv: flags.FlagValues):
    value = fv[config_lib.flag_name(field)].value
    if str(field.type) == "tuple[int, ...]":
        try:
            return tuple(int(v) for v in value)
        except ValueError:
            raise ValueError(
                f"{field.name}: expected comma-separated integers, got {value}"
            ) from None
    return value


def config_from_flags(fv: flags.FlagValues | None = None) -> config_lib.TrainConfig:
    """One validated TrainConfig from the parsed flags (``fv``, default the global FLAGS):
    the preset (``--preset``, else the dataset's), then every flag given on the command line
    (or in a flagfile)."""
    fv = FLAGS if fv is None else fv
    base = config_lib.preset(fv["preset"].value or config_lib.dataset_preset(fv["dataset"].value))
    values: dict = {}
    for section, cls in _SECTIONS:
        current = base if section is None else getattr(base, section)
        kwargs = {
            f.name: _flag_value(f, fv)
            for f in dataclasses.fields(cls)
            if config_lib.flag_name(f) is not None and fv[config_lib.flag_name(f)].present
        }
        if section is None:
            values.update(kwargs)
        else:
            values[section] = dataclasses.replace(current, **kwargs)
    config = dataclasses.replace(base, **values)
    config.validate()
    return config


def check_before_tensorflow(config: config_lib.TrainConfig) -> None:
    """What a run's flags and environment name, checked without TensorFlow: the feature
    spec file (and that it is valid), the data files, ``TF_CONFIG`` against
    ``--distribution``, and, on the chief, that versions can be written under
    ``--export_base``. Training checks them again where it uses them (and makes or finds a
    dataset's own files there); here a mistake is reported before the ~5 s import.

    Raises:
      ValueError: `FeatureSpecError`, `DataError` or a ValueError, naming the file, the
        field or the TF_CONFIG value.
    """
    from wdl_tf import cluster, data_files, export_versions
    from wdl_tf import features as fs

    data = config.data
    if data.feature_spec:
        fs.load(data.feature_spec)
    for patterns in (data.train_files, data.eval_files):
        if patterns.strip():
            data_files.resolve_files(patterns)
    _, task = cluster.resolve(config.distribution)
    if task.is_chief and config.export_base:
        export_versions.check_export_base(config.export_base)


def _print_result(result) -> None:
    from wdl_tf import metrics

    print("eval metrics: " + json.dumps(result.metrics, indent=2))
    m = result.metrics
    if "validation_auc" in m:
        print(
            f"kept epoch {m['best_epoch']} of {m['epochs_trained']} trained: validation AUC "
            f"{m['validation_auc']:.4f}, log loss {m['validation_log_loss']:.4f}"
        )
    parts = metrics.format_logit_parts(m)
    if parts:
        print(parts)
    if result.bad_rows:
        print(f"skipped malformed rows: {result.bad_rows}")
    if result.encoded_cache:
        path, size = result.encoded_cache
        print(f"encoded cache: {size / 2**20:.1f} MiB in {path}")
    if result.export_path:
        print(f"exported SavedModel: {result.export_path}")


def _bad_input(e: Exception) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def _train(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = config_from_flags()
        check_before_tensorflow(config)
    except ValueError as e:
        _bad_input(e)
    # TensorFlow loads only now: a bad flag or setting, a missing file, a bad feature spec or
    # TF_CONFIG, or an export base where nothing can be written is reported in about a
    # second, not after the seconds that importing the trainer takes.
    from wdl_tf import train_lib

    try:
        result = train_lib.train_and_evaluate(config)
    except ValueError as e:  # also FeatureSpecError and DataError: bad input, named
        _bad_input(e)
    except train_lib.ExportFailed as e:  # trained and evaluated; only the export failed
        _print_result(e.result)
        _bad_input(e)
    if not result.metrics:  # a non-chief worker: the chief evaluates and exports
        print("worker finished training (the chief writes metrics and the export)")
        return
    _print_result(result)


def run_train() -> None:
    define_train_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(_train)


def train_main() -> None:
    """Console entry point ``wdl-train``."""
    run_train()
