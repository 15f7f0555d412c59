"""One self-contained HTML report of a model dir, or of several side by side (a comparison).

Sections: the metrics table; ROC curves (each run's model and, for a Wide & Deep run, its wide
and deep parts' own logits, `explain.part_logits`); the reliability diagram (observed rate vs
mean prediction per score decile, `metrics.calibration`; with ``negative_sampling_rate`` < 1
also before the correction); the score distribution by label; permutation importance
(`importance`); the training curves from the TensorBoard logs (``<model_dir>/logs/*/``:
TFRecord files of ``tensorflow.Event`` protos whose scalars are ``tensor`` or ``simple_value``
summaries). Charts are PNGs (`plots`) embedded as base64 data URIs, so the file needs nothing
else to display.

A comparison dir, as ``scripts/compare_models.py`` writes it (``<dir>/wide``, ``<dir>/deep``,
``<dir>/wide_deep``, each a model dir), expands into its runs.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import glob
import html
import os
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.util import event_pb2

from wdl_tf import atomic, evaluate_lib, importance, metrics, plots, run_dir
from wdl_tf.config import MODEL_TYPES


@dataclasses.dataclass
class Run:
    """One model dir scored on its evaluation rows."""

    name: str
    model_dir: str
    model_type: str
    negative_sampling_rate: float
    labels: np.ndarray
    logits: dict[str, np.ndarray]  # joint, and wide/deep parts for Wide & Deep
    metrics: dict[str, Any]
    curves: dict[str, tuple[list, list]]
    importance: dict[str, Any] | None = None

    @property
    def probabilities(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits["joint"]))


def expand_model_dirs(model_dirs: list[str]) -> list[str]:
    """Model dirs, a comparison dir replaced by its per-model-type runs.

    Raises:
      ValueError: a path that is neither.
    """
    out = []
    for path in model_dirs:
        if run_dir.is_run(path):
            out.append(path)
            continue
        runs = [os.path.join(path, t) for t in MODEL_TYPES]
        runs = [r for r in runs if run_dir.is_run(r)]
        if not runs:
            raise ValueError(
                f"model_dir: {path!r} is neither a model dir (no config.json) nor a comparison "
                f"dir (no {'/'.join(MODEL_TYPES)} model dirs in it)"
            )
        out.extend(runs)
    return out


def training_curves(model_dir: str) -> dict[str, tuple[list, list]]:
    """tag → (steps, values) of the scalar summaries under ``<model_dir>/logs/<split>/``; a
    split other than ``train`` (e.g. ``validation``) prefixes its tags with ``<split>/``."""
    series: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "logs", "*", "events.out.tfevents.*"))):
        split = os.path.basename(os.path.dirname(path))
        prefix = "" if split == "train" else f"{split}/"
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("tensor"):
                    number = tf.make_ndarray(value.tensor)
                    if number.size != 1 or number.dtype.kind not in "fiu":
                        continue
                    number = float(number.reshape(-1)[0])
                elif value.HasField("simple_value"):
                    number = float(value.simple_value)
                else:
                    continue
                series.setdefault(prefix + value.tag, {})[int(event.step)] = number
    return {
        tag: (sorted(points), [points[s] for s in sorted(points)])
        for tag, points in series.items()
        if "learning_rate" not in tag
    }


def collect_run(
    model_dir: str,
    eval_files: str = "",
    max_rows: int = 20_000,
    importance_repeats: int = 3,
    importance_rows: int = 5000,
) -> Run:
    """Scores ``model_dir``'s latest checkpoint on its evaluation data (or ``eval_files``)."""
    config, spec, preprocessor, model = evaluate_lib.load_model_dir(model_dir)
    data = (
        evaluate_lib._as_data(eval_files)
        if eval_files
        else evaluate_lib.default_eval_data(config, model_dir)
    )
    rows, labels = importance.read_rows(spec, data, max_rows)
    score = importance.model_scorer(preprocessor, model)
    logits = score(rows)
    run = Run(
        name=os.path.basename(os.path.normpath(model_dir)),
        model_dir=model_dir,
        model_type=config.model.model_type,
        negative_sampling_rate=config.model.negative_sampling_rate,
        labels=labels,
        logits=logits,
        metrics={},
        curves=training_curves(model_dir),
    )
    run.metrics = evaluate_lib.compute_metrics(labels, run.probabilities)
    for part in ("wide", "deep"):
        if part in logits:
            run.metrics[f"{part}_part_auc"] = metrics.auc(labels, logits[part])
    if importance_repeats:
        n = min(importance_rows, len(labels))
        subset = {k: v[:n] for k, v in rows.items()}
        run.importance = importance.permutation_importance(
            score, subset, labels[:n], repeats=importance_repeats
        )
    return run


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _metrics_table(runs: list[Run]) -> str:
    columns = [
        ("model type", lambda r: r.model_type),
        ("examples", lambda r: r.metrics["examples"]),
        ("AUC", lambda r: f"{r.metrics['auc']:.4f}"),
        ("wide part AUC", lambda r: _fmt(r.metrics.get("wide_part_auc"))),
        ("deep part AUC", lambda r: _fmt(r.metrics.get("deep_part_auc"))),
        ("log loss", lambda r: f"{r.metrics['log_loss']:.4f}"),
        ("accuracy", lambda r: f"{r.metrics['accuracy']:.4f}"),
        ("mean prediction", lambda r: f"{r.metrics['mean_prediction']:.4f}"),
        ("label rate", lambda r: f"{r.metrics['label_rate']:.4f}"),
        ("ECE", lambda r: f"{r.metrics['calibration']['ece']:.4f}"),
        ("negative sampling rate", lambda r: f"{r.negative_sampling_rate:g}"),
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c, _ in columns)
    body = "".join(
        f"<tr><th>{html.escape(r.name)}</th>"
        + "".join(f"<td>{html.escape(str(fn(r)))}</td>" for _, fn in columns)
        + "</tr>"
        for r in runs
    )
    return f"<table><tr><th>run</th>{head}</tr>{body}</table>"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _calibration_table(run: Run) -> str:
    rows = "".join(
        f"<tr><td>{b['bin']}</td><td>{b['lower']:.3f}–{b['upper']:.3f}</td>"
        f"<td>{b['mean_prediction']:.4f}</td><td>{b['observed_rate']:.4f}</td>"
        f"<td>{b['count']}</td></tr>"
        for b in run.metrics["calibration"]["bins"]
    )
    return (
        f"<table><caption>{html.escape(run.name)}</caption><tr><th>bin</th><th>scores</th>"
        f"<th>mean prediction</th><th>observed rate</th><th>rows</th></tr>{rows}</table>"
    )


