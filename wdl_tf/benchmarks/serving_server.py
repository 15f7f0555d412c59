"""The served model for the serving benchmark: ``python -m tf_serving.server`` in a subprocess.

A subprocess, so the load-generating client threads do not share the server's GIL and the
server's RSS is its own. It is started from the directory that holds this `tf_serving`
package, so the server runs the same code as the benchmark.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import tf_serving
from wdl_tf.ports import free_port

MODEL_NAME = "census"
HOST = "127.0.0.1"
PACKAGES_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tf_serving.__file__)))


class ServerProcess:
    """``python -m tf_serving.server`` on free loopback ports."""

    def __init__(self, base_path: str, log_path: str, max_body_bytes: int = 64 << 20):
        self.grpc_port, self.rest_port = free_port(HOST), free_port(HOST)
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tf_serving.server",
                f"--model_name={MODEL_NAME}",
                f"--model_base_path={base_path}",
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                f"--host={HOST}",
                "--file_system_poll_wait_seconds=0.5",
                f"--max_body_bytes={max_body_bytes}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=PACKAGES_ROOT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    def version_states(self) -> dict[int, str]:
        from tf_serving.client import RestClient

        try:
            status = RestClient(self.rest_url, MODEL_NAME, timeout=5, retries=0).status()
        except Exception:  # noqa: BLE001 - not up yet
            return {}
        return {int(v["version"]): v["state"] for v in status.get("model_version_status", [])}

    def wait_for_version(self, version: int, timeout: float) -> float:
        """Seconds until ``version`` is AVAILABLE; raises after ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            if self.version_states().get(version) == "AVAILABLE":
                return time.monotonic() - start
            time.sleep(0.1)
        raise TimeoutError(f"version {version} not AVAILABLE within {timeout} s")

    def rss_bytes(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()


def make_client(protocol: str, server: ServerProcess):
    from tf_serving.client import GrpcClient, RestClient

    if protocol == "grpc":
        return GrpcClient(server.grpc_target, MODEL_NAME, timeout=30, retries=0)
    return RestClient(server.rest_url, MODEL_NAME, timeout=30, retries=0)


def publish_version(base: str, src: str, version: int) -> None:
    """Copies ``src`` to ``base/temp-x``, then renames it to ``base/<version>`` (atomic)."""
    tmp = os.path.join(base, f"temp-{version}-{os.getpid()}")
    shutil.copytree(src, tmp)
    os.rename(tmp, os.path.join(base, str(version)))
