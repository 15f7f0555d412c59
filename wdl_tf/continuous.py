"""Continuous training (paper §3, P8): one model per span of data, warm-started from the last.

For each span n (a day of data) but the last: learn span n's vocabularies from the previous
ones (`preprocessing.evolve_vocabulary`: kept tokens keep their ids), train warm-started
from span n-1's model (rows copied by token, optimizer slots included), evaluate on span
n+1, and publish through `export_lib.export_model` (written, reloaded in a fresh process and
compared) unless the model is worse than the served one on that same span. For the figure,
a cold model trains on the same span with the same steps; both are evaluated every
``eval_every_steps`` steps, and the record says how many steps each needed to reach the cold
model's final AUC.

What ``model_dir`` holds:

* ``continuous.json``: the settings and one record per finished span (`run` returns them);
* ``span-<n>/``: that span's feature_spec.json, preprocessing.json + vocabularies/,
  token_history.json (the admission window and last-seen spans), checkpoints/ (the warm
  model, with its optimizer slots: the next span starts from it), warm_start.json,
  curves.json and span.json (the record);
* ``span_data/``: generated spans (synthetic datasets).

Resumable by span: a rerun skips the spans whose ``span-<n>/span.json`` exists and redoes an
interrupted one from its start (``span-<n>.partial/`` is discarded; a span interrupted after
publishing publishes again). A rerun with more ``spans`` extends the run; other changed
settings are refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from wdl_tf import (
    atomic,
    checkpoints,
    export_lib,
    export_versions,
    input_pipeline,
    metrics,
    run_dir,
    train_lib,
    warm_start,
)
from wdl_tf import features as fs
from wdl_tf import model as model_lib
from wdl_tf import preprocessing as pp
from wdl_tf.config import SPAN_DATASETS, ContinuousConfig, TrainConfig

log = logging.getLogger("wdl_tf")

RECORD_FILE = "continuous.json"


@dataclasses.dataclass(frozen=True)
class SpanSource:
    """A dataset that comes in spans: its feature spec preset and how to get span files.

    ``files(work_dir, spans, rows_per_span, seed)`` returns one file list per span number
    in ``spans``, writing (or reusing) them under ``work_dir``.
    """

    feature_spec: str
    files: Callable[[str, list[int], int, int], list[list[str]]]


# Streams 0 and 1 are apps' train/eval splits; span n reads stream SPAN_STREAM_BASE + n.
APPS_SPAN_STREAM_BASE = 100


def _apps_spans(work_dir: str, spans: list[int], rows: int, seed: int) -> list[list[str]]:
    """Spans of the synthetic app store: fresh impressions of one planted model (so the
    spans are stationary: the same users, apps and pairs, new rows each span)."""
    from wdl_tf.datasets import apps

    out = []
    for n in spans:
        args = dict(seed=seed, stream=APPS_SPAN_STREAM_BASE + n, name=f"apps_span{n}")
        paths = apps.file_names(work_dir, rows, **args)
        if not all(os.path.exists(p) for p in paths):
            paths = apps.write_apps(work_dir, rows, **args)
        out.append(paths)
    return out


# dataset name → its spans. ``files`` (the user's globs, `ContinuousConfig.span_files`) is
# handled apart. Another generator plugs in with its name in `config.SPAN_DATASETS` (what
# the config accepts) and SPAN_SOURCES[name] = SpanSource(...) here.
SPAN_SOURCES: dict[str, SpanSource] = {"apps_synthetic": SpanSource("apps", _apps_spans)}
assert set(SPAN_SOURCES) == set(SPAN_DATASETS), (SPAN_SOURCES, SPAN_DATASETS)


# ----------------------------------------------------------------------------------------
# Data and vocabularies.


def span_files(config: ContinuousConfig) -> tuple[fs.FeatureSpec, list[list[str]]]:
    """The spec and every span's files; a glob that matches nothing fails, naming it."""
    data = config.train.data
    numbers = config.span_numbers
    if data.dataset == "files":
        spec = fs.load(data.feature_spec)
        if "{span}" in config.span_files:
            patterns = [config.span_files.replace("{span}", str(n)) for n in numbers]
        else:
            patterns = [p.strip() for p in config.span_files.split(",") if p.strip()]
        files = []
        for n, pattern in zip(numbers, patterns):
            try:
                files.append(input_pipeline.resolve_files(pattern))
            except input_pipeline.DataError as e:
                raise input_pipeline.DataError(f"span {n}: {e}") from None
        return spec, files
    source = SPAN_SOURCES[data.dataset]
    spec = fs.load(data.feature_spec or source.feature_spec)
    work_dir = os.path.join(config.train.model_dir, "span_data")
    return spec, source.files(work_dir, numbers, data.synthetic_rows, config.train.seed)


