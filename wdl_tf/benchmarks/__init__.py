"""The benchmarks behind BENCHMARKS.md, as a library the `scripts/benchmark_*.py` mains call.

Training speed (`train_bench`, its data cache `train_data`, the reference models in
`baselines`, the per-configuration training in `train_e2e`, the Markdown in `train_report`),
serving latency (`serving_bench`, `serving_report`), model quality across datasets
(`quality`) and importance against a planted model (`insights`). `env` and `stats` are shared.

Nothing here is imported by the rest of `wdl_tf`, and this file imports nothing, so
``python -m wdl_tf.benchmarks.train_e2e`` (the training worker) runs a module not yet loaded.
"""
