"""The serving benchmark's Markdown: the report dict of `serving_bench.run_benchmark` as the
tables BENCHMARKS.md quotes, kept apart from the measuring so either changes alone."""

from __future__ import annotations

import json
from typing import Any

from wdl_tf.benchmarks.serving_bench import RATIO_TARGET
from wdl_tf.benchmarks.serving_load import LEAK_TOLERANCE_MIB


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    ip = report["in_process"]
    lines = [
        f"Model: census, {_model_text(report)}; `rank` request with "
        f"{report['candidates']} candidates. {env['date']}, {env['cpu_count']} CPU cores, "
        f"load average before {env['load_average']}, after {report['load_average_after']}; "
        f"TF {env['tensorflow']}.",
        "",
        "| path | clients | p50 ms | p99 ms | req/s | failed |",
        "|---|---:|---:|---:|---:|---:|",
        f"| in-process `signatures['rank']` | 1 | {ip['p50_ms']:.2f} | {ip['p99_ms']:.2f} "
        f"| {1e3 / ip['mean_ms']:.1f} | 0 |",
    ]
    for p in report["points"]:
        lines.append(
            f"| {p['protocol']} | {p['clients']} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} "
            f"| {p['requests_per_s']:.1f} | {p['failed']} |"
        )
    s = report["soak"]
    lines.append(
        f"| gRPC soak {s['seconds']:.0f} s (with reload) | {s['clients']} | {s['p50_ms']:.2f} "
        f"| {s['p99_ms']:.2f} | {s['requests_per_s']:.1f} | {s['failed']} |"
    )
    t = report["targets"]
    r, rl = s["rss"], s["reload"]
    sb = report["side_by_side"]
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines += [
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| gRPC 1-client p50 / in-process p50 (side by side: {sb['grpc']['p50_ms']:.2f} / "
        f"{sb['in_process']['p50_ms']:.2f} ms, {sb['rounds']} alternating blocks of "
        f"{sb['calls_per_block']}, the first {sb['settle']} of each untimed; with them "
        f"{sb['ratio_p50_all_calls']:.2f}×) | {t['grpc_vs_in_process_p50']:.2f}× "
        f"| ≤ {RATIO_TARGET}× | {met(t['ratio_met'])} |",
        f"| failed requests (all points + soak) | {t['failed_total']} | 0 "
        f"| {met(t['failed_total'] == 0)} |",
        f"| soak server RSS from {r['baseline_at_s']:.0f} s to the reload | "
        f"{r['growth_before_reload_mib']:+.1f} MiB ({r['mib_at_baseline']:.0f} MiB at "
        f"{r['baseline_at_s']:.0f} s; {r['mib_at_end']:.0f} MiB at the end, version 2 loaded) "
        f"| no growth (≤ {LEAK_TOLERANCE_MIB:g} MiB) | {met(not r['grew_under_load'])} |",
        f"| hot reload to version 2 at {rl.get('start_s', 0):.0f} s | AVAILABLE after "
        f"{rl.get('seconds_to_available', float('nan')):.1f} s; "
        f"{rl.get('failed_during', 'n/a')} of {rl.get('requests_during', 'n/a')} requests "
        f"failed | 0 failed | {met(t['reload_ok'])} |",
    ]
    k = report["keepalive"]
    lines.append(
        f"| {k['clients']} keep-alive REST clients, {k['seconds']:.0f} s | {k['requests']} "
        f"requests, {k['failed']} failed, p50 {k['p50_ms']:.0f} ms, p99 {k['p99_ms']:.0f} ms "
        f"| 0 failed | {met(k['failed'] == 0 and k['requests'] > 0)} |"
    )
    lim = report["limits"]
    cases = ", ".join(
        f"{name} → {c.get('status')} in {c.get('seconds', float('nan')) * 1e3:.0f} ms"
        for name, c in lim.items()
        if isinstance(c, dict)
    )
    lines.append(
        f"| body limit {lim['max_body_bytes'] >> 20} MiB | {cases} | refused at once "
        f"| {met(t['limits_ok'])} |"
    )
    m = report["limit_request_memory"]
    lines.append(
        f"| {m['body_mib']:.1f} MiB request ({m['rows']} rows, HTTP {m['status']}, "
        f"{m['seconds']:.1f} s) | server RSS {m['rss_mib_before']:.0f} → peak "
        f"{m['rss_mib_peak']:.0f} → {m['rss_mib_after_2s']:.0f} MiB 2 s after | reported | |"
    )
    prof = report["grpc_profile"]
    lines += [
        "",
        f"gRPC 1-client rank p50 {prof['grpc_p50_ms']:.2f} ms, by step (median ms, "
        f"{prof['iters']} iterations each, the steps and the real call in interleaved blocks "
        f"of {prof['calls_per_block']}, the first {prof['settle']} of each untimed; request "
        f"{prof['request_bytes']} B, response "
        f"{prof['response_bytes']} B):",
        "",
        "| step | ms |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {ms:.3f} |" for name, ms in prof["steps_ms"].items()]
    lines.append(
        f"| transport + dispatch (p50 − the steps) | {prof['transport_and_dispatch_ms']:.3f} |"
    )
    return "\n".join(lines) + "\n"


def _model_text(report: dict[str, Any]) -> str:
    if report["hidden_units"] is None:
        return f"the given SavedModel {report['saved_model']}"
    return f"hidden units {tuple(report['hidden_units'])}"


def write_report(report: dict[str, Any], output_json: str | None, output_md: str | None) -> str:
    """Prints the Markdown and writes the report as JSON and as Markdown where asked; returns
    the Markdown."""
    markdown = to_markdown(report)
    print(markdown)
    if output_json:
        with open(output_json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    if output_md:
        with open(output_md, "w") as f:
            f.write(markdown)
    return markdown