def _raw(spec, files, config: TrainConfig, max_rows=None, batch_size=None):
    opts = input_pipeline.ReadOptions(
        batch_size=batch_size or config.data.eval_batch_size,
        skip_bad_rows=config.data.skip_bad_rows,
        max_rows=max_rows,
    )
    return input_pipeline.read_raw(spec, files, opts)


def span_state(
    spec: fs.FeatureSpec,
    files: list[str],
    span: int,
    previous: tuple[pp.PreprocessingState, dict[str, pp.TokenHistory]] | None,
    config: ContinuousConfig,
) -> tuple[pp.PreprocessingState, dict[str, pp.TokenHistory], dict]:
    """Span ``span``'s preprocessing state, token histories and vocabulary changes.

    Vocabularies evolve (`preprocessing.evolve_vocabulary`). Numeric statistics (CDF and
    bucket boundaries, moments) are learned on the first span and kept: warm start needs
    the same buckets, and the warm-started deep layers were fitted to those inputs.
    """
    raw = (x for x, _ in _raw(spec, files, config.train, config.train.data.adapt_max_rows, 4096))
    try:
        fresh, counts = pp.adapt_and_count(spec, raw, config.train.data.adapt_max_rows)
    except tf.errors.InvalidArgumentError as e:
        input_pipeline.raise_data_error(e)
    if previous is None:
        state, histories = fresh, {name: pp.TokenHistory() for name in counts}
        old_state = None
    else:
        old_state, old_histories = previous
        state = pp.PreprocessingState(
            features={k: dataclasses.replace(v) for k, v in old_state.features.items()},
            rows_seen=fresh.rows_seen,
        )
        histories = {k: pp.TokenHistory.from_json(v.to_json()) for k, v in old_histories.items()}
    changes = {}
    for name, counter in counts.items():
        f = spec.feature(name)
        history = histories[name]
        history.add_span(span, counter, config.vocab_window)
        before = old_state.features[name].vocabulary if old_state else []
        after = pp.evolve_vocabulary(
            before, history, span, f.vocabulary, config.evict_after_spans, f.dtype
        )
        history.forget(after)
        state.features[name].vocabulary = after
        live_before = {t for t in before if not pp.is_free_id_token(t)}
        live_after = {t for t in after if not pp.is_free_id_token(t)}
        changes[name] = {
            "size": len(live_after),
            "admitted": len(live_after - live_before),
            "evicted": len(live_before - live_after),
        }
    return state, histories, changes


def _save_histories(directory: str, histories: dict[str, pp.TokenHistory]) -> None:
    with open(os.path.join(directory, "token_history.json"), "w") as f:
        json.dump({k: v.to_json() for k, v in histories.items()}, f)


def _load_histories(directory: str) -> dict[str, pp.TokenHistory]:
    with open(os.path.join(directory, "token_history.json")) as f:
        return {k: pp.TokenHistory.from_json(v) for k, v in json.load(f).items()}


# ----------------------------------------------------------------------------------------
# Training one model with an AUC curve.


class _Curve(keras.callbacks.Callback):
    """Evaluates every ``every`` steps (and at steps 0 and the last) → [(step, auc)].

    With a weight average, each point evaluates the averaged weights (what the run would
    end with if it stopped there), so the curve ends at the final model's AUC.
    """

    def __init__(self, evaluate, every, average, progress, label, total):
        super().__init__()
        self.evaluate, self.every, self.average = evaluate, every, average
        self.progress, self.label, self.total = progress, label, total
        self.step = 0
        self.points: list[tuple[int, float]] = []

    def _point(self) -> None:
        backup = None
        if self.average is not None and int(self.average.steps.numpy()):
            backup = [v.numpy() for v in self.average.variables]
            self.average.apply()
        auc = self.evaluate()
        if backup is not None:
            for v, value in zip(self.average.variables, backup):
                v.assign(value)
        self.points.append((self.step, auc))
        self.progress(f"  {self.label} step {self.step}/{self.total}: auc {auc:.4f}")

    def on_train_begin(self, logs=None):
        self._point()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            self._point()

    def on_train_end(self, logs=None):
        if self.points[-1][0] != self.step:
            self._point()


