"""``python -m tf_serving.server``: the local server with tensorflow_model_server's flag names."""

from __future__ import annotations

import argparse
import logging
import sys

from tf_serving import config as cfg
from tf_serving.server import http_front
from tf_serving.server.grpc_front import DEFAULT_GRPC_WORKERS
from tf_serving.server.model_server import DEFAULT_BATCHING_SIGNATURES, serve
from tf_serving.server.runner import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_ROWS_PER_CALL


def _bool(text: str) -> bool:
    value = text.lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("1", "true", "yes")


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="TF-Serving-compatible model server for development and CI "
        "(production: tensorflow_model_server)."
    )
    add = parser.add_argument
    add("--model_name", default="default")
    add("--model_base_path", default="")
    add("--model_config_file", default="")
    add(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="re-read --model_config_file this often (0 = once)",
    )
    add("--port", type=int, default=8500, help="gRPC port")
    add("--rest_api_port", type=int, default=8501, help="0 = no REST")
    add("--host", default="127.0.0.1", help="address to bind")
    add("--file_system_poll_wait_seconds", type=float, default=1.0)
    add("--enable_batching", action="store_true")
    add("--max_batch_size", type=int, default=128)
    add("--batch_timeout_micros", type=int, default=1000)
    add("--batching_signatures", default=",".join(DEFAULT_BATCHING_SIGNATURES))
    add(
        "--max_rows_per_call",
        type=int,
        default=DEFAULT_MAX_ROWS_PER_CALL,
        help="larger row-wise requests run in slices of this many rows",
    )
    add(
        "--max_decoded_bytes",
        type=int,
        default=DEFAULT_MAX_DECODED_BYTES,
        help="a Predict request whose tensors would take more bytes decoded is refused",
    )
    add("--grpc_workers", type=int, default=DEFAULT_GRPC_WORKERS)
    add("--max_body_bytes", type=int, default=http_front.DEFAULT_MAX_BODY_BYTES)
    add("--max_in_flight_requests", type=int, default=http_front.DEFAULT_MAX_IN_FLIGHT)
    add("--rest_backlog", type=int, default=http_front.DEFAULT_BACKLOG)
    add("--rest_keepalive_timeout_s", type=float, default=http_front.DEFAULT_KEEPALIVE_S)
    add("--rest_api_enable_cors_support", type=_bool, default=False)
    add(
        "--monitoring_config_file",
        default="",
        help="a monitoring.config; prometheus_config.enable serves the metrics",
    )
    add("--allow_version_labels_for_unavailable_models", type=_bool, default=False)
    add("--enable_model_warmup", type=_bool, default=True)
    add(
        "--request_log_dir",
        default="",
        help="log a sample of the requests as PredictionLog TFRecords here (off by default)",
    )
    add(
        "--request_log_sampling_rate",
        type=float,
        default=None,
        help="share of requests logged, in (0, 1] (default 0.01 with --request_log_dir)",
    )
    add("--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        monitoring, monitoring_path = False, cfg.DEFAULT_PROMETHEUS_PATH
        if args.monitoring_config_file:
            with open(args.monitoring_config_file) as f:
                monitoring, monitoring_path = cfg.parse_monitoring_config(f.read())
        serve(
            model_name=args.model_name,
            model_base_path=args.model_base_path or None,
            model_config_file=args.model_config_file or None,
            model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
            port=args.port,
            rest_api_port=args.rest_api_port,
            host=args.host,
            poll_seconds=args.file_system_poll_wait_seconds,
            batching=args.enable_batching,
            max_batch_size=args.max_batch_size,
            batch_timeout_micros=args.batch_timeout_micros,
            batching_signatures=[s for s in args.batching_signatures.split(",") if s],
            max_rows_per_call=args.max_rows_per_call,
            max_decoded_bytes=args.max_decoded_bytes,
            grpc_workers=args.grpc_workers,
            max_body_bytes=args.max_body_bytes,
            max_in_flight_requests=args.max_in_flight_requests,
            rest_backlog=args.rest_backlog,
            rest_keepalive_timeout_s=args.rest_keepalive_timeout_s,
            enable_cors=args.rest_api_enable_cors_support,
            monitoring=monitoring,
            monitoring_path=monitoring_path,
            allow_version_labels_for_unavailable_models=(
                args.allow_version_labels_for_unavailable_models
            ),
            enable_model_warmup=args.enable_model_warmup,
            request_log_dir=args.request_log_dir,
            request_log_sampling_rate=args.request_log_sampling_rate,
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
