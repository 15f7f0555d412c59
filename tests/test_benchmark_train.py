"""scripts/benchmark_train.py --quick, as a user runs it: every section reported, numbers > 0
(structure only: timings on a shared machine are not a test's business)."""

import json
import os
import subprocess
import sys

import pytest

from wdl_tf.benchmarks.train_settings import IMPLEMENTATIONS, QUICK, SECTIONS, resolve_settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "benchmark_train.py")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_quick_benchmark_reports_every_section(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    proc = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--quick",
            f"--data_dir={tmp_path / 'data'}",
            f"--output_json={out_json}",
            f"--output_md={out_md}",
            "--device_name=test machine",
        ],
        capture_output=True,
        text=True,
        timeout=600,  # ~1 min on an idle 2-core machine; leave room for a loaded one
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out_json.read_text())
    markdown = out_md.read_text()
    assert "## 1. Optimizer step" in proc.stdout  # the table is printed too

    env = report["meta"]["environment"]
    assert env["device_name"] == "test machine"
    assert env["cpu_count"] >= 1 and env["physical_devices"]
    assert report["meta"]["quick"] is True

    # 1. Optimizer step: every table size, ours and stock, FTRL and AdaGrad.
    rows = report["optimizer_step"]["results"]
    assert [r["rows"] for r in rows] == [1000, 10000, 40000]
    for r in rows:
        for key in ("ftrl_wdl_tf_ms", "ftrl_keras_ms", "adagrad_wdl_tf_ms", "adagrad_keras_ms"):
            assert _positive(r[key]), (key, r)
        assert _positive(r["ftrl_speedup"]) and _positive(r["adagrad_speedup"])
        assert 1 <= r["unique_ids_mean"] < r["ids_per_batch"]  # Zipf ids repeat

    # 2. End to end: every implementation at every bucket count, float32 and with the
    # bfloat16 tower; tf_keras may be n/a.
    results = report["end_to_end"]["results"]
    buckets = [int(hb) for hb in QUICK["hash_buckets"]]
    implementations = ("wdl_tf", "keras_stock", "tf_keras", "wdl_tf_bf16", "tf_keras_bf16")
    assert {(r["implementation"], r["hash_buckets"]) for r in results} == {
        (i, hb) for i in implementations for hb in buckets
    }
    for r in results:
        if r["implementation"].startswith("tf_keras") and r["status"] == "n/a":
            assert r["reason"]
            continue
        assert r["status"] == "ok", r
        for key in ("examples_per_s", "step_ms", "params", "peak_rss_mib"):
            assert _positive(r[key]), (key, r)
        assert r["windows"] >= 2 and all(_positive(x) for x in r["window_examples_per_s"])

    # 3. Input pipeline, and its ratio to wdl_tf's training rate.
    pipe = report["input_pipeline"]
    assert _positive(pipe["csv"]["examples_per_s"])
    assert _positive(pipe["tfrecord"]["examples_per_s"])
    assert len(pipe["ratios"]) == len(buckets)
    assert all(_positive(r["csv_ratio"]) and _positive(r["tfrecord_ratio"]) for r in pipe["ratios"])

    # 4. Roofline: measured GFLOP/s, FLOPs per example (quick: 4 numerics + 6 × 8-d), limit.
    roof = report["roofline"]
    assert _positive(roof["gflops"]) and _positive(roof["gflops_median"])
    assert all(_positive(m["gflops"]) and m["gflops_best"] >= m["gflops"] for m in roof["matmul"])
    assert roof["layers"] == [4 + 6 * 8, 64, 32, 16, 1]
    forward = 2 * (52 * 64 + 64 * 32 + 32 * 16 + 16 * 1)
    assert roof["forward_flops_per_example"] == forward
    assert roof["train_flops_per_example"] == 3 * forward
    assert _positive(roof["limit_examples_per_s"])
    assert _positive(roof["limit_examples_per_s_median"])
    assert roof["achieved"] and all(_positive(a["fraction"]) for a in roof["achieved"])
    # The bfloat16 towers are set against the bfloat16 products' limit, the others not.
    assert {m["dtype"] for m in roof["matmul"]} == {"float32", "bfloat16"}
    assert _positive(roof["gflops_bf16"]) and _positive(roof["limit_examples_per_s_bf16"])
    for r in results:
        if r["status"] == "ok":
            bf16 = r["implementation"].endswith("_bf16")
            limit = roof["limit_examples_per_s_bf16" if bf16 else "limit_examples_per_s"]
            assert r["fraction_of_mlp_limit"] == pytest.approx(r["examples_per_s"] / limit)

    # 5. Memory.
    mem = report["memory"]
    assert _positive(mem["parent_peak_rss_mib"])

    # 6. From files: every format for wdl_tf and tf_keras (n/a without it) at every bucket
    # count; every epoch uncached and cached timed, the cache written and measured.
    files = report["from_files"]["results"]
    assert {(r["implementation"], r["hash_buckets"]) for r in files} == {
        (i, hb) for i in ("wdl_tf", "tf_keras") for hb in buckets
    }
    for r in files:
        if r["implementation"] == "tf_keras" and r["status"] == "n/a":
            assert r["reason"]
            continue
        assert r["status"] == "ok", r
        assert [f["format"] for f in r["formats"]] == ["csv", "csv_gz", "tfrecord"]
        assert len(r["pre_encoded"]) == 1 + 3
        for f in r["formats"]:
            assert len(f["uncached"]) == 2 and len(f["cached"]) == QUICK["files_epochs"]
            for pipeline in ("uncached", "cached"):
                assert all(_positive(e["examples_per_s"]) for e in f[pipeline])
                assert all(e["steps"] == -(-4096 // 256) for e in f[pipeline])  # full passes
            assert _positive(f["cache_bytes"]) and f["cache_complete"] is True
            for key in ("pre_encoded_examples_per_s", "cached_ratio", "uncached_ratio"):
                assert _positive(f[key]), (key, f)
    assert len(mem["per_config"]) == len(results) + len(files)

    for title in (
        "## 2. End-to-end",
        "## 3. Input pipeline",
        "## 4. Roofline",
        "## 5. Peak",
        "## 6. Training from files",
    ):
        assert title in markdown
    assert "From CSV with the encoded cache" in markdown
    assert "| bfloat16: wdl_tf ÷ tf_keras |" in markdown and "the bfloat16 limit" in markdown

    # --sections=end_to_end alone (no roofline, hence no share of the MLP limit) formats too.
    from wdl_tf.benchmarks import train_report

    partial = {k: report[k] for k in ("meta", "data", "end_to_end", "memory", "tf_keras_build")}
    for r in partial["end_to_end"]["results"]:
        r.pop("fraction_of_mlp_limit", None)
    assert "| n/a |" in train_report.format_markdown(partial)

    # A full run has two bucket counts (10K, 1M): every per-configuration table gets a row
    # for each. The quick run has one; a copy of its results at a second count stands in.
    def at_two_counts(rows):
        return rows + [{**r, "hash_buckets": 123_456} for r in rows]

    both = json.loads(json.dumps(report))
    for section in ("end_to_end", "from_files"):
        both[section]["results"] = at_two_counts(both[section]["results"])
    both["input_pipeline"]["ratios"] = at_two_counts(both["input_pipeline"]["ratios"])
    both["roofline"]["achieved"] = at_two_counts(both["roofline"]["achieved"])
    both["memory"]["per_config"] = at_two_counts(both["memory"]["per_config"])
    two = train_report.format_markdown(both)
    assert "÷ wdl_tf training @ 123,456" in two
    assert two.count("wdl_tf (ours) @ 123,456") == two.count(f"wdl_tf (ours) @ {buckets[0]:,}")


def test_quick_sizes_replace_only_the_flags_not_given():
    values = dict(
        QUICK,
        data_dir="/tmp/d",
        quick=True,
        device_name=None,
        implementations=list(IMPLEMENTATIONS),
        tf_keras_optimizers="legacy",
        optimizer_ids=1024,
        config_timeout=420,
        sections=list(SECTIONS),
    )
    values.update(rows=200_000, batch_size=512)  # as their flags' values would be
    settings = resolve_settings(values, given={"batch_size"})
    assert (settings.rows, settings.batch_size) == (4096, 512)  # rows not given: QUICK's
    assert settings.hash_buckets == (1000,) and settings.hidden_units == (64, 32, 16)
    assert settings.train_batches == 4096 // 512 and settings.isolate is False
    with pytest.raises(ValueError, match="--hash_buckets: expected comma-separated integers"):
        resolve_settings({**values, "hash_buckets": ["x"]}, given={"hash_buckets"})
    with pytest.raises(ValueError, match="--implementations: unknown"):
        resolve_settings({**values, "implementations": ["torch"]}, given=set())
    assert settings.sections == SECTIONS and settings.files_epochs == 2
    only = resolve_settings({**values, "sections": ["from_files", "roofline"]}, {"sections"})
    assert only.sections == ("roofline", "from_files")  # in the order they run
    with pytest.raises(ValueError, match="--sections: unknown"):
        resolve_settings({**values, "sections": ["nope"]}, given={"sections"})
    with pytest.raises(ValueError, match="--files_epochs must be >= 2"):
        resolve_settings({**values, "files_epochs": 1}, given={"files_epochs"})
    with pytest.raises(ValueError, match="--warmup_steps must be >= 2"):
        resolve_settings({**values, "warmup_steps": 1}, given={"warmup_steps"})
