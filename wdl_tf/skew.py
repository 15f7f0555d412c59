"""Training/serving skew and drift: training-time statistics against a sample of serving inputs.

At the end of adapt, training saves ``training_stats.json`` in the model dir (and the export
copies it into ``assets.extra/``): per feature, the missing rate and, for numeric features,
the range, the adapted quantiles and the share of rows in each decile bin; for categorical and
multivalent ones, the frequencies of the most common tokens and, for a feature with a learned
vocabulary, the vocabulary and the OOV rate (values outside it). A hashed feature has no OOV:
every value gets a bucket (its new values show in the distances instead).

`compare` puts a `samples.Sample` of serving inputs (request logs or rows) against them, per
feature:

* the population stability index over the same bins, PSI = Σ (s_i - t_i) ln(s_i / t_i)
  (t: training share, s: sample share; empty bins floored at `EPSILON`), and the
  Jensen–Shannon distance, sqrt(JSD) with base-2 logarithms (0 = same, 1 = disjoint);
* the missing rate and the OOV rate, training vs sample;
* numeric: the share of sample values outside the training range [min, max].

A feature is flagged when the chosen distance, the rise of the missing or OOV rate, or the
out-of-range share passes its `SkewThresholds`; a report with a flagged feature fails.
PSI above 0.25 is the usual "significant shift" rule of thumb (0.1–0.25 "moderate").
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from wdl_tf import atomic, samples
from wdl_tf import features as fs

STATS_FILE = "training_stats.json"
NUM_BINS = 10  # deciles: PSI noise grows with the bins (~ (bins - 1) / rows)
TOP_TOKENS = 30  # tokens compared one by one; the rest pool into one "other" bin
MAX_STATS_ROWS = 50_000  # training rows read for the statistics (deciles, top tokens)
EPSILON = 1e-4
METRICS = ("psi", "js")


@dataclasses.dataclass(frozen=True)
class SkewThresholds:
    """When a feature is flagged.

    Attributes:
      metric: the distance that gates: ``psi`` or ``js`` (both are reported).
      max_psi: largest allowed population stability index.
      max_js: largest allowed Jensen–Shannon distance (base 2, in [0, 1]).
      max_missing_increase: largest allowed rise of the missing rate (sample - training).
      max_oov_increase: largest allowed rise of the OOV rate.
      max_out_of_range: largest allowed share of numeric values outside the training range.
    """

    metric: str = "psi"
    max_psi: float = 0.25
    max_js: float = 0.2
    max_missing_increase: float = 0.05
    max_oov_increase: float = 0.05
    max_out_of_range: float = 0.05

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(
                f"metric: unknown value {self.metric!r}; allowed values are {list(METRICS)}"
            )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "metric" and not value >= 0:
                raise ValueError(f"{f.name}: must be >= 0, got {value}")


# ----------------------------------------------------------------------------------------
# Training statistics.


def _tokens(f: fs.FeatureConfig, column: np.ndarray) -> list[str]:
    """Every non-missing token of a categorical or multivalent column."""
    if f.kind == fs.MULTIVALENT:
        return [t for row in column for t in row]
    return [v for v in column if v is not None]


def _numeric_stats(f: fs.FeatureConfig, values: np.ndarray, state) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    out: dict[str, Any] = {"kind": f.kind, "missing_rate": float(np.mean(np.isnan(values)))}
    if present.size == 0:
        return {**out, "min": None, "max": None, "bin_edges": [], "bin_shares": [1.0]}
    edges = np.unique(np.quantile(present, np.arange(1, NUM_BINS) / NUM_BINS)).tolist()
    shares = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return {
        **out,
        "min": float(present.min()),
        "max": float(present.max()),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "bin_edges": [float(e) for e in edges],
        "bin_shares": (shares / present.size).tolist(),
        "adapted_quantiles": getattr(state, "cdf_boundaries", None),
        "adapted_bucket_boundaries": getattr(state, "bucket_boundaries", None),
    }


def _token_stats(f: fs.FeatureConfig, column: np.ndarray, miss: np.ndarray, state) -> dict:
    tokens = _tokens(f, column)
    counts = collections.Counter(tokens)
    total = max(len(tokens), 1)
    vocabulary = getattr(state, "vocabulary", None)
    known = None if vocabulary is None else [str(t) for t in vocabulary]
    oov = None
    if known is not None:
        known_set = set(known)
        oov = sum(c for t, c in counts.items() if t not in known_set) / total
    top = counts.most_common(TOP_TOKENS)
    return {
        "kind": f.kind,
        "missing_rate": float(np.mean(miss)) if len(miss) else 0.0,
        "values": len(tokens),
        "top_tokens": {t: c / total for t, c in top},
        "other_share": 1.0 - sum(c for _, c in top) / total if tokens else 0.0,
        "oov_rate": oov,
        "vocabulary": known,
    }


def training_stats(spec: fs.FeatureSpec, state, sample: samples.Sample) -> dict[str, Any]:
    """The statistics of a sample of training rows (see the module doc).

    Args:
      state: the `preprocessing.PreprocessingState` adapt learned (vocabularies, quantiles).
    """
    features = {}
    for f in spec.features:
        st = state.features.get(f.name) if state is not None else None
        column = sample.columns[f.name]
        if f.kind == fs.NUMERIC:
            features[f.name] = _numeric_stats(f, column, st)
        else:
            features[f.name] = _token_stats(f, column, sample.missing(f.name), st)
    return {"rows": sample.rows, "source": sample.source, "features": features}


def save_training_stats(
    model_dir: str, spec: fs.FeatureSpec, state, train_files: list[str], max_rows: int
) -> str:
    """Writes ``<model_dir>/training_stats.json`` from at most ``max_rows`` (and
    `MAX_STATS_ROWS`) training rows, unless it is there already (a resumed run); returns its
    path. The hook training calls after adapt. Malformed rows are left out: the training
    pipeline reports them (or skips them with ``skip_bad_rows``)."""
    path = os.path.join(model_dir, STATS_FILE)
    if not os.path.exists(path):
        limit = min(max_rows, MAX_STATS_ROWS)
        sample = samples.read_rows(spec, train_files, limit, skip_bad_rows=True)
        atomic.write_json(path, training_stats(spec, state, sample), indent=1)
    return path


def export_assets(model_dir: str) -> tuple[str, ...]:
    """The statistics file of ``model_dir`` when there is one (for ``assets.extra/``)."""
    path = os.path.join(model_dir, STATS_FILE)
    return (path,) if os.path.exists(path) else ()


def find_stats(path: str) -> str:
    """The statistics file of a model dir, a SavedModel (``assets.extra/``) or the file itself.

    Raises:
      ValueError: none there.
    """
    candidates = [
        path,
        os.path.join(path, STATS_FILE),
        os.path.join(path, "assets.extra", STATS_FILE),
    ]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(
        f"training_stats: no {STATS_FILE} at {path!r} (give a model dir, an exported SavedModel "
        "or the file; models trained before the statistics existed have none)"
    )


def load_stats(path: str) -> dict[str, Any]:
    with open(find_stats(path)) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------
# Distances.


def psi(train: np.ndarray, sample: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    t = np.maximum(np.asarray(train, dtype=np.float64), EPSILON)
    s = np.maximum(np.asarray(sample, dtype=np.float64), EPSILON)
    t, s = t / t.sum(), s / s.sum()
    return float(np.sum((s - t) * np.log(s / t)))


def js_distance(train: np.ndarray, sample: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2) of two share vectors: sqrt of the JS divergence."""
    p = np.asarray(train, dtype=np.float64)
    q = np.asarray(sample, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


# ----------------------------------------------------------------------------------------
# Comparing a sample.


def _compare_numeric(st: dict, values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    out = {"missing_rate": float(np.mean(np.isnan(values)))}
    if present.size == 0 or st["min"] is None:
        return {**out, "psi": None, "js": None, "out_of_range": None}
    edges = st["bin_edges"]
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    shares = counts / present.size
    outside = (present < st["min"]) | (present > st["max"])
    return {
        **out,
        "psi": psi(st["bin_shares"], shares),
        "js": js_distance(st["bin_shares"], shares),
        "out_of_range": float(np.mean(outside)),
        "sample_min": float(present.min()),
        "sample_max": float(present.max()),
    }


def _compare_tokens(f: fs.FeatureConfig, st: dict, column: np.ndarray, miss) -> dict[str, Any]:
    tokens = _tokens(f, column)
    out: dict[str, Any] = {"missing_rate": float(np.mean(miss))}
    if not tokens:
        return {**out, "psi": None, "js": None, "oov_rate": None}
    counts = collections.Counter(tokens)
    top = list(st["top_tokens"])
    train = np.array([st["top_tokens"][t] for t in top] + [st["other_share"]])
    sample = np.array([counts.get(t, 0) for t in top] + [0.0], dtype=np.float64)
    sample[-1] = len(tokens) - sample[:-1].sum()
    sample /= len(tokens)
    oov = None
    if st.get("vocabulary") is not None:
        known = set(st["vocabulary"])
        unknown = {t: c for t, c in counts.items() if t not in known}
        oov = sum(unknown.values()) / len(tokens)
        out["top_oov_tokens"] = [t for t, _ in collections.Counter(unknown).most_common(5)]
    return {**out, "psi": psi(train, sample), "js": js_distance(train, sample), "oov_rate": oov}


def _flags(name: str, st: dict, got: dict, th: SkewThresholds) -> list[str]:
    flags = []
    distance = got.get(th.metric)
    limit = th.max_psi if th.metric == "psi" else th.max_js
    if distance is not None and distance > limit:
        flags.append(f"{th.metric} {distance:.3f} > {limit}")
    rise = got["missing_rate"] - st["missing_rate"]
    if rise > th.max_missing_increase:
        flags.append(
            f"missing rate {st['missing_rate']:.3f} -> {got['missing_rate']:.3f} "
            f"(+{rise:.3f} > {th.max_missing_increase})"
        )
    if got.get("oov_rate") is not None and st.get("oov_rate") is not None:
        rise = got["oov_rate"] - st["oov_rate"]
        if rise > th.max_oov_increase:
            new = ", ".join(repr(t) for t in got.get("top_oov_tokens", []))
            flags.append(
                f"OOV rate {st['oov_rate']:.3f} -> {got['oov_rate']:.3f} "
                f"(+{rise:.3f} > {th.max_oov_increase}; e.g. {new})"
            )
    if got.get("out_of_range") is not None and got["out_of_range"] > th.max_out_of_range:
        flags.append(
            f"{got['out_of_range']:.1%} of values outside the training range "
            f"[{st['min']:g}, {st['max']:g}] (> {th.max_out_of_range:.0%}; sample range "
            f"[{got['sample_min']:g}, {got['sample_max']:g}])"
        )
    return flags


def compare(
    stats: dict[str, Any], sample: samples.Sample, thresholds: SkewThresholds = SkewThresholds()
) -> dict[str, Any]:
    """The skew report of ``sample`` against training ``stats`` (module doc).

    Returns a dict: ``passed``, ``rows``, ``source``, ``thresholds``, ``warnings`` and
    ``features`` (per feature: ``psi``, ``js``, ``missing_rate``, ``oov_rate``,
    ``out_of_range`` with their training values under ``training``, and ``flags``).

    Raises:
      ValueError: a sample feature the statistics do not have (another model's statistics).
    """
    thresholds.validate()
    absent = [n for n in sample.spec.feature_names if n not in stats["features"]]
    if absent:
        raise ValueError(
            f"training statistics have no feature(s) {absent} (they have "
            f"{sorted(stats['features'])}): statistics of another model?"
        )
    warnings = []
    if sample.rows < 10 * NUM_BINS:
        warnings.append(
            f"the sample has only {sample.rows} rows: distances are noisy below "
            f"{10 * NUM_BINS} (PSI noise ~ bins / rows)"
        )
    features = {}
    for f in sample.spec.features:
        st = stats["features"][f.name]
        column = sample.columns[f.name]
        if f.kind == fs.NUMERIC:
            got = _compare_numeric(st, column)
        else:
            got = _compare_tokens(f, st, column, sample.missing(f.name))
        got["training"] = {
            "missing_rate": st["missing_rate"],
            "oov_rate": st.get("oov_rate"),
            "range": [st.get("min"), st.get("max")] if f.kind == fs.NUMERIC else None,
        }
        got["kind"] = f.kind
        got["flags"] = _flags(f.name, st, got, thresholds)
        features[f.name] = got
    return {
        "passed": not any(v["flags"] for v in features.values()),
        "rows": sample.rows,
        "source": sample.source,
        "skipped_records": sample.skipped,
        "training_rows": stats.get("rows"),
        "thresholds": dataclasses.asdict(thresholds),
        "warnings": warnings,
        "features": features,
    }


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width table: one line per feature, then the flags."""
    lines = [
        f"sample: {report['rows']} rows from {report['source']} "
        f"(training statistics of {report['training_rows']} rows)",
        f"{'feature':<22}{'kind':<13}{'psi':>8}{'js':>8}{'missing':>16}{'oov':>16}{'out':>8}",
    ]
    for name, got in report["features"].items():
        tr = got["training"]
        missing = f"{tr['missing_rate']:.3f}->{got['missing_rate']:.3f}"
        oov = "-"
        if got.get("oov_rate") is not None and tr.get("oov_rate") is not None:
            oov = f"{tr['oov_rate']:.3f}->{got['oov_rate']:.3f}"
        lines.append(
            f"{name:<22}{got['kind']:<13}{_num(got['psi']):>8}{_num(got['js']):>8}"
            f"{missing:>16}{oov:>16}{_num(got.get('out_of_range')):>8}"
        )
    for name, got in report["features"].items():
        for flag in got["flags"]:
            lines.append(f"FLAGGED {name}: {flag}")
    lines.extend(f"warning: {w}" for w in report["warnings"])
    lines.append("PASSED" if report["passed"] else "FAILED: skew above thresholds")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# The command (scripts/skew_report.py).


def find_spec(stats_path: str) -> str:
    """The feature spec stored beside training statistics (model dir or ``assets.extra/``)."""
    stats_file = find_stats(stats_path)
    candidate = os.path.join(os.path.dirname(stats_file), "feature_spec.json")
    if not os.path.isfile(candidate):
        raise ValueError(
            f"feature_spec: none beside {stats_file!r}; give --feature_spec (a preset or file)"
        )
    return candidate


def skew_report(
    training_stats: str,
    *,
    request_log: str = "",
    rows: str = "",
    feature_spec: str = "",
    max_rows: int = 100_000,
    thresholds: SkewThresholds = SkewThresholds(),
) -> dict[str, Any]:
    """Reads the statistics and a sample (exactly one of ``request_log`` and ``rows``) and
    compares them (`compare`).

    Raises:
      ValueError: a bad argument or input, named (`samples.SampleError` for the sample).
    """
    thresholds.validate()
    if bool(request_log) == bool(rows):
        given = "both" if rows else "neither"
        raise ValueError(f"give exactly one of --request_log and --rows (got {given})")
    if max_rows < 1:
        raise ValueError(f"max_rows: must be >= 1, got {max_rows}")
    stats = load_stats(training_stats)
    spec = fs.load(feature_spec or find_spec(training_stats))
    if request_log:
        sample = samples.read_request_log(spec, request_log, max_rows)
    else:
        sample = samples.read_rows(spec, rows, max_rows)
    return compare(stats, sample, thresholds)
