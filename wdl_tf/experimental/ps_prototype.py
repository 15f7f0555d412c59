"""Prototype: tables partitioned over parameter servers, trained by a coordinator.

The path for wide/deep tables larger than one machine's memory (BUILD.md, "Tables bigger
than one machine"): `tf.distribute.experimental.ParameterServerStrategy` keeps each table
as a `ShardedVariable` split over the parameter servers (``MinSizePartitioner``), and a
coordinator dispatches training steps to workers with `ClusterCoordinator`. Keras 3 ``fit``
does not support this strategy, and Keras 3 variables are not partitioned, so the model here
is raw `tf.Variable`s with a custom training step:

    logit = b + Σ_f w[id_f]  (wide: one weight per id)  +  v · mean_f e[id_f]  (deep)

trained with row-wise AdaGrad: a sparse gradient updates only the rows of the batch, with
scatter ops that run on the parameter server holding each shard (the project's FTRL would
have to be applied the same way, shard by shard: not done here).

    python -m wdl_tf.experimental.ps_prototype --ps=2 --workers=2 --steps=20

starts 2 parameter-server and 2 worker processes (`tf.distribute.Server` on loopback
ports), trains ``steps`` steps from the coordinator (this process), trains the same steps
in-process without any strategy, and prints the largest difference of every variable (it
exits 1 above ``--atol``). Steps are scheduled one at a time (``coordinator.join()`` after
each), so the asynchronous runtime applies them in order and the result is deterministic;
each step's batch is generated from the step number with stateless random ops, so both runs
see the same data whichever worker runs a step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from wdl_tf.ports import free_ports

ROWS, DIM, FEATURES, BATCH = 200, 8, 3, 64
LR, INIT_ACC = 0.1, 0.1


def _serve(cluster: dict, job: str, index: int) -> None:  # pragma: no cover (subprocess)
    """Runs one tf.distribute.Server (a parameter server or a worker) until killed."""
    os.environ.pop("TF_CONFIG", None)
    import tensorflow as tf

    if job == "ps":  # a parameter server only stores variables: no need for threads
        tf.config.threading.set_inter_op_parallelism_threads(1)
    server = tf.distribute.Server(
        tf.train.ClusterSpec(cluster), job_name=job, task_index=index, protocol="grpc"
    )
    server.join()


def _initial_values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "wide": np.zeros((ROWS, 1), np.float32),
        "emb": rng.normal(0, DIM**-0.5, (ROWS, DIM)).astype(np.float32),
        "v": rng.normal(0, DIM**-0.5, (DIM, 1)).astype(np.float32),
        "b": np.zeros((1,), np.float32),
    }


def make_model(tf, strategy=None):
    """The variables (tables partitioned when created in a PS strategy's scope) and the
    training step; the step function is the same with and without the strategy."""
    init = _initial_values()

    def create():
        params = {k: tf.Variable(v, name=k) for k, v in init.items()}
        accums = {
            k: tf.Variable(np.full_like(v, INIT_ACC), name=f"{k}_acc") for k, v in init.items()
        }
        return params, accums

    if strategy is not None:
        with strategy.scope():
            params, accums = create()
    else:
        params, accums = create()

    def batch(step):
        seed = tf.stack([tf.cast(step, tf.int64), tf.constant(7, tf.int64)])
        ids = tf.random.stateless_uniform([BATCH, FEATURES], seed, 0, ROWS, dtype=tf.int64)
        # A learnable label: ids below ROWS / 3 in the first feature lean positive.
        noise = tf.random.stateless_uniform([BATCH], seed + 1)
        label = tf.cast(
            (tf.cast(ids[:, 0] < ROWS // 3, tf.float32) * 0.6 + noise) > 0.7, tf.float32
        )
        return ids, label[:, None]

    def apply_rows(var, acc, grad):
        """Row-wise AdaGrad on the rows a sparse gradient touches (duplicates summed)."""
        if isinstance(grad, tf.IndexedSlices):
            unique, pos = tf.unique(grad.indices)
            g = tf.math.unsorted_segment_sum(grad.values, pos, tf.shape(unique)[0])
            acc.scatter_add(tf.IndexedSlices(g * g, unique))
            var.scatter_sub(tf.IndexedSlices(LR * g / tf.sqrt(tf.gather(acc, unique)), unique))
        else:
            acc.assign_add(grad * grad)
            var.assign_sub(LR * grad / tf.sqrt(acc))

    def components(v):
        return list(getattr(v, "variables", [v]))  # a ShardedVariable's shards, or itself

    def train_step(step):
        ids, label = batch(step)
        with tf.GradientTape() as tape:
            wide = tf.reduce_sum(tf.nn.embedding_lookup(params["wide"], ids), axis=1)
            deep = tf.reduce_mean(tf.nn.embedding_lookup(params["emb"], ids), axis=1)
            logit = wide + tf.matmul(deep, params["v"]) + params["b"]
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=logit)
            )
        names = list(params)
        flat = [c for k in names for c in components(params[k])]
        grads = tape.gradient(loss, flat)
        accs = [c for k in names for c in components(accums[k])]
        for var, acc, grad in zip(flat, accs, grads):
            apply_rows(var, acc, grad)
        return loss

    return params, accums, train_step


def values(params) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return {k: tf.convert_to_tensor(v).numpy() for k, v in params.items()}


def run(num_ps: int = 2, num_workers: int = 2, steps: int = 20) -> tuple[dict, list]:
    """Starts the servers, trains with and without the strategy: (report, server processes).

    The caller stops the servers (after its last use of TensorFlow: the coordinator's
    eager context talks to them until the process ends)."""
    t0 = time.time()
    ports = free_ports(1 + num_ps + num_workers)
    cluster = {
        "chief": [f"127.0.0.1:{ports[0]}"],
        "ps": [f"127.0.0.1:{p}" for p in ports[1 : 1 + num_ps]],
        "worker": [f"127.0.0.1:{p}" for p in ports[1 + num_ps :]],
    }
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wdl_tf.experimental.ps_prototype",
                "--serve",
                job,
                str(i),
                json.dumps(cluster),
            ],
            env=env,
        )
        for job in ("ps", "worker")
        for i in range(len(cluster[job]))
    ]
    try:
        import tensorflow as tf

        timings = {"servers_started": time.time() - t0}
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type="chief", task_id=0, rpc_layer="grpc"
        )
        strategy = tf.distribute.experimental.ParameterServerStrategy(
            resolver,
            # Tables of 256 bytes or more are split over (up to) all parameter servers;
            # FixedShardsPartitioner(num_ps) would split every variable.
            variable_partitioner=tf.distribute.experimental.partitioners.MinSizePartitioner(
                min_shard_bytes=256, max_shards=num_ps
            ),
        )
        coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
        timings["cluster_connected"] = time.time() - t0
        params, _, train_step = make_model(tf, strategy)
        shards = {
            k: [(s.device, tuple(s.shape)) for s in getattr(v, "variables", [v])]
            for k, v in params.items()
        }

        @tf.function
        def step_fn(step):
            return strategy.run(train_step, args=(step,))

        start = time.time()
        losses = []
        for step in range(steps):
            remote = coordinator.schedule(step_fn, args=(tf.constant(step, tf.int64),))
            coordinator.join()  # one step at a time: the updates land in order
            losses.append(float(remote.fetch()))
        ps_seconds = time.time() - start
        got = values(params)

        # The same steps in this process, no strategy, unpartitioned variables.
        ref_params, _, ref_step = make_model(tf)
        ref_fn = tf.function(ref_step)
        ref_losses = [float(ref_fn(tf.constant(s, tf.int64))) for s in range(steps)]
        expected = values(ref_params)
    except BaseException:
        stop(procs)
        raise
    return {
        "ps": num_ps,
        "workers": num_workers,
        "steps": steps,
        "shards": shards,
        "max_abs_diff": {k: float(np.max(np.abs(got[k] - expected[k]))) for k in got},
        "max_loss_diff": float(np.max(np.abs(np.subtract(losses, ref_losses)))),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "train_seconds": round(ps_seconds, 2),
        "startup_seconds": {k: round(v, 1) for k, v in timings.items()},
    }, procs


def stop(procs: list) -> None:
    for p in procs:
        p.kill()
        p.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        _serve(json.loads(argv[3]), argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--atol", type=float, default=1e-5)
    args = parser.parse_args(argv)
    report, procs = run(args.ps, args.workers, args.steps)
    print("RESULT " + json.dumps(report), flush=True)
    worst = max(report["max_abs_diff"].values())
    # Skip TensorFlow's teardown, which would try to reach the stopped servers.
    sys.stderr.flush()
    stop(procs)
    os._exit(0 if worst <= args.atol and report["max_loss_diff"] <= args.atol else 1)


if __name__ == "__main__":
    sys.exit(main())
