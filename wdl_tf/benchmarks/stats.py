"""Summaries of timings, the same for every benchmark.

Latency is reported as p50/p99/mean in milliseconds wherever it is measured (in-process calls,
gRPC and REST clients, keep-alive clients), so one function computes them all.
"""

from __future__ import annotations

import numpy as np


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    """p50, p99 and mean, in ms, of latencies in seconds (zeros when there are none)."""
    if not latencies_s:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    ms = np.asarray(latencies_s) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }
