"""SavedModel export with the preprocessing inside, TF Serving signatures, verified publish.

The exported model takes raw features, so a client sends what the data holds. The rules the
export follows, each with the TF Serving source it comes from, are in docs/export_contract.md.

Signatures (every input and output has the batch as its 0th dimension, so TF Serving's
``--enable_batching`` can concatenate requests and split the answers):

* ``serving_default`` and ``predict``: raw features by name, each [B, 1] (a multivalent
  feature as one "a|b|c" string) → ``probabilities`` [B, 1] (``predict`` adds ``class_ids``).
* ``classification`` (method ``tensorflow/serving/classify``): ``inputs`` (serialized
  tf.Example [B]) → ``classes`` [B, 2] ("0", "1") and ``scores`` [B, 2] (P(0), P(1)).
* ``regression`` (method ``tensorflow/serving/regress``): ``inputs`` → ``outputs`` [B].
* ``rank`` (paper P10: all candidates of a request in one batch): raw features, each [N, 1]
  → ``scores`` [N]. A feature may have 1 row (the user/context), broadcast to the N
  candidates, but only on a server without batching; the best k are picked by the client
  (`top_k`), since a top-k output cannot be split per request.
* ``explain`` (models with a wide part, `wdl_tf.explain`): ``serving_default``'s inputs →
  ``logit``, ``bias``, ``wide_logit``, ``deep_logit`` and ``contribution_<name>`` per wide
  feature and cross, each [B], with logit = bias + wide_logit + deep_logit exactly.

A numeric feature must be one finite number: NaN or ±Inf, a bytes value or several values
fail the request with InvalidArgument naming the feature. In tf.Examples it may be an int64
list (TF Serving's REST Classify/Regress turn a JSON ``39`` into one), and a context merged
into an example (ExampleListWithContext) reads as protobuf merges the two.

Publishing is the paper's dry run (P9): the version is written to a ``temp-*`` sibling
directory (TF Serving ignores non-integer names), with warmup requests in
``assets.extra/tf_serving_warmup_requests``; a fresh process loads it both the TF2 way and
the way TF Serving does (a graph-mode session, by tensor name), replays every warmup request,
checks that each is batch-safe and compares every signature with the in-memory model;
optionally the eval AUC must not be worse than the published version's; only then is it
renamed to the next integer version, and versions beyond ``keep_versions`` are removed.
``temp-*`` directories left by a killed export (their owning process gone) are removed by
the next publish.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import tensorflow as tf

from wdl_tf import explain, input_pipeline, tfrecord
from wdl_tf import features as fs
from wdl_tf import model as model_lib
from wdl_tf.config import ExportOptions
from wdl_tf.export_versions import published_metrics, remove_stale_temps, temp_dir, versions
from wdl_tf.verify_export import METHOD_NAMES, context_split

log = logging.getLogger("wdl_tf")

CLASS_LABELS = ("0", "1")
SIGNATURES = ("serving_default", "predict", "classification", "regression", "rank")
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving refuses a warmup file with more records
# Rows per warmup request: small enough for any sensible --batching_parameters_file
# max_batch_size (a larger request fails there unless large-batch splitting is on).
WARMUP_ROWS = 8


class ExportError(RuntimeError):
    """The written model does not reproduce the in-memory one, or cannot be published."""


def raw_input_signature(spec: fs.FeatureSpec) -> dict[str, tf.TensorSpec]:
    """The raw inputs of ``serving_default``/``predict``: one [None, 1] tensor per feature."""
    dtypes = {"float": tf.float32, "string": tf.string, "int": tf.int64}
    sig = {}
    for f in spec.features:
        dtype = tf.string if f.kind == fs.MULTIVALENT else dtypes[f.dtype]
        sig[f.name] = tf.TensorSpec([None, 1], dtype, name=f.name)
    return sig


def _broadcast_candidates(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Broadcasts 1-row (context) features to the N rows of the candidate features.

    For servers without batching only: TF Serving's batching refuses a request whose inputs
    differ in their 0th dimension, so there a client repeats the context N times.
    """
    names = list(features)
    rows = tf.stack([tf.shape(features[k])[0] for k in names])
    n = tf.reduce_max(rows)
    fits = (rows == 1) | (rows == n)
    # One Assert for all features (not a guarded assert_equal each: 13 conditionals in
    # every rank call on census), naming the first feature that does not fit.
    first_bad = tf.gather(tf.constant(names), tf.argmin(tf.cast(fits, tf.int32)))
    check = tf.debugging.Assert(
        tf.reduce_all(fits),
        [
            tf.strings.join(
                ["rank: feature ", first_bad, " must have 1 row (context) or N rows (candidates)"]
            )
        ],
    )
    with tf.control_dependencies([check]):
        return {name: tf.broadcast_to(x, tf.stack([n, 1])) for name, x in features.items()}