def start_model(
    config: ContinuousConfig, spec: fs.FeatureSpec, state: pp.PreprocessingState, warm_from: str
) -> tuple:
    """(preprocessor, compiled model, warm start report): a span's model before training,
    fresh, or warm-started from model dir ``warm_from`` when given (rows copied by token,
    optimizer slots too with ``warm_start_optimizer``; the report is None when cold)."""
    preprocessor, model = train_lib.build_for_training(config.train, state, spec)
    report = None
    if warm_from:
        report = warm_start.warm_start(model, spec, state, warm_from, config.warm_start_optimizer)
    return preprocessor, model, report


def _train_model(config, spec, state, files, warm_from, curve_data, every, total, progress, label):
    """Builds, (warm-)starts and trains one model on ``files``; returns it, its
    preprocessor, its curve and the warm start report (None when cold)."""
    train = config.train
    preprocessor, model, report = start_model(config, spec, state, warm_from)
    opts = input_pipeline.ReadOptions(
        batch_size=train.data.batch_size,
        shuffle=True,
        shuffle_buffer=train.data.shuffle_buffer,
        seed=train.seed,
        skip_bad_rows=train.data.skip_bad_rows,
    )
    data = input_pipeline.make_dataset(spec, files, opts, preprocessor)
    if train.steps_per_epoch:
        data = data.repeat()
    callbacks = []
    average = None
    if train.model.ema_momentum:
        # Built after the warm start: the average starts from the warm-started weights.
        average = model_lib.WeightAverage(model, train.model.ema_momentum)
        callbacks.append(model_lib.WeightAverageCallback(average, train.epochs))
    curve = _Curve(
        lambda: train_lib.evaluate(model, curve_data)["auc"], every, average, progress, label, total
    )
    callbacks.append(curve)
    try:
        model.fit(
            data,
            epochs=train.epochs,
            steps_per_epoch=train.steps_per_epoch,
            callbacks=callbacks,
            verbose=train.verbose,
            shuffle=False,
        )
    except tf.errors.InvalidArgumentError as e:
        input_pipeline.raise_data_error(e)
    return model, preprocessor, curve.points, report


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first evaluated step whose AUC is >= ``target`` (None: never)."""
    return next((step for step, auc in curve if auc >= target), None)


# ----------------------------------------------------------------------------------------
# Publishing with a gate.


def served_auc(export_base: str, raw_batches) -> float | None:
    """AUC of the latest published version on ``raw_batches`` (None: nothing published).

    It is scored on the same span as the candidate: AUCs stored at publish time were
    measured on older spans, and comparing across spans would gate on the data's
    difficulty rather than on the model.
    """
    versions = export_versions.versions(export_base)
    if not versions:
        return None
    loaded = tf.saved_model.load(os.path.join(export_base, str(versions[-1])))
    serve = loaded.signatures["serving_default"]
    labels, scores = [], []
    for raw, y in raw_batches:
        scores.append(serve(**raw)["probabilities"].numpy().reshape(-1))
        labels.append(y.numpy().reshape(-1))
    return metrics.binary_metrics(np.concatenate(labels), np.concatenate(scores))["auc"]


def publish_if_better(
    spec: fs.FeatureSpec,
    preprocessor,
    model,
    eval_metrics: dict,
    raw_batches,
    sample_raw: dict,
    train: TrainConfig,
) -> dict:
    """Publishes ``model`` unless its AUC on the evaluation span is below the served
    version's on that span by more than ``train.export.max_auc_drop``.

    Returns ``published_version`` (None when refused or with no export_base), ``served_auc``
    and ``publish_note``. The publish itself is `export_lib.export_model`'s verified one.
    """
    out = {"published_version": None, "served_auc": None, "publish_note": ""}
    if not train.export_base:
        out["publish_note"] = "no export_base"
        return out
    gate = train.export.max_auc_drop
    if gate is not None:
        out["served_auc"] = served_auc(train.export_base, raw_batches)
        if out["served_auc"] is not None and eval_metrics["auc"] < out["served_auc"] - gate:
            out["publish_note"] = (
                f"refused: AUC {eval_metrics['auc']:.4f} < served version's "
                f"{out['served_auc']:.4f} on the same span - max_auc_drop {gate}"
            )
            return out
    # The gate ran above on comparable AUCs; export_model's own compares across spans.
    options = dataclasses.replace(train.export, max_auc_drop=None)
    try:
        path = export_lib.export_model(
            spec, preprocessor, model, train.export_base, sample_raw, eval_metrics, options
        )
    except export_lib.ExportError as e:
        out["publish_note"] = f"refused by the verified publish: {e}"
        return out
    out["published_version"] = int(os.path.basename(path))
    out["publish_note"] = "published"
    return out


# ----------------------------------------------------------------------------------------
# The loop.


def _span_dir(root: str, n: int) -> str:
    return os.path.join(root, f"span-{n:04d}")


def _comparable(config: ContinuousConfig) -> dict:
    """The settings a resumed run must share (more spans extend a run; verbosity is free)."""
    obj = config.to_dict()
    obj.pop("spans")
    obj["train"].pop("verbose")
    return obj


def _write_record(root: str, config: ContinuousConfig, records: list[dict]) -> None:
    atomic.write_json(
        os.path.join(root, RECORD_FILE), {"config": config.to_dict(), "spans": records}
    )


def _check_resumable(config: ContinuousConfig) -> None:
    path = os.path.join(config.train.model_dir, RECORD_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)["config"]
    saved.pop("spans")
    saved["train"].pop("verbose")
    now = json.loads(json.dumps(_comparable(config)))
    if saved != now:
        differ = sorted(k for k in now if saved.get(k) != now[k])
        raise ValueError(
            f"model_dir {config.train.model_dir!r} holds a continuous run with other settings "
            f"(differing: {differ}); use a new model_dir"
        )


def _check_export_base(export_base: str, spec: fs.FeatureSpec) -> None:
    """The served version must read our features: the gate scores it on our spans."""
    versions = export_versions.versions(export_base) if export_base else []
    if not versions:
        return
    path = os.path.join(export_base, str(versions[-1]), "assets.extra", "feature_spec.json")
    if not os.path.exists(path) or fs.load(path) != spec:
        raise ValueError(
            f"export_base {export_base!r}: version {versions[-1]} was exported with another "
            f"feature spec than {spec.name!r}; use a new export_base"
        )


def run(config: ContinuousConfig, progress: Callable[[str], None] = log.info) -> list[dict]:
    """Runs (or resumes) continuous training; returns the span records (continuous.json).

    Each record: ``span``, ``eval_span``, ``auc`` (and the other eval metrics) of the
    warm-started model on the next span, ``published_version`` (None: not published),
    ``served_auc``, ``publish_note``, ``warm_started``, ``steps``, ``cold_final_auc``,
    ``steps_to_reach_warm`` / ``steps_to_reach_cold`` (the first evaluated step at which
    each model's AUC on ``curve_eval_rows`` of the next span is >= the cold model's final
    one there; None: never, or not measured), ``vocabulary`` (per feature: size, admitted,
    evicted) and ``seconds``.

    Bad settings and span files fail here, before any training.
    """
    config.validate()
    root = config.train.model_dir
    _check_resumable(config)
    spec, files = span_files(config)
    _check_export_base(config.train.export_base, spec)
    os.makedirs(root, exist_ok=True)
    numbers = config.span_numbers
    records, previous = [], None
    for i, n in enumerate(numbers[:-1]):
        directory = _span_dir(root, n)
        if os.path.exists(os.path.join(directory, "span.json")):
            with open(os.path.join(directory, "span.json")) as f:
                records.append(json.load(f))
            previous = (pp.PreprocessingState.load(directory), _load_histories(directory))
            progress(f"span {n}: done before (auc {records[-1]['auc']:.4f}), skipped")
            continue
        records.append(_run_span(config, spec, files, i, previous, progress))
        previous = (pp.PreprocessingState.load(directory), _load_histories(directory))
        _write_record(root, config, records)
    _write_record(root, config, records)
    return records


def _run_span(config, spec, files, i, previous, progress) -> dict:
    start = time.time()
    train = config.train
    numbers = config.span_numbers
    n, next_n = numbers[i], numbers[i + 1]
    root = train.model_dir
    directory = _span_dir(root, n)
    partial = directory + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)  # a dir without span.json: unfinished
    os.makedirs(partial)

    state, histories, changes = span_state(spec, files[i], n, previous, config)
    spec.save(os.path.join(partial, "feature_spec.json"))
    state.save(partial)
    _save_histories(partial, histories)
    vocab = ", ".join(
        f"{k} {v['size']} (+{v['admitted']} -{v['evicted']})" for k, v in changes.items()
    )
    progress(f"span {n} ({i + 1}/{len(numbers) - 1}): {state.rows_seen} rows; {vocab}")

    batches = -(-state.rows_seen // train.data.batch_size)
    total = train.epochs * (train.steps_per_epoch or batches)
    every = config.eval_every_steps or max(1, math.ceil(total / 20))
    # Encoded once: the warm and the cold model share the span's preprocessing state.
    encoder = pp.FeaturePreprocessor(spec, state, name="preprocessor")
    curve_data = _raw(spec, files[i + 1], train, config.curve_eval_rows)
    encode = input_pipeline.encoding(encoder)
    curve_data = curve_data.map(encode).cache()
    warm_from = _span_dir(root, numbers[i - 1]) if i > 0 else None
    label = f"span {n} {'warm' if warm_from else 'first'}"
    model, preprocessor, warm_curve, report = _train_model(
        config, spec, state, files[i], warm_from, curve_data, every, total, progress, label
    )
    checkpoints.save(model, run_dir.checkpoints_dir(partial))
    if report is not None:
        with open(os.path.join(partial, "warm_start.json"), "w") as f:
            json.dump(dataclasses.asdict(report), f, indent=2)

    cold_curve = warm_curve if warm_from is None else None
    if warm_from and config.measure_cold:
        cold_curve = _train_model(
            config, spec, state, files[i], None, curve_data, every, total, progress,
            f"span {n} cold",
        )[2]  # fmt: skip
    with open(os.path.join(partial, "curves.json"), "w") as f:
        json.dump({"warm": warm_curve if warm_from else None, "cold": cold_curve}, f)

    eval_raw = _raw(spec, files[i + 1], train)
    if train.eval_steps:
        eval_raw = eval_raw.take(train.eval_steps)
    eval_metrics = train_lib.evaluate(model, eval_raw.map(encode))
    eval_metrics["span"], eval_metrics["eval_span"] = n, next_n
    with open(os.path.join(partial, "metrics.json"), "w") as f:
        json.dump(eval_metrics, f, indent=2)
    sample_raw = next(iter(_raw(spec, files[i + 1], train, 64, 64)))[0]
    published = publish_if_better(
        spec, preprocessor, model, eval_metrics, eval_raw, sample_raw, train
    )

    target = cold_curve[-1][1] if cold_curve else None
    record = {
        "span": n,
        "eval_span": next_n,
        "auc": eval_metrics["auc"],
        "log_loss": eval_metrics["log_loss"],
        **published,
        "warm_started": warm_from is not None,
        "steps": total,
        "eval_every_steps": every,
        "cold_final_auc": target,
        "steps_to_reach_warm": (
            steps_to_reach(warm_curve, target) if warm_from and cold_curve else None
        ),
        "steps_to_reach_cold": steps_to_reach(cold_curve, target) if cold_curve else None,
        "vocabulary": changes,
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(partial, "span.json"), "w") as f:
        json.dump(record, f, indent=2)
    os.rename(partial, directory)
    version = record["published_version"]
    progress(
        f"span {n}: auc {record['auc']:.4f} on span {next_n}; "
        f"{'published version ' + str(version) if version else record['publish_note']}; "
        f"steps to reach {target if target is None else round(target, 4)}: "
        f"warm {record['steps_to_reach_warm']}, cold {record['steps_to_reach_cold']} "
        f"of {total} ({record['seconds']} s)"
    )
    return record
