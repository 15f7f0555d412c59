"""Loaded model versions: version directories, SavedModels, their signatures and states."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from tf_serving.config import ServedModel
from tf_serving.server.status import ServingError

log = logging.getLogger("tf_serving")

DEFAULT_SIGNATURE = "serving_default"
INT64_MAX = 2**63 - 1

# Version states, as tensorflow.serving.ModelVersionStatus.State names them.
LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNLOADING = "UNLOADING"
END = "END"
STATE_ENUM = get_model_status_pb2.ModelVersionStatus.State

_VERSION_DIR_RE = re.compile(r"\d+")


def scan_versions(base_path: str) -> dict[int, str]:
    """Version → directory for the children of ``base_path`` whose names are integers.

    Other names (``temp-1700000000``, ``README``) are ignored, as TF Serving does; of
    duplicates such as ``7`` and ``007`` the first in sorted order wins.

    Raises:
      OSError: ``base_path`` cannot be listed.
    """
    found: dict[int, str] = {}
    for name in sorted(os.listdir(base_path)):
        if not _VERSION_DIR_RE.fullmatch(name):
            continue
        version = int(name)
        path = os.path.join(base_path, name)
        if version > INT64_MAX or version in found or not os.path.isdir(path):
            continue
        found[version] = path
    return found


def read_meta_graph(path: str, tag: str = "serve") -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tagged ``tag`` of the SavedModel at ``path`` (exact SignatureDefs).

    Raises:
      ServingError: NOT_FOUND without a saved_model.pb(txt), DATA_LOSS when it cannot be
        parsed, NOT_FOUND when no MetaGraph has the tag.
    """
    pb = os.path.join(path, "saved_model.pb")
    pbtxt = os.path.join(path, "saved_model.pbtxt")
    saved_model = saved_model_pb2.SavedModel()
    if os.path.exists(pb):
        try:
            with open(pb, "rb") as f:
                saved_model.ParseFromString(f.read())
        except (DecodeError, RuntimeError, ValueError) as e:
            raise ServingError(
                grpc.StatusCode.DATA_LOSS, f"Can't parse {pb} as binary proto"
            ) from e
    elif os.path.exists(pbtxt):
        try:
            with open(pbtxt) as f:
                text_format.Parse(f.read(), saved_model)
        except (text_format.ParseError, UnicodeDecodeError) as e:
            raise ServingError(
                grpc.StatusCode.DATA_LOSS, f"Can't parse {pbtxt} as text proto"
            ) from e
    else:
        raise ServingError(
            grpc.StatusCode.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
        )
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ServingError(
        grpc.StatusCode.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {tag} }}. To inspect "
        "available tag-sets in the SavedModel, please use the SavedModel CLI: "
        "`saved_model_cli`",
    )


class FlatCall:
    """Calls a loaded signature on its flat inputs when they already match its specs.

    ``fn(**tensors)`` on a loaded signature binds the keyword arguments to its structured
    input signature and checks and casts every tensor against its TensorSpec in Python:
    0.6 ms of a 4.8 ms ``rank`` call with 13 inputs (alternating blocks of 25 calls on this
    2-core machine, BENCHMARKS.md). The server has already checked names, dtypes and shapes
    (`tf_serving.server.inference`), so when every tensor's dtype and shape fit their spec
    it calls the concrete function's flat entry point with the inputs in its own order (the
    sorted keyword names: how a signature flattens its keyword arguments, checked against
    the function's input tensor names here). Anything else - another TensorFlow whose
    functions lack the entry point, an input that would need a cast - takes the structured
    call, which raises TensorFlow's own error.
    """

    def __init__(self, fn):
        self.fn = fn
        args, kwargs = fn.structured_input_signature
        names = sorted(kwargs)
        graph_names = [t.name.split(":")[0] for t in fn.inputs[: len(names)]]
        flat_ok = not args and graph_names == names and hasattr(fn, "_call_flat")
        self._specs = [(name, kwargs[name]) for name in names] if flat_ok else None

    def __call__(self, **tensors):
        specs = self._specs
        if specs is None or len(tensors) != len(specs):
            return self.fn(**tensors)
        flat = []
        for name, spec in specs:
            t = tensors.get(name)
            if t is None or t.dtype != spec.dtype or not spec.shape.is_compatible_with(t.shape):
                return self.fn(**tensors)
            flat.append(t)
        return self.fn._call_flat(flat, self.fn.captured_inputs)


