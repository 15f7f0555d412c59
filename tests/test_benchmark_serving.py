"""scripts/benchmark_serving.py --quick as a user runs it: every section, latency > 0, 0 failed.

Also the hostile-client sections: keep-alive clients, the body limit on raw sockets, the
server's memory for a request at the limit, and the gRPC profile.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wdl_tf.benchmarks import serving_load
from wdl_tf.benchmarks.serving_request import rank_tensors
from wdl_tf.benchmarks.stats import percentiles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "benchmark_serving.py")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_quick_serving_benchmark(tmp_path, census_export):
    # The suite's trained export, so the benchmark does not train one of its own.
    out_json, out_md = tmp_path / "serve.json", tmp_path / "serve.md"
    proc = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--quick",
            f"--work_dir={tmp_path / 'work'}",
            f"--saved_model_base={census_export.config.export_base}",
            f"--output_json={out_json}",
            f"--output_md={out_md}",
        ],
        capture_output=True,
        text=True,
        timeout=600,  # ~60 s on an idle 2-core machine; leave room for a loaded one
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert "| gRPC 1-client p50 / in-process p50 (side by side" in proc.stdout  # the table
    assert out_md.read_text().startswith("Model: census")

    assert report["quick"] and report["hidden_units"] is None  # the given model, not trained
    assert report["saved_model"].startswith(census_export.config.export_base)
    assert report["candidates"] == 200
    assert _positive(report["in_process"]["p50_ms"])
    assert report["in_process"]["p99_ms"] >= report["in_process"]["p50_ms"]

    points = {(p["protocol"], p["clients"]): p for p in report["points"]}
    assert set(points) == {(proto, n) for proto in ("grpc", "rest") for n in (1, 4, 16)}
    for point in points.values():
        assert point["failed"] == 0, point["errors"]
        assert point["requests"] > 0
        assert _positive(point["p50_ms"]) and _positive(point["p99_ms"])
        assert _positive(point["requests_per_s"])

    soak = report["soak"]
    assert soak["clients"] == 16 and soak["failed"] == 0, soak["errors"]
    assert _positive(soak["p50_ms"])
    assert _positive(soak["rss"]["mib_at_baseline"]) and _positive(soak["rss"]["mib_at_end"])
    assert len(soak["rss"]["samples_mib"]) >= 3
    # The leak figure: growth under load up to the reload, judged with a tolerance.
    assert isinstance(soak["rss"]["growth_before_reload_mib"], float)
    grew = soak["rss"]["growth_before_reload_mib"] > serving_load.LEAK_TOLERANCE_MIB
    assert soak["rss"]["grew_under_load"] == grew

    reload = soak["reload"]
    assert "error" not in reload, reload
    assert reload["failed_during"] == 0 and reload["requests_during"] > 0
    assert reload["final_states"].get("2") == "AVAILABLE"

    keepalive = report["keepalive"]
    assert keepalive["clients"] == 50 and keepalive["requests"] > 0
    assert keepalive["failed"] == 0, keepalive["errors"]

    limits = report["limits"]
    assert limits["max_body_bytes"] == 4 << 20
    assert limits["chunk_size_minus_1"]["status"] == 400
    assert limits["content_length_over_limit"]["status"] == 413
    assert limits["content_length_over_limit"]["body_bytes_sent_after_headers"] == 0
    assert limits["chunked_over_limit"]["status"] == 413

    memory = report["limit_request_memory"]
    assert memory["status"] == 200 and 3.5 < memory["body_mib"] <= 4
    assert memory["rss_mib_peak"] >= memory["rss_mib_before"] > 0

    profile = report["grpc_profile"]
    assert {"client_encode", "server_checks_and_model", "server_encode"} <= set(profile["steps_ms"])
    assert all(_positive(ms) for ms in profile["steps_ms"].values())

    targets = report["targets"]
    assert targets["failed_total"] == 0 and targets["reload_ok"]
    assert targets["keepalive_failed"] == 0 and targets["limits_ok"]
    assert _positive(targets["grpc_vs_in_process_p50"])
    side = report["side_by_side"]  # alternating blocks: as many calls on each path
    # 4 blocks of 10 per path; the first `settle` calls of each block are not in the figure
    assert 0 < side["settle"] < 10
    assert side["in_process"]["iters"] == side["grpc"]["iters"] == 4 * (10 - side["settle"])
    assert _positive(side["ratio_p50_all_calls"])
    assert targets["grpc_vs_in_process_p50"] == pytest.approx(
        side["grpc"]["p50_ms"] / side["in_process"]["p50_ms"]
    )
    assert isinstance(targets["ratio_met"], bool) and isinstance(targets["memory_grew"], bool)


def test_percentiles_in_ms_and_zeros_without_calls():
    assert percentiles([]) == {"p50_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    summary = percentiles([0.001, 0.002, 0.003])
    assert summary["p50_ms"] == pytest.approx(2.0) and summary["mean_ms"] == pytest.approx(2.0)
    assert 2.0 < summary["p99_ms"] <= 3.0


def test_rank_request_is_one_context_row_and_a_column_of_candidates():
    tensors = rank_tensors(
        {"age": [39.0]},
        {"education": ["Bachelors", "HS-grad"]},
        {"age": np.float32, "education": object},
    )
    assert tensors["age"].shape == (1, 1) and tensors["age"].dtype == np.float32
    assert tensors["education"].tolist() == [[b"Bachelors"], [b"HS-grad"]]


def test_alternating_blocks_order_and_settle():
    from wdl_tf.benchmarks.serving_bench import alternating_blocks

    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    steady, every = alternating_blocks(calls, rounds=2, per_block=3, settle=1)
    assert "".join(order) == "aaabbbaaabbb"
    assert {k: len(v) for k, v in every.items()} == {"a": 6, "b": 6}
    assert {k: len(v) for k, v in steady.items()} == {"a": 4, "b": 4}  # 1 of 3 dropped
    assert all(s >= 0 for v in every.values() for s in v)
    for settle in (-1, 3):
        with pytest.raises(ValueError, match="settle: must be in"):
            alternating_blocks(calls, rounds=1, per_block=3, settle=settle)
