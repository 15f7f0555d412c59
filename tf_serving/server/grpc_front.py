"""The gRPC front: TF Serving's PredictionService and ModelService over `ServingCore`."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tf_serving.server.core import ServingCore
from tf_serving.server.servables import DEFAULT_SIGNATURE
from tf_serving.server.status import INTERNAL_MESSAGE, ServingError

log = logging.getLogger("tf_serving")

_GRPC_MESSAGE_LIMIT = 1024  # TF Serving truncates long error messages (grpc_status_util.cc)
_MAX_MESSAGE_BYTES = 2**31 - 1
DEFAULT_GRPC_WORKERS = 16

# observe(model_name, api, signature_name, code name, seconds)
Observer = Callable[[str, str, str, str, float], None]


def _grpc_message(message: str) -> str:
    if len(message) > _GRPC_MESSAGE_LIMIT:
        return message[:_GRPC_MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def _spec_labels(request, api: str) -> tuple[str, str]:
    """(model name, signature) of a request, for the metrics."""
    if api == "multi_inference":
        spec = request.tasks[0].model_spec if request.tasks else None
    else:
        spec = getattr(request, "model_spec", None)
    if spec is None:
        return "", ""
    signature = spec.signature_name
    if api in ("predict", "classify", "regress", "multi_inference"):
        signature = signature or DEFAULT_SIGNATURE
    return spec.name, signature


class _Calls:
    def __init__(self, core: ServingCore, observe: Observer | None):
        self.core = core
        self.observe = observe

    def __call__(self, api: str, fn: Callable, request, context: grpc.ServicerContext):
        start = time.perf_counter()
        code = "OK"
        try:
            return fn(request)
        except ServingError as e:
            code = e.code.name
            context.abort(e.code, _grpc_message(e.message))
        except Exception:
            code = "INTERNAL"
            log.exception("internal error in gRPC %s", api)
            context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        finally:
            if self.observe is not None:
                model, signature = _spec_labels(request, api)
                try:
                    self.observe(model, api, signature, code, time.perf_counter() - start)
                except Exception:  # noqa: BLE001 - metrics never fail a request
                    log.exception("recording metrics failed")


class _PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, calls: _Calls):
        self._calls = calls
        self._core = calls.core

    def Predict(self, request, context):
        return self._calls("predict", self._core.predict, request, context)

    def Classify(self, request, context):
        return self._calls("classify", self._core.classify, request, context)

    def Regress(self, request, context):
        return self._calls("regress", self._core.regress, request, context)

    def MultiInference(self, request, context):
        return self._calls("multi_inference", self._core.multi_inference, request, context)

    def GetModelMetadata(self, request, context):
        return self._calls("metadata", self._core.get_model_metadata, request, context)


class _ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, calls: _Calls):
        self._calls = calls
        self._core = calls.core

    def GetModelStatus(self, request, context):
        return self._calls("status", self._core.get_model_status, request, context)

    def HandleReloadConfigRequest(self, request, context):
        return self._calls("reload_config", self._core.handle_reload_config, request, context)


def start_grpc_server(
    core: ServingCore,
    host: str,
    port: int,
    workers: int = DEFAULT_GRPC_WORKERS,
    observe: Observer | None = None,
) -> tuple[grpc.Server, int]:
    """Starts the gRPC server; returns it and its port. Raises OSError if it cannot bind."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"grpc_workers must be an integer >= 1, got {workers!r}")
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    calls = _Calls(core, observe)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionServicer(calls), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelServicer(calls), server)
    bracketed = f"[{host}]" if ":" in host else host
    address = f"{bracketed}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"cannot bind gRPC to {address}: {e}") from e
    if not bound:
        raise OSError(f"cannot bind gRPC to {address}")
    server.start()
    return server, bound