class ProtoCall:
    """Runs a Predict signature on a request's TensorProtos, parsed inside one graph call.

    The checked path decodes every TensorProto to numpy, checks it, and turns it into a
    tensor again before the call: 0.9 ms of a 7.5 ms census ``rank`` call with 200
    candidates (13 inputs; alternating blocks on this 2-core machine, BENCHMARKS.md).
    Here the TensorProtos go in serialized, and one function parses them with
    ``tf.io.parse_tensor`` - TensorFlow's own ``Tensor::FromProto``, the parser TF
    Serving's C++ Predict uses (predict_util.cc) - fixes each to the signature's shape,
    tests floating inputs for NaN/±inf, and calls the signature. It returns its outputs
    as a flat list called through the concrete function's flat entry point (as
    `FlatCall`), which saved another 0.4 ms against returning the output dict.

    It answers only what it can answer exactly as the checked path would. It returns
    None - the caller then takes the checked path, which raises the precise error - when
    a dtype or shape does not match, a TensorProto does not parse, a floating input holds
    a non-finite value, the model raises, or the function could not be built (a
    signature with positional inputs).
    """

    def __init__(self, fn, inputs: Mapping[str, tuple[int, tuple[int, ...] | None]], outputs):
        self._fn = fn
        self._aliases = sorted(inputs)
        self._inputs = dict(inputs)
        self._outputs = tuple(outputs)
        self._lock = threading.Lock()
        self._call: Callable | None = None
        self._unusable = False

    def _build(self) -> Callable | None:
        with self._lock:
            if self._call is None and not self._unusable:
                try:
                    self._call = self._trace()
                except Exception:  # noqa: BLE001 - the checked path serves it instead
                    log.warning(
                        "signature has no direct path; it takes the checked one", exc_info=True
                    )
                    self._unusable = True
            return self._call

    def _trace(self) -> Callable:
        args, _ = self._fn.structured_input_signature
        if args:
            raise ValueError("the signature takes positional inputs")
        aliases, inputs, outputs, fn = self._aliases, self._inputs, self._outputs, self._fn

        @tf.function(input_signature=[tf.TensorSpec([len(aliases)], tf.string)])
        def call(protos):
            tensors, finite = {}, []
            for i, alias in enumerate(aliases):
                dtype, shape = inputs[alias]
                dtype = tf.dtypes.as_dtype(dtype)
                tensor = tf.io.parse_tensor(protos[i], dtype)
                if shape is not None:
                    tensor = tf.ensure_shape(tensor, [d if d >= 0 else None for d in shape])
                if dtype.is_floating:
                    finite.append(tf.reduce_all(tf.math.is_finite(tensor)))
                tensors[alias] = tensor
            result = fn(**tensors)
            all_finite = tf.reduce_all(tf.stack(finite)) if finite else tf.constant(True)
            return [result[k] for k in outputs] + [all_finite]

        concrete = call.get_concrete_function()
        if hasattr(concrete, "_call_flat"):
            return lambda serialized: concrete._call_flat([serialized], concrete.captured_inputs)
        return concrete

    def __call__(
        self, protos: Mapping[str, tensor_pb2.TensorProto]
    ) -> dict[str, np.ndarray] | None:
        """The outputs as numpy arrays, or None (see the class doc).

        ``protos`` must hold exactly the signature's input aliases (checked before).
        """
        call = self._call or self._build()
        if call is None:
            return None
        serialized = tf.constant([protos[a].SerializeToString() for a in self._aliases])
        try:
            *outputs, finite = call(serialized)
        except (tf.errors.OpError, ValueError, TypeError):
            return None
        if not finite.numpy():
            return None
        return {k: v.numpy() for k, v in zip(self._outputs, outputs)}


@dataclasses.dataclass
class Signature:
    """One callable signature of a loaded version."""

    name: str
    sigdef: meta_graph_pb2.SignatureDef
    fn: Callable[..., Mapping[str, tf.Tensor]]
    inputs: dict[str, tuple[int, tuple[int, ...] | None]]  # alias → (dtype, shape | None)
    outputs: tuple[str, ...]
    proto_call: ProtoCall

    @classmethod
    def create(cls, name: str, sigdef: meta_graph_pb2.SignatureDef, fn) -> Signature:
        inputs = {}
        for alias, info in sigdef.inputs.items():
            shape = None
            if not info.tensor_shape.unknown_rank:
                shape = tuple(int(d.size) for d in info.tensor_shape.dim)
            inputs[alias] = (int(info.dtype), shape)
        outputs = tuple(sorted(sigdef.outputs))
        return cls(name, sigdef, FlatCall(fn), inputs, outputs, ProtoCall(fn, inputs, outputs))


class Servable:
    """A loaded model version: the SavedModel's SignatureDefs and its callable signatures."""

    def __init__(self, name: str, version: int, path: str):
        self.name = name
        self.version = version
        self.path = path
        meta_graph = read_meta_graph(path)
        self.signature_defs = dict(meta_graph.signature_def)
        self.loaded = tf.saved_model.load(path, tags=["serve"])
        self.signatures: dict[str, Signature] = {}
        for key, sigdef in self.signature_defs.items():
            fn = self.loaded.signatures.get(key)
            if fn is not None:  # e.g. __saved_model_init_op is a SignatureDef but no function
                self.signatures[key] = Signature.create(key, sigdef, fn)

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        out = get_model_metadata_pb2.SignatureDefMap()
        for key, sigdef in self.signature_defs.items():
            out.signature_def[key].CopyFrom(sigdef)
        return out


def dir_id(path: str) -> tuple:
    """(inode, mtime) of a version directory: a replaced directory gets a new id."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_ino, st.st_mtime_ns)


@dataclasses.dataclass
class VersionRecord:
    """One version of a model as the status API reports it, with its servable once loaded."""

    version: int
    path: str
    state: str = LOADING
    servable: Servable | None = None
    error: ServingError | None = None
    failed: bool = False
    attempts: int = 0
    retry_at: float = 0.0
    dir_id: tuple = ()


class Model:
    """A served model: its config entry, its version records and the labels in force."""

    def __init__(self, settings: ServedModel):
        self.settings = settings
        self.versions: dict[int, VersionRecord] = {}
        self.warned: str = ""

    def latest_available(self) -> VersionRecord | None:
        ready = [r for r in self.versions.values() if r.state == AVAILABLE]
        return max(ready, key=lambda r: r.version) if ready else None

    def available(self, version: int) -> bool:
        record = self.versions.get(version)
        return record is not None and record.state == AVAILABLE


@dataclasses.dataclass(frozen=True)
class Spec:
    """A request's model_spec."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    @classmethod
    def from_proto(cls, spec) -> Spec:
        choice = spec.WhichOneof("version_choice")
        return cls(
            name=spec.name,
            version=spec.version.value if choice == "version" else None,
            label=spec.version_label if choice == "version_label" else None,
            signature_name=spec.signature_name,
        )

    @property
    def signature(self) -> str:
        return self.signature_name or DEFAULT_SIGNATURE
