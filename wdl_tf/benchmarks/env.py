"""What machine a benchmark ran on: shared by every benchmark so their reports agree.

A timing means little without the CPU, the load around it and the memory it took; these
helpers read them the same way for the training and the serving benchmark.
"""

from __future__ import annotations

import os
import platform
import resource
import shlex
import sys
from typing import Any


def configure_devices() -> None:
    """GPU memory on demand, so a benchmark process and its children can share a GPU."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialized
            pass


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (2 decimals): how busy the machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def command_line(program: str) -> str:
    """This process's command as a shell would take it, ``program`` standing for argv[0]'s
    interpreter, so a report says how to rerun it."""
    return shlex.join([program, *sys.argv])


def peak_rss() -> dict[str, float | None]:
    """This process's peak RSS in MiB: ``ru_maxrss`` and the current image's ``VmHWM``.

    Linux keeps ``ru_maxrss`` across fork and exec, so in a child of a large process it is at
    least the parent's RSS at the fork; ``VmHWM`` (/proc/self/status) restarts at exec.
    """
    out: dict[str, float | None] = {
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vmhwm_mib": None,
    }
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["vmhwm_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def children_peak_rss_mib() -> float:
    """The largest peak RSS of any waited-for child process, in MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def environment(device_name: str | None = None) -> dict[str, Any]:
    """CPU, memory, devices and library versions; ``device_name`` labels the machine (else
    the first GPU's name, else the CPU model and core count)."""
    import keras
    import tensorflow as tf

    devices = tf.config.list_physical_devices()
    gpus = [d for d in devices if d.device_type == "GPU"]
    gpu_names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        gpu_names.append(details.get("device_name", gpu.name))
    try:
        import tf_keras

        tf_keras_version = tf_keras.__version__
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        tf_keras_version = f"n/a ({type(e).__name__}: {e})"
    cores = os.cpu_count()
    label = device_name or (gpu_names[0] if gpu_names else f"{cpu_model()}, {cores} cores")
    return {
        "device_name": label,
        "cpu_model": cpu_model(),
        "cpu_count": cores,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_start": load_average(),
        "physical_devices": [f"{d.name} ({d.device_type})" for d in devices],
        "gpus": gpu_names,
        "tensor_float_32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_keras": tf_keras_version,
        "platform": platform.platform(),
    }
