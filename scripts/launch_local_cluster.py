"""Runs a multi-worker training on this machine: N worker processes on loopback ports.

    python scripts/launch_local_cluster.py --workers=2 -- \
        --dataset=census_synthetic --model_dir=/tmp/m --export_base=/tmp/e --epochs=2

Everything after ``--`` goes to every worker's ``scripts/train.py`` unchanged. Each worker
gets a TF_CONFIG naming all workers (``127.0.0.1:<free port>``) and its own index; worker 0
is the chief. The workers' output is streamed line by line with a ``[worker i]`` prefix. When
a worker fails, or on Ctrl-C / SIGTERM, all the others are stopped (SIGTERM, then SIGKILL
after ``--grace_s``), and the launcher exits non-zero. Rerunning the same command resumes
from the chief's last checkpoint.

On real hosts, run ``scripts/train.py`` once per host with that host's TF_CONFIG instead
(BUILD.md, "Multi-worker training").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf.ports import free_ports  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")


def tf_configs(ports: list[int]) -> list[str]:
    """One TF_CONFIG per worker: the same cluster, each its own task index."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(len(ports))
    ]


def _stream(i: int, proc: subprocess.Popen, lock: threading.Lock) -> None:
    for line in iter(proc.stdout.readline, ""):
        with lock:
            sys.stdout.write(
                f"[worker {i}] {line}" if line.endswith("\n") else f"[worker {i}] {line}\n"
            )
            sys.stdout.flush()


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(num_workers: int, train_flags: list[str], grace_s: float = 10.0) -> int:
    """Starts the workers and waits; the exit status: 0, or the first failure's (>= 1)."""
    if num_workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {num_workers}")
    configs = tf_configs(free_ports(num_workers))
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    threads = []
    for i, tf_config in enumerate(configs):
        env = dict(os.environ, TF_CONFIG=tf_config, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, TRAIN, *train_flags],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops the workers
        )
        procs.append(proc)
        with lock:
            print(f"[launcher] worker {i} pid={proc.pid} TF_CONFIG={tf_config}", flush=True)
        t = threading.Thread(target=_stream, args=(i, proc, lock), daemon=True)
        t.start()
        threads.append(t)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    status = 0
    try:
        running = set(range(num_workers))
        while running:
            for i in sorted(running):
                rc = procs[i].poll()
                if rc is None:
                    continue
                running.discard(i)
                with lock:
                    print(f"[launcher] worker {i} exited with status {rc}", flush=True)
                if rc != 0:
                    status = rc if rc > 0 else 128 - rc  # killed by signal -rc
                    with lock:
                        print("[launcher] a worker failed: stopping the others", flush=True)
                    _stop(procs, grace_s)
                    running.clear()
                    break
            time.sleep(0.2)
    except KeyboardInterrupt:
        with lock:
            print("[launcher] interrupted: stopping all workers", flush=True)
        _stop(procs, grace_s)
        status = 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        for t in threads:
            t.join(timeout=5)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        split = argv.index("--")
        own, train_flags = argv[:split], argv[split + 1 :]
    else:
        own, train_flags = argv, []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, required=True, help="worker processes to start")
    parser.add_argument(
        "--grace_s", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL"
    )
    args = parser.parse_args(own)
    if args.workers < 1:
        parser.error(f"--workers: must be >= 1, got {args.workers}")
    return launch(args.workers, train_flags, args.grace_s)


if __name__ == "__main__":
    sys.exit(main())
