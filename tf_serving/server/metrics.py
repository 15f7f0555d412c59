"""Prometheus metrics of the local server, served at the monitoring path of the REST port.

One private registry per server (several servers can share a process):

* ``tf_serving_requests_total{model_name, api, signature_name, entrypoint, status}``
* ``tf_serving_request_latency_seconds{model_name, api, signature_name, entrypoint, status}``
  (histogram, from the request's arrival to its answer)
* ``tf_serving_model_versions_loaded{model_name}``: how many versions are AVAILABLE
* ``tf_serving_model_version_available{model_name, version}``: 1 per AVAILABLE version
* ``tf_serving_rest_requests_in_flight`` and ``tf_serving_rest_requests_rejected_total``
  (answered 503 because ``max_in_flight_requests`` were in flight)

``entrypoint`` is ``REST`` or ``GRPC`` and ``status`` the canonical code name (``OK``,
``INVALID_ARGUMENT``, ...), as in TF Serving's ``:tensorflow:serving:request_count``. Label
values a client controls are bounded: a model or signature the server does not serve is
recorded as ``""``.
"""

from __future__ import annotations

from collections.abc import Callable

APIS = frozenset(
    {"predict", "classify", "regress", "multi_inference", "metadata", "status", "reload_config"}
)
LABELS = ("model_name", "api", "signature_name", "entrypoint", "status")
# 100 µs to ~100 s.
LATENCY_BUCKETS = tuple(1e-4 * 2**i for i in range(21))


class Metrics:
    """Request counters and latencies, and version gauges read at scrape time.

    Args:
      loaded_versions: model name → its AVAILABLE versions.
      known: (model, signature) → the label values to record (unknown ones → "").
      rest_state: () → (requests in flight, requests rejected) of the REST front.
    """

    def __init__(
        self,
        loaded_versions: Callable[[], dict[str, list[int]]],
        known: Callable[[str, str], tuple[str, str]],
        rest_state: Callable[[], tuple[int, int]] | None = None,
    ):
        import prometheus_client
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self._prometheus = prometheus_client
        self._known = known
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.requests = prometheus_client.Counter(
            "tf_serving_requests",
            "Requests answered, by model, API, signature, entry point and status.",
            LABELS,
            registry=self.registry,
        )
        self.latency = prometheus_client.Histogram(
            "tf_serving_request_latency_seconds",
            "Wall time from a request's arrival to its answer.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        class _State:
            def collect(self):
                loaded = GaugeMetricFamily(
                    "tf_serving_model_versions_loaded",
                    "Versions of the model that are AVAILABLE.",
                    labels=["model_name"],
                )
                available = GaugeMetricFamily(
                    "tf_serving_model_version_available",
                    "1 for each AVAILABLE version.",
                    labels=["model_name", "version"],
                )
                for name, versions in sorted(loaded_versions().items()):
                    loaded.add_metric([name], len(versions))
                    for v in versions:
                        available.add_metric([name, str(v)], 1)
                yield loaded
                yield available
                if rest_state is not None:
                    in_flight, rejected = rest_state()
                    gauge = GaugeMetricFamily(
                        "tf_serving_rest_requests_in_flight",
                        "REST requests being handled now.",
                    )
                    gauge.add_metric([], in_flight)
                    yield gauge
                    counter = CounterMetricFamily(
                        "tf_serving_rest_requests_rejected",
                        "REST requests answered 503 because max_in_flight_requests were in flight.",
                    )
                    counter.add_metric([], rejected)
                    yield counter

            def describe(self):
                return []

        self.registry.register(_State())

    def observe(
        self, model: str, api: str, signature: str, entrypoint: str, status: str, seconds: float
    ) -> None:
        model, signature = self._known(model, signature)
        labels = (model, api if api in APIS else "", signature, entrypoint, status)
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def page(self) -> str:
        """The Prometheus text exposition of every metric."""
        return self._prometheus.generate_latest(self.registry).decode("utf-8")
