"""The training benchmark's Markdown: the report dict of `train_bench.run_benchmark` as the
tables BENCHMARKS.md quotes, kept apart from the measuring so either changes alone."""

from __future__ import annotations

import json
import os

from wdl_tf.benchmarks.train_settings import (
    BF16_SUFFIX,
    IMPL_TITLES,
    IMPLEMENTATIONS,
    PIPELINE_TARGET_RATIO,
)


def _fmt(x, digits: int = 0) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and digits == 0 and abs(x) < 100:
        digits = 2 if abs(x) < 10 else 1
    return f"{x:,.{digits}f}"


def _cfg(results, impl, hb):
    for r in results:
        if r["implementation"] == impl and r["hash_buckets"] == hb:
            return r
    return None


def _rate_cell(r) -> str:
    if r is None:
        return "—"
    if r.get("status") != "ok":
        return f"{r.get('status', 'failed')}: {r.get('reason', '')}".replace("|", "/")
    return f"{_fmt(r['examples_per_s'])} ({_fmt(max(r['window_examples_per_s']))})"


def _ratio(a, b, key) -> str:
    ok = a and b and a.get("status") == "ok" and b.get("status") == "ok"
    if not ok:
        return "n/a"
    return f"{key(a) / key(b):.2f}×"


def format_markdown(report: dict) -> str:
    meta, env = report["meta"], report["meta"]["environment"]
    lines = [
        f"# wdl_tf training benchmark — {env['device_name']}",
        "",
        f"- date: {meta['date']}; command: `{meta['command']}`"
        + ("; **--quick (tiny sizes, not representative)**" if meta["quick"] else ""),
        f"- CPU: {env['cpu_model']}, os.cpu_count() = {env['cpu_count']} "
        f"({env['cpus_usable']} usable), {env['memory_gib']} GiB RAM; load average "
        f"{env['load_average_start']} at start, {meta['load_average_end']} at the end",
        f"- devices: {', '.join(env['physical_devices'])}"
        + (
            f" ({', '.join(env['gpus'])}, TF32 {'on' if env['tensor_float_32'] else 'off'})"
            if env["gpus"]
            else ""
        ),
        f"- TensorFlow {env['tensorflow']}, Keras {env['keras']}, tf_keras {env['tf_keras']}, "
        f"Python {env['python']}; total {meta['total_seconds']:.0f} s "
        f"(by section: {meta['section_seconds']})",
        "",
    ]
    if "optimizer_step" in report:
        opt = report["optimizer_step"]
        lines += [
            "## 1. Optimizer step, ms (median)",
            "",
            "| table rows | FTRL wdl_tf | FTRL keras | speed-up | AdaGrad wdl_tf | AdaGrad keras "
            "| speed-up | unique ids / batch |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in opt["results"]:
            lines.append(
                f"| {r['rows']:,} | {_fmt(r['ftrl_wdl_tf_ms'])} | {_fmt(r['ftrl_keras_ms'])} "
                f"| {r['ftrl_speedup']:.1f}× | {_fmt(r['adagrad_wdl_tf_ms'])} "
                f"| {_fmt(r['adagrad_keras_ms'])} | {r['adagrad_speedup']:.1f}× "
                f"| {r['unique_ids_mean']:.0f} of {r['ids_per_batch']} |"
            )
        lines += ["", f"Method: {opt['method']}.", ""]

    if "end_to_end" in report:
        e2e = report["end_to_end"]
        results = e2e["results"]
        st = meta["settings"]
        hbs = sorted({r["hash_buckets"] for r in results})
        impls = [i for i in IMPLEMENTATIONS if any(r["implementation"] == i for r in results)]
        # Each ratio sets wdl_tf against a configuration of the same numerics.
        pairs = [("wdl_tf", "keras_stock"), ("wdl_tf", "tf_keras")]
        if {"wdl_tf_bf16", "tf_keras_bf16"} & set(impls):
            pairs.append(("wdl_tf_bf16", "tf_keras_bf16"))
        lines += [
            "## 2. End-to-end training, examples/s (median of timed windows)",
            "",
            f"Model: {st['numeric_features']} numeric + {st['categorical_features']} categorical "
            f"features, {st['embedding_dim']}-d embeddings, ReLU "
            f"{'-'.join(map(str, st['hidden_units']))}, batch {st['batch_size']}; FTRL (wide) + "
            "AdaGrad (deep).",
            "",
            "| hash buckets / feature | "
            + " | ".join(IMPL_TITLES[i] for i in impls)
            + " | wdl_tf ÷ stock | wdl_tf ÷ tf_keras |"
            + (" bfloat16: wdl_tf ÷ tf_keras |" if len(pairs) > 2 else ""),
            "|---:|" + "---:|" * (len(impls) + len(pairs)),
        ]
        median = lambda r: r["examples_per_s"]
        best = lambda r: max(r["window_examples_per_s"])
        for hb in hbs:
            cells = [_rate_cell(_cfg(results, i, hb)) for i in impls]
            for mine, other in pairs:
                a, b = _cfg(results, mine, hb), _cfg(results, other, hb)
                cells.append(f"{_ratio(a, b, median)} ({_ratio(a, b, best)})")
            lines.append(f"| {hb:,} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Cells: median window (best window); ratios: of the medians (of the best windows). "
            "On a machine shared with other work the best window is the closest to the "
            "uncontended rate.",
            "",
            "| configuration | ex/s | window range | step ms | windows × steps | warm-up steps "
            "| first step s | build s | params | peak RSS MiB | % of MLP limit | notes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in results:
            name = f"{IMPL_TITLES[r['implementation']]} @ {r['hash_buckets']:,}"
            if r.get("status") != "ok":
                lines.append(f"| {name} | {_rate_cell(r)} |" + " |" * 10)
                continue
            fraction = r.get("fraction_of_mlp_limit")  # absent without the roofline section
            share = "n/a" if fraction is None else f"{100 * fraction:.1f}%"
            lines.append(
                f"| {name} | {_fmt(r['examples_per_s'])} "
                f"| {_fmt(min(r['window_examples_per_s']))}–"
                f"{_fmt(max(r['window_examples_per_s']))} "
                f"| {_fmt(r['step_ms'], 1)} "
                f"| {r['windows']} × {r['window_steps']} | {r['warmup_steps']} "
                f"| {_fmt(r['first_step_s'], 1)} | {_fmt(r['build_s'], 1)} | {r['params']:,} "
                f"| {_fmt(r.get('peak_rss_mib'))} | {share} "
                f"| {'; '.join(r.get('notes', [])) or ''} |"
            )
        lines += [
            "",
            f"Feeding: {e2e['feeding']}.",
            "",
            f"Timing: {e2e['windows']}.",
            "",
            f"(c) {report['tf_keras_build']}",
            "",
        ]

    if "input_pipeline" in report:
        pipe = report["input_pipeline"]
        lines += [
            "## 3. Input pipeline alone (read + parse + preprocess), examples/s",
            "",
            "| source | examples/s | "
            + " | ".join(f"÷ wdl_tf training @ {r['hash_buckets']:,}" for r in pipe["ratios"])
            + " | target |",
            "|---|---:|" + "---:|" * (len(pipe["ratios"]) + 1),
        ]
        for source in ("csv", "tfrecord"):
            ratios = [f"{r[f'{source}_ratio']:.1f}×" for r in pipe["ratios"]]
            lines.append(
                f"| {source.upper() if source == 'csv' else 'TFRecord'} "
                f"| {_fmt(pipe[source]['examples_per_s'])} | "
                + " | ".join(ratios)
                + f" | ≥ {PIPELINE_TARGET_RATIO:g}× |"
            )
        lines += [
            "",
            f"Method: {pipe['method']}. CSV → TFRecord conversion (`wdl_tf.tfrecord.convert`): "
            f"{_fmt(pipe['tfrecord_conversion_rows_per_s'])} rows/s.",
            "",
        ]

    if "roofline" in report:
        roof = report["roofline"]
        lines += [
            "## 4. Roofline (MLP-bound limit)",
            "",
            "| dtype | matmul n | reps | median ms | GFLOP/s (median) | GFLOP/s (best) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m in roof["matmul"]:
            lines.append(
                f"| {m.get('dtype', 'float32')} | {m['n']} | {m['reps']} "
                f"| {_fmt(m['ms_median'], 2)} | {_fmt(m['gflops'], 1)} "
                f"| {_fmt(m['gflops_best'], 1)} |"
            )
        lines += [
            "",
            f"- measured float32 matmul: **{roof['gflops']:.1f} GFLOP/s** best, "
            f"{roof['gflops_median']:.1f} median ({roof['method']})",
            f"- MLP input width {roof['input_width']} ({roof['input_width_formula']}); "
            f"{roof['formula']}",
            f"- FLOPs per example: forward {roof['forward_flops_per_example']:,}, training "
            f"{roof['train_flops_per_example']:,}",
            f"- MLP-bound limit = GFLOP/s / training FLOPs per example = "
            f"**{roof['limit_examples_per_s']:,.0f} examples/s** (with the median GFLOP/s: "
            f"{roof['limit_examples_per_s_median']:,.0f})",
        ]
        if "limit_examples_per_s_bf16" in roof:
            lines.append(
                f"- bfloat16 matmul: **{roof['gflops_bf16']:.1f} GFLOP/s** best, "
                f"{roof['gflops_bf16_median']:.1f} median; the bfloat16 towers' limit = "
                f"**{roof['limit_examples_per_s_bf16']:,.0f} examples/s**"
            )
        for a in roof["achieved"]:
            lines.append(
                f"- {IMPL_TITLES[a['implementation']]} @ {a['hash_buckets']:,}: "
                f"{a['examples_per_s']:,.0f} examples/s = {100 * a['fraction']:.1f}% of "
                + (
                    "the bfloat16 limit"
                    if a["implementation"].endswith(BF16_SUFFIX)
                    else "the limit"
                )
            )
    mem = report["memory"]
    lines += [
        "",
        "## 5. Peak memory",
        "",
        "| process | peak RSS MiB (VmHWM) | ru_maxrss MiB |",
        "|---|---:|---:|",
        "| this process (data preparation, sections 1, 3, 4 that ran) "
        f"| {_fmt(mem['parent_vmhwm_mib'])} | {_fmt(mem['parent_peak_rss_mib'])} |",
    ]
    for c in mem["per_config"]:
        gpu = f" (GPU peak {c['gpu_peak_mib']:,.0f} MiB)" if "gpu_peak_mib" in c else ""
        lines.append(
            f"| {c.get('label', '')}{IMPL_TITLES[c['implementation']]} @ {c['hash_buckets']:,}"
            f" | {_fmt(c['peak_rss_mib'])}{gpu} | {_fmt(c['ru_maxrss_mib'])} |"
        )
    lines += ["", f"Method: {mem['method']}.", ""]
    if not report["meta"]["settings"]["isolate"]:
        lines += ["Configurations ran in this process: their RSS is cumulative.", ""]
    if "from_files" in report:
        lines += files_markdown(report["from_files"])
    return "\n".join(lines)


def _epochs_cell(epochs: list[dict]) -> str:
    return " / ".join(_fmt(e["examples_per_s"]) for e in epochs)


def files_markdown(files: dict) -> list[str]:
    """Section 6: per configuration and format, each epoch's examples/s uncached and cached,
    the pre-encoded reference, the ratios and the cache's size; then the CSV figure."""
    target = files["target_ratio"]
    lines = [
        "## 6. Training from files (train.py's path), examples/s per epoch",
        "",
        "| configuration | format | uncached epochs | cached epochs (1 writes) "
        "| pre-encoded | cached 2+ ÷ pre-encoded | uncached ÷ pre-encoded | cache on disk |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    figure = []
    for r in files["results"]:
        name = f"{IMPL_TITLES[r['implementation']]} @ {r['hash_buckets']:,}"
        if r.get("status") != "ok":
            lines.append(f"| {name} | {_rate_cell(r)} |" + " |" * 6)
            continue
        for f in r["formats"]:
            ratio = f.get("cached_ratio")
            lines.append(
                f"| {name} | {f['format']} | {_epochs_cell(f['uncached'])} "
                f"| {_epochs_cell(f['cached'])} | {_fmt(f['pre_encoded_examples_per_s'])} "
                f"| {'n/a' if ratio is None else f'{ratio:.2f}×'} "
                f"| {_fmt(f.get('uncached_ratio'), 2)}× "
                f"| {f['cache_bytes'] / 2**20:,.1f} MiB |"
            )
            if f["format"] == "csv" and ratio is not None:
                met = "met" if ratio >= target else "NOT met"
                figure.append(
                    f"- {name}: cached epochs 2+ {_fmt(f['cached_later_examples_per_s'])} ÷ "
                    f"pre-encoded {_fmt(f['pre_encoded_examples_per_s'])} = **{ratio:.2f}×** "
                    f"(target ≥ {target:.0%}: {met}); first epoch (writing) "
                    f"{_fmt(f['cached'][0]['examples_per_s'])}; cache "
                    f"{f['cache_bytes']:,} bytes"
                )
    lines += ["", f"From CSV with the encoded cache (target ≥ {target:.0%} of pre-encoded):", ""]
    lines += figure or ["- no configuration ran"]
    lines += ["", f"Method: {files['method']}.", ""]
    return lines


def write_report(report: dict, output_json: str | None, output_md: str | None) -> str:
    """Prints the Markdown and writes the report as JSON and as Markdown where asked (their
    directories made); returns the Markdown."""
    markdown = format_markdown(report)
    print(markdown)
    if output_json:
        os.makedirs(os.path.dirname(os.path.abspath(output_json)), exist_ok=True)
        with open(output_json, "w") as f:
            json.dump(report, f, indent=1)
    if output_md:
        os.makedirs(os.path.dirname(os.path.abspath(output_md)), exist_ok=True)
        with open(output_md, "w") as f:
            f.write(markdown + "\n")
    return markdown
