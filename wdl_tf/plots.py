"""PNG charts for the importance script and the HTML report (matplotlib, the ``report`` extra).

Every function returns the PNG bytes of one figure drawn with the non-interactive Agg backend,
so nothing needs a display.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

PART_COLORS = {"joint": "#1f77b4", "wide": "#ff7f0e", "deep": "#2ca02c"}


def pyplot():
    """matplotlib.pyplot on the Agg backend; ImportError naming the extra without it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("matplotlib is needed for charts: pip install 'wdl_tf[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) at every distinct score threshold."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1) > 0.5
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each tied group
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def importance_chart(result: dict[str, Any], top: int | None = 30) -> bytes:
    """Mean AUC drop (± std) per feature, largest first, one bar per part."""
    plt = pyplot()
    parts = list(result["baseline_auc"])
    names = result["ranking"]["joint"][:top]
    fig, ax = plt.subplots(figsize=(8, 0.22 * len(names) * len(parts) + 1.5))
    height = 0.8 / len(parts)
    y = np.arange(len(names))
    for i, part in enumerate(parts):
        means = [result["features"][n][part]["mean"] for n in names]
        stds = [result["features"][n][part]["std"] for n in names]
        ax.barh(y + i * height, means, height, xerr=stds, label=part,
                color=PART_COLORS.get(part), capsize=2)  # fmt: skip
    ax.set_yticks(y + height * (len(parts) - 1) / 2, names)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel(f"AUC drop when the feature is shuffled ({result['repeats']} shuffles)")
    ax.set_title("Permutation importance")
    ax.legend(loc="lower right")
    return _png(fig)


def roc_chart(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """ROC curves: label → (labels, scores); the AUC in the legend."""
    from wdl_tf import metrics

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (labels, scores) in curves.items():
        fpr, tpr = roc_points(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {metrics.auc(labels, scores):.4f})",
                linestyle="--" if "part" in name else "-")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def reliability_chart(curves: dict[str, dict]) -> bytes:
    """Observed rate vs mean prediction per bin (`metrics.calibration` dicts by label)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, cal in curves.items():
        x = [b["mean_prediction"] for b in cal["bins"]]
        y = [b["observed_rate"] for b in cal["bins"]]
        ax.plot(x, y, marker="o", label=f"{name} (ECE {cal['ece']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6, label="perfectly calibrated")
    ax.set_xlabel("mean predicted probability (per score decile)")
    ax.set_ylabel("observed positive rate")
    ax.set_title("Reliability")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def score_distribution_chart(runs: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Histograms of the predicted probability by label, one panel per run."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.5), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, (name, (labels, scores)) in zip(axes[0], runs.items()):
        y = np.asarray(labels).reshape(-1) > 0.5
        s = np.asarray(scores).reshape(-1)
        ax.hist(s[~y], bins=bins, alpha=0.6, density=True, label=f"label 0 ({(~y).sum()})")
        ax.hist(s[y], bins=bins, alpha=0.6, density=True, label=f"label 1 ({y.sum()})")
        ax.set_title(name)
        ax.set_xlabel("predicted probability")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("density")
    return _png(fig)


def training_curves_chart(runs: dict[str, dict[str, tuple[list, list]]]) -> bytes:
    """One panel per scalar tag (epoch_loss, epoch_auc, ...), one line per run."""
    plt = pyplot()
    tags = sorted({tag for series in runs.values() for tag in series})
    fig, axes = plt.subplots(1, len(tags), figsize=(4.5 * len(tags), 3.5), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for name, series in runs.items():
            if tag in series:
                steps, values = series[tag]
                ax.plot(steps, values, marker="o", label=name)
        ax.set_title(tag)
        ax.set_xlabel("epoch" if tag.startswith("epoch") else "step")
        ax.legend(fontsize=8)
    return _png(fig)