def _finite(spec: fs.FeatureSpec, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """``raw`` with every numeric feature checked: NaN or ±Inf fails the request.

    One meaning for non-finite numbers everywhere (docs/export_contract.md): refused, with
    InvalidArgument naming the feature (TF Serving's REST answers it with a 400).
    """
    out = dict(raw)
    for f in spec.features:
        if f.kind == fs.NUMERIC:
            out[f.name] = tf.debugging.assert_all_finite(
                raw[f.name],
                f"feature {f.name} must be a finite number (NaN and Infinity are refused)",
            )
    return out


def serving_functions(spec, preprocessor, model) -> dict[str, tuple]:
    """name → (function, input_signature) for every exported signature.

    ``probabilities`` (raw features → model) and ``from_examples`` (tf.Examples → model)
    are functions of their own, with fixed input signatures, that the signatures call:
    each is traced once and saved once, instead of the model being traced again inside
    every signature (the export's slowest part).
    """
    raw_spec = raw_input_signature(spec)

    def model_probabilities(raw):
        return tf.cast(model(preprocessor(_finite(spec, raw)), training=False), tf.float32)

    probabilities = tf.function(model_probabilities, input_signature=[raw_spec], autograph=False)
    # tf.Examples parse a list feature as ragged, not as the joined string of raw_spec.
    lists = any(f.kind == fs.MULTIVALENT for f in spec.features)

    def serve(features):
        return {"probabilities": probabilities(features)}

    def predict(features):
        p = probabilities(features)
        return {"probabilities": p, "class_ids": tf.cast(p > 0.5, tf.int64)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def from_examples(inputs):
        raw = input_pipeline.parse_examples(spec, inputs, with_label=False, lenient_numbers=True)
        if lists:
            return model_probabilities(raw)
        return probabilities({name: raw[name] for name in raw_spec})

    def classify(inputs):
        p = from_examples(inputs)
        batch = tf.shape(p)[0]
        return {
            "classes": tf.tile(tf.constant([CLASS_LABELS]), [batch, 1]),
            "scores": tf.concat([1.0 - p, p], axis=1),
        }

    def regress(inputs):
        return {"outputs": tf.reshape(from_examples(inputs), [-1])}

    def rank(features):
        # Only per-row outputs: a batching server splits every output along dim 0.
        return {"scores": tf.reshape(probabilities(_broadcast_candidates(features)), [-1])}

    raw_sig = [raw_spec]
    example_sig = [tf.TensorSpec([None], tf.string, name="inputs")]
    return {
        "serving_default": (serve, raw_sig),
        "predict": (predict, raw_sig),
        "classification": (classify, example_sig),
        "regression": (regress, example_sig),
        "rank": (rank, raw_sig),
        **explain.signatures(preprocessor, model, raw_sig),
    }


def top_k(scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of the ``k`` best candidates of a ``rank`` answer, best first.

    Ties go to the lower index, as with ``tf.math.top_k``. A client picks the top-k itself:
    the ``rank`` signature returns only per-candidate scores, so that a batching server can
    split its answer per request.
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    scores = np.asarray(scores).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


def set_method_names(path: str, method_names: dict[str, str] = METHOD_NAMES) -> None:
    """Sets the SignatureDef method names in ``<path>/saved_model.pb``, atomically.

    ``tf.saved_model.save`` (hence Keras' ExportArchive) writes ``tensorflow/serving/predict``
    for every signature and has no option for another (tensorflow/tensorflow#38081), while
    TF Serving with ``--enable_signature_method_name_check`` serves Classify only from a
    ``.../classify`` signature and Regress only from ``.../regress``. The method name is a
    plain field of the SavedModel proto that TF2 loading does not read, so it is set here
    before the model is published; ``fingerprint.pb`` (a hash of saved_model.pb) is
    written again.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    with open(pb, "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        for name, method in method_names.items():
            if name not in meta_graph.signature_def:
                raise ExportError(f"signature {name!r} is missing from {pb}")
            meta_graph.signature_def[name].method_name = method
    partial = pb + ".partial"
    with open(partial, "wb") as f:
        f.write(saved_model.SerializeToString(deterministic=True))
    os.replace(partial, pb)
    _write_fingerprint(path)


def _write_fingerprint(path: str) -> None:
    """Rewrites ``fingerprint.pb`` for the changed saved_model.pb (or removes it, which
    loaders accept, where this TensorFlow has no fingerprinting module)."""
    fingerprint = os.path.join(path, "fingerprint.pb")
    try:
        from tensorflow.python.saved_model import fingerprinting_utils
    except ImportError:
        if os.path.exists(fingerprint):
            os.remove(fingerprint)
        return
    fingerprinting_utils.write_fingerprint(path)


def _lookup_tables(layer) -> list:
    """The lookup tables (TrackableResources) inside ``layer``: the vocabulary tables of the
    preprocessing layers, which the serving functions capture and the SavedModel must hold.
    Found by walking the objects the SavedModel would hold (Keras exposes its layers' tracked
    collections only to that walk, not to a checkpoint's)."""
    from tensorflow.saved_model.experimental import TrackableResource

    class SavedModelView(tf.train.TrackableView):
        @classmethod
        def children(cls, obj, save_type="savedmodel", **kwargs):
            return super().children(obj, save_type, **kwargs)

    # descendants() visits each object once (breadth first).
    return [
        obj for obj in SavedModelView(layer).descendants() if isinstance(obj, TrackableResource)
    ]


def write_saved_model(spec, preprocessor, model, path: str) -> None:
    """Writes the SavedModel (preprocessing + model + the signatures) to ``path``.

    Each serving function is traced once, and the SavedModel is written from those concrete
    functions. Keras' ``ExportArchive`` (and ``tf.saved_model.save`` given a
    ``tf.function``) traced every endpoint a second time while saving, which took about a
    fifth of an export. The SavedModel holds one function per signature, the tf.Variables
    those functions read and the preprocessing's lookup tables; a model variable that no
    signature reads is not saved (ExportArchive kept the Keras variable lists as well).
    """
    root = tf.__internal__.tracking.AutoTrackable()
    signatures, captured = {}, {}
    for name, (fn, signature) in serving_functions(spec, preprocessor, model).items():
        concrete = tf.function(fn, autograph=False).get_concrete_function(*signature)
        setattr(root, name, concrete)
        signatures[name] = concrete
        # The tf.Variables the function reads (the model gathers from those behind the
        # Keras variables): what a loader restores, by name in TF Serving's TF1 session.
        for variable in concrete.variables:
            captured.setdefault(id(variable), variable)
    root.variables = list(captured.values())
    root.tables = _lookup_tables(preprocessor)
    tf.saved_model.save(root, path, signatures=signatures)
    set_method_names(path)
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    spec.save(os.path.join(extra, "feature_spec.json"))


# ----------------------------------------------------------------------------------------
# Sample requests: the same rows feed warmup and verification.


def raw_inputs(spec: fs.FeatureSpec, raw: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    """A raw batch (as the input pipeline parses it) as serving_default inputs (numpy).

    A multivalent feature read from TFRecord is a ragged list per row; the signatures take
    it as one joined string per row ("a|b|c", the CSV form), so it is joined here.
    """
    out = {}
    for f in spec.features:
        value = raw[f.name]
        if isinstance(value, tf.RaggedTensor):
            if value.ragged_rank > 1:
                value = value.merge_dims(1, -1)
            tokens = value if value.dtype == tf.string else tf.strings.as_string(value)
            value = tf.strings.reduce_join(tokens, axis=1, separator=f.separator)[:, None]
        out[f.name] = np.asarray(value)
    return out


def serialized_examples(spec: fs.FeatureSpec, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Serialized tf.Examples of a raw batch (multivalent "a|b" strings become lists)."""
    raw = {name: tf.constant(value) for name, value in inputs.items()}
    return np.array(list(tfrecord.serialize_batch(spec, raw).numpy()), dtype=object)


def write_warmup(
    path: str,
    inputs: dict[str, np.ndarray],
    examples: np.ndarray,
    model_name: str,
    max_rows: int = WARMUP_ROWS,
    predict_signatures: tuple[str, ...] = ("serving_default", "predict", "rank"),
) -> int:
    """Writes a PredictionLog for every signature and request kind; returns the count.

    Predict on serving_default, predict and rank; Classify with an ExampleList and with an
    ExampleListWithContext; Regress; MultiInference (classify + regress). Every record is
    batch-safe: all inputs of a request have the same 0th dimension (rank gets its context
    as N rows) and every output has it too, as TF Serving's ``--enable_batching`` requires
    of each warmup request it replays.

    Needs the ``serving`` extra (tensorflow-serving-api); without it, no warmup file is
    written (TF Serving loads a model without one, only its first requests are slower).
    """
    try:
        from tensorflow_serving.apis import (
            classification_pb2,
            inference_pb2,
            input_pb2,
            predict_pb2,
            prediction_log_pb2,
            regression_pb2,
        )
    except ImportError:
        log.warning("tensorflow-serving-api is not installed: no warmup requests written")
        return 0
    n = min(max_rows, len(examples))
    logs = []
    for signature in predict_signatures:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value[:n]))
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    example_list = input_pb2.Input()
    example_list.example_list.examples.extend(tf.train.Example.FromString(e) for e in examples[:n])
    # One context for all examples: row 0's context part; each example keeps the rest.
    with_context = input_pb2.Input()
    context = with_context.example_list_with_context
    context.context.ParseFromString(context_split(examples[0])[0])
    context.examples.extend(tf.train.Example.FromString(context_split(e)[1]) for e in examples[:n])
    for request_input in (example_list, with_context):
        classify = classification_pb2.ClassificationRequest(input=request_input)
        classify.model_spec.name = model_name
        classify.model_spec.signature_name = "classification"
        logs.append(
            prediction_log_pb2.PredictionLog(
                classify_log=prediction_log_pb2.ClassifyLog(request=classify)
            )
        )
    regress = regression_pb2.RegressionRequest(input=example_list)
    regress.model_spec.name = model_name
    regress.model_spec.signature_name = "regression"
    logs.append(
        prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress))
    )
    multi = inference_pb2.MultiInferenceRequest(input=example_list)
    for signature, method in (
        ("classification", METHOD_NAMES["classification"]),
        ("regression", METHOD_NAMES["regression"]),
    ):
        task = multi.tasks.add()
        task.model_spec.name = model_name
        task.model_spec.signature_name = signature
        task.method_name = method
    logs.append(
        prediction_log_pb2.PredictionLog(
            multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)
        )
    )
    assert len(logs) <= MAX_WARMUP_RECORDS
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())
    return len(logs)


# Set to 1 to run the pre-publish checks in the exporting process instead of a fresh one:
# the same checks (`wdl_tf.verify_export.verify`) without a new interpreter and TensorFlow
# import per export (~7 s on 2 cores). The test suite sets it (tests/conftest.py); the fresh
# process stays the default, since it proves the export needs nothing the trainer holds.
VERIFY_IN_PROCESS_ENV = "WDL_TF_VERIFY_IN_PROCESS"

# The check's tolerance for a model whose hidden layers compute in bfloat16
# (`ModelConfig.hidden_dtype`). bfloat16 keeps 8 significant bits (unit roundoff 2^-8 ≈
# 0.4%), and the exported graph rounds at other points than the in-memory model (its
# optimizer fuses matmul, bias and ReLU into one op that rounds once; Keras' eager layers
# round after each): probabilities differed by up to 7.5e-4 on a 16-8 tower and 1.3e-3 on
# the census model's 1024-512-256 (2,048 test rows; 2026-12-02). A wrong weight or a missing
# preprocessing step moves them far more. float32 models keep `ExportOptions.atol` (1e-5).
BFLOAT16_ATOL = 1e-2


def _checker_inputs(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs as the checker reads them: strings as fixed-width bytes (so npz loads them
    without pickle; the in-process check gets the same arrays)."""
    return {k: v.astype(bytes) if v.dtype == object else v for k, v in inputs.items()}


def verify_before_publish(
    path: str, inputs: dict, examples: np.ndarray, expected: np.ndarray, atol: float
) -> dict[str, Any]:
    """`verify_in_fresh_process`, or the same checks here when `VERIFY_IN_PROCESS_ENV` is 1.

    Raises:
      ExportError: with the checker's message, when any check fails.
    """
    if os.environ.get(VERIFY_IN_PROCESS_ENV) != "1":
        return verify_in_fresh_process(path, inputs, examples, expected, atol)
    from wdl_tf import verify_export

    try:
        return verify_export.verify(path, _checker_inputs(inputs), list(examples), expected, atol)
    except Exception as e:  # noqa: BLE001 - reported as the fresh process reports it
        detail = json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"})
        raise ExportError(f"verification of {path} failed: {detail}") from None


def verify_in_fresh_process(
    path: str, inputs: dict, examples: np.ndarray, expected: np.ndarray, atol: float
) -> dict[str, Any]:
    """Loads ``path`` in a new Python process and checks it (see `wdl_tf.verify_export`).

    Raises:
      ExportError: with the checker's message, when any check fails.
    """
    with tempfile.TemporaryDirectory(prefix="wdl_verify_") as tmp:
        request = os.path.join(tmp, "request.npz")
        arrays = {f"input:{k}": v for k, v in _checker_inputs(inputs).items()}
        # Serialized protos may end in NUL bytes, which numpy's bytes dtype strips: store
        # them as one byte buffer with lengths.
        np.savez(
            request,
            example_bytes=np.frombuffer(b"".join(examples), dtype=np.uint8),
            example_lengths=np.array([len(e) for e in examples], dtype=np.int64),
            expected=expected,
            **arrays,
        )
        # Run from the directory holding this wdl_tf, so that ``-m`` finds this copy of the
        # checker and not one in the caller's working directory.
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "wdl_tf.verify_export",
                os.path.abspath(path),
                request,
                str(atol),
            ],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        detail = lines[-1] if lines else proc.stderr[-2000:]
        raise ExportError(f"verification of {path} failed: {detail}")
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------------------
# Versions.


def publish(tmp_path: str, export_base: str) -> str:
    """Renames a finished temp export to the next integer version; returns its path.

    The rename is atomic on one file system; if another writer takes the same number
    first, the next one is tried.
    """
    for _ in range(100):
        version = (versions(export_base) or [0])[-1] + 1
        final = os.path.join(export_base, str(version))
        try:
            os.rename(tmp_path, final)
            return final
        except OSError:
            if not os.path.exists(final):
                raise
    raise ExportError(f"could not publish {tmp_path} under {export_base}")


def prune_versions(export_base: str, keep: int) -> list[int]:
    """Removes all but the ``keep`` newest versions (0 = keep all); returns those removed.

    Each is first renamed to a non-integer name, so a server sees it vanish at once.
    """
    if keep <= 0:
        return []
    removed = versions(export_base)[:-keep]
    for version in removed:
        doomed = temp_dir(export_base, f"removing-{version}")
        os.rename(os.path.join(export_base, str(version)), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return removed


def export_model(
    spec: fs.FeatureSpec,
    preprocessor,
    model,
    export_base: str,
    sample_raw: dict,
    metrics: dict[str, Any] | None = None,
    options: ExportOptions | None = None,
    extra_assets: tuple[str, ...] = (),
) -> str:
    """Writes, verifies and publishes a SavedModel; returns ``<export_base>/<version>``.

    Args:
      sample_raw: a raw batch (as `input_pipeline.read_raw` yields): the warmup requests and
        the rows on which the reloaded model must reproduce the in-memory predictions.
      metrics: the eval metrics, stored in ``assets.extra/metrics.json`` (and gated on).
      extra_assets: files copied into ``assets.extra/`` (e.g. the training statistics).

    Raises:
      ExportError: a failed check or a failed write; nothing is published and the temp
        directory is removed.
    """
    options = options or ExportOptions()
    options.validate()
    atol = options.atol
    if model_lib.hidden_compute_dtype(model) == "bfloat16":
        atol = max(atol, BFLOAT16_ATOL)
    if options.max_auc_drop is not None and metrics is not None:
        previous = published_metrics(export_base)
        if previous is not None and metrics["auc"] < previous["auc"] - options.max_auc_drop:
            raise ExportError(
                f"eval AUC {metrics['auc']:.4f} is worse than the published version's "
                f"{previous['auc']:.4f} by more than max_auc_drop={options.max_auc_drop}; "
                "not publishing"
            )
    expected = model(preprocessor(sample_raw), training=False).numpy().reshape(-1)
    if not np.all(np.isfinite(expected)):
        raise ExportError("the model's predictions contain NaN or inf; refusing to export")
    inputs = raw_inputs(spec, sample_raw)
    examples = serialized_examples(spec, inputs)

    try:
        os.makedirs(export_base, exist_ok=True)
        stale = remove_stale_temps(export_base)
    except OSError as e:
        raise ExportError(f"cannot write to export_base {export_base!r}: {e}") from None
    if stale:
        log.warning("removed %s, left under %s by killed exports", stale, export_base)
    tmp = temp_dir(export_base, str(int(time.time() * 1000)))
    try:
        write_saved_model(spec, preprocessor, model, tmp)
        extra = os.path.join(tmp, "assets.extra")
        if metrics is not None:
            with open(os.path.join(extra, "metrics.json"), "w") as f:
                json.dump(metrics, f, indent=2)
        for asset in extra_assets:
            shutil.copy(asset, extra)
        signatures = ("serving_default", "predict", "rank", *explain.signature_names(model))
        write_warmup(
            os.path.join(extra, WARMUP_FILE),
            inputs,
            examples,
            options.model_name,
            predict_signatures=signatures,
        )
        verify_before_publish(tmp, inputs, examples, expected, atol)
        final = publish(tmp, export_base)
    except (OSError, tf.errors.OpError) as e:  # TF writes files through its own file system
        raise ExportError(f"writing the export under {export_base!r} failed: {e}") from None
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    removed = prune_versions(export_base, options.keep_versions)
    if removed:
        log.info("removed old versions %s", removed)
    return final