def render(runs: list[Run], title: str = "wdl_tf model report") -> str:
    """The HTML document of ``runs`` (module doc)."""
    sections = [f"<h2>Metrics</h2>{_metrics_table(runs)}"]
    curves = {}
    for r in runs:
        curves[f"{r.name}"] = (r.labels, r.probabilities)
        for part in ("wide", "deep"):
            if part in r.logits:
                curves[f"{r.name}: {part} part"] = (r.labels, r.logits[part])
    sections.append("<h2>ROC</h2>" + _img(plots.roc_chart(curves), "ROC curves"))
    reliability = {r.name: r.metrics["calibration"] for r in runs}
    for r in runs:
        if r.negative_sampling_rate < 1:
            raw = 1 / (1 + np.exp(-(r.logits["joint"] - np.log(r.negative_sampling_rate))))
            reliability[f"{r.name} before the negative sampling correction"] = metrics.calibration(
                r.labels, raw
            )
    note = ""
    if any(r.negative_sampling_rate < 1 for r in runs):
        note = (
            "<p>Runs trained with down-sampled negatives predict p / (p + (1 − p) / rate); the "
            "curve before that correction is drawn for comparison.</p>"
        )
    sections.append(
        "<h2>Calibration</h2>"
        + note
        + _img(plots.reliability_chart(reliability), "reliability diagram")
        + "".join(_calibration_table(r) for r in runs)
    )
    distribution = plots.score_distribution_chart(
        {r.name: (r.labels, r.probabilities) for r in runs}
    )
    sections.append("<h2>Score distribution by label</h2>" + _img(distribution, "scores by label"))
    with_importance = [r for r in runs if r.importance]
    if with_importance:
        charts = "".join(
            f"<h3>{html.escape(r.name)}</h3>"
            + _img(plots.importance_chart(r.importance), "importance")
            for r in with_importance
        )
        sections.append("<h2>Permutation importance</h2>" + charts)
    with_curves = {r.name: r.curves for r in runs if r.curves}
    if with_curves:
        chart = _img(plots.training_curves_chart(with_curves), "training curves")
        sections.append("<h2>Training curves (TensorBoard logs)</h2>" + chart)
    else:
        sections.append("<h2>Training curves</h2><p>No TensorBoard logs found.</p>")
    dirs = "".join(f"<li>{html.escape(r.name)}: {html.escape(r.model_dir)}</li>" for r in runs)
    generated = datetime.datetime.now().isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Generated {generated} from:</p><ul>{dirs}</ul>"
        + "".join(f"<section>{s}</section>" for s in sections)
        + "</body></html>\n"
    )


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "img{max-width:100%;display:block;margin:1em 0}"
)


def write_report(path: str, document: str) -> None:
    """Writes the HTML via a temp file and a rename (no half-written report)."""
    atomic.write_text(path, document)


def build_report(
    model_dirs: list[str],
    eval_files: str = "",
    max_rows: int = 20_000,
    importance_repeats: int = 3,
    title: str = "wdl_tf model report",
) -> str:
    """Scores every run (`expand_model_dirs`) and renders the report.

    Raises:
      ValueError: no model dir, or a bad one (named).
      ImportError: matplotlib is missing (the ``report`` extra).
    """
    plots.pyplot()  # fail before the work without matplotlib
    if not model_dirs:
        raise ValueError("model_dir: give at least one model dir")
    if max_rows < 1:
        raise ValueError(f"max_rows: must be >= 1, got {max_rows}")
    if importance_repeats < 0:
        raise ValueError(f"importance_repeats: must be >= 0, got {importance_repeats}")
    runs = [
        collect_run(d, eval_files, max_rows, importance_repeats)
        for d in expand_model_dirs(model_dirs)
    ]
    return render(runs, title)
