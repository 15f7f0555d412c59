"""A TF-Serving-compatible model server in Python, for development, CI and small deployments.

**Production uses TensorFlow Serving's own ``tensorflow_model_server``.** This package lets
the project's clients, scripts and tests run the same contract where that binary is not
available: TF Serving's gRPC API (PredictionService, ModelService) and REST API
(``/v1/models/...``) with its JSON formats, error messages and status codes
(tf_serving/README.md lists the rules and the TF Serving source each comes from).

Modules: `core` (models, versions, load/unload, warmup, labels, inference; no front),
`servables` (version directories and loaded SavedModels), `inference` (request checks and
signature contracts), `batching`, `status` (codes and their HTTP mapping), `json_codec`
(REST JSON ↔ tensors), `rest_api` (REST routing and bodies), `http_front` (the aiohttp
server), `grpc_front`, `metrics` (Prometheus), `model_server` (`ModelServer`, `serve`)
and `cli` (``python -m tf_serving.server``).

Use::

    server = ModelServer({"census": "/models/census"}, grpc_port=8500, rest_port=8501)
    server.start()
    server.wait_until_ready(60)
    ...
    server.stop()
"""

from tf_serving.server.core import ServingCore, models_from_config
from tf_serving.server.json_codec import array_to_json, json_to_array, json_to_example
from tf_serving.server.model_server import ModelServer, serve
from tf_serving.server.servables import scan_versions
from tf_serving.server.status import ServingError

__all__ = [
    "ModelServer",
    "ServingCore",
    "ServingError",
    "array_to_json",
    "json_to_array",
    "json_to_example",
    "models_from_config",
    "scan_versions",
    "serve",
]
