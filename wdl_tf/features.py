"""FeatureSpec: the feature schema as data (JSON), validated on load.

One FeatureSpec drives parsing (the CSV layout and label), preprocessing (vocabularies,
hashing, crosses, bucketization, normalization), the wide and deep inputs of the model,
the synthetic data generators and the serving signatures (docs/design.md §3.2).

A spec file looks like::

    {
      "name": "census",
      "csv": {"columns": ["age", "workclass", ...], "delimiter": ",", "na_values": ["?"],
              "comment_prefix": "|"},
      "label": {"name": "income_bracket", "positive_values": [">50K", ">50K."],
                "negative_values": ["<=50K", "<=50K."]},
      "features": [
        {"name": "age", "kind": "numeric", "normalization": "cdf",
         "bucketize": {"boundaries": [18, 25, 30]}, "wide": true, "deep": true},
        {"name": "education", "kind": "categorical", "vocabulary": {"min_count": 1}},
        {"name": "occupation", "kind": "categorical", "hash_buckets": 1000},
        {"name": "installed_apps", "kind": "multivalent", "separator": "|", "combiner": "mean"}
      ],
      "crosses": [{"features": ["education", "occupation"], "hash_buckets": 1000}],
      "split": {"time_column": "timestamp", "user_column": "user_id"}
    }

``split`` (optional) says how a validation split is carved from the training files: the
latest rows by ``time_column`` (per user of ``user_column`` when given), else a random share.

Every field is checked on load; an error names the field (``features[3].hash_buckets``),
the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

NUMERIC = "numeric"
CATEGORICAL = "categorical"
MULTIVALENT = "multivalent"
KINDS = (NUMERIC, CATEGORICAL, MULTIVALENT)
NORMALIZATIONS = ("cdf", "zscore", "none")
COMBINERS = ("mean", "sum", "sqrtn")
# Fields that only a numeric feature, or only a multivalent one, may have.
_NUMERIC_ONLY = ("normalization", "num_quantiles", "bucketize")
_LIST_ONLY = ("separator", "combiner", "wide_combiner")
CATEGORICAL_DTYPES = ("string", "int")
DEFAULT_EMBEDDING_DIM = 32  # the paper's embedding size (§4.2)


class FeatureSpecError(ValueError):
    """A feature spec that cannot be used; the message names the field and the value."""


@dataclasses.dataclass(frozen=True)
class CsvFormat:
    """How rows of a delimited text file map to named columns.

    Attributes:
      columns: column names in file order; every feature and the label must be one of them.
      delimiter: field separator; surrounding whitespace of each field is stripped.
      na_values: field values that mean "missing" (besides the empty field).
      comment_prefix: lines starting with it are skipped (adult.test's "|1x3 Cross validator").
      skip_header_lines: lines skipped at the top of every file (a CSV header).
    """

    columns: tuple[str, ...]
    delimiter: str = ","
    na_values: tuple[str, ...] = ()
    comment_prefix: str = ""
    skip_header_lines: int = 0


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """The binary label: which field values count as positive and which as negative.

    A value in neither list makes the row malformed (a typo in the data is not a silent 0).
    """

    name: str
    positive_values: tuple[str, ...] = ("1",)
    negative_values: tuple[str, ...] = ("0",)


@dataclasses.dataclass(frozen=True)
class Bucketize:
    """Bucketization of a numeric feature: explicit boundaries or n quantile buckets.

    The bucket id is a sparse feature: it gets one wide weight per bucket and can be crossed
    (the TF official census model's ``age_buckets``).
    """

    boundaries: tuple[float, ...] | None = None
    num_quantiles: int | None = None

    @property
    def num_buckets(self) -> int:
        if self.boundaries is not None:
            return len(self.boundaries) + 1
        return int(self.num_quantiles)


@dataclasses.dataclass(frozen=True)
class VocabularySpec:
    """A vocabulary learned from the training data (paper P6).

    Tokens seen fewer than ``min_count`` times go to the ``num_oov_buckets`` OOV buckets,
    as do tokens never seen; ``max_tokens`` keeps only the most frequent ones.
    """

    min_count: int = 1
    num_oov_buckets: int = 1
    max_tokens: int | None = None


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """One input feature.

    Attributes:
      name: the column name in the data and the input name of the serving signatures.
      kind: ``numeric`` (a float), ``categorical`` (one string or integer id) or
        ``multivalent`` (a variable-length list of ids, "a|b|c" in CSV).
      dtype: for categorical and multivalent features, ``string`` or ``int``.
      default: the value used when the field is empty or in ``csv.na_values``.
      normalization: numeric only: ``cdf`` (paper P7: the value's quantile mapped to [0, 1]),
        ``zscore`` or ``none``. This is what the deep part (and a wide part without buckets) sees.
      num_quantiles: resolution of the ``cdf`` normalization (n_q in the paper).
      bucketize: numeric only: optional bucketization, whose bucket id is a sparse feature.
      vocabulary: categorical/multivalent: learned vocabulary (exclusive with hash_buckets).
      hash_buckets: categorical/multivalent: hash ids into this many buckets instead.
      separator: multivalent only: separator of the list elements inside one field.
      combiner: multivalent only: how element embeddings are pooled (mean, sum, sqrtn).
      wide_combiner: multivalent only: how the wide part pools the list's weights, and those
        of every cross the feature takes part in. ``sum`` (the default, as the Estimator's
        linear model) makes the term grow with the list's length; ``mean`` keeps a long
        list (the last 50 liked movies) from outweighing every single-valued feature. FTRL's
        per-coordinate step does not scale the weights down to compensate: its weights are
        invariant to a constant scaling of their gradients.
      wide: feed the wide (linear) part: one weight per id (per bucket for numerics).
      deep: feed the deep part: an embedding for ids, the normalized value for numerics.
      embedding_dim: embedding size in the deep part.
    """

    name: str
    kind: str
    dtype: str = "string"
    default: Any = None
    normalization: str = "cdf"
    num_quantiles: int = 100
    bucketize: Bucketize | None = None
    vocabulary: VocabularySpec | None = None
    hash_buckets: int | None = None
    separator: str = "|"
    combiner: str = "mean"
    wide_combiner: str = "sum"
    wide: bool = True
    deep: bool = True
    embedding_dim: int = DEFAULT_EMBEDDING_DIM

    @property
    def is_sparse(self) -> bool:
        """Whether the feature has integer ids (categorical, multivalent, or numeric buckets)."""
        return self.kind != NUMERIC or self.bucketize is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: only the fields that apply to the feature's kind."""
        skip = {
            NUMERIC: ("vocabulary", "hash_buckets", "dtype", *_LIST_ONLY),
            CATEGORICAL: (*_NUMERIC_ONLY, *_LIST_ONLY),
            MULTIVALENT: _NUMERIC_ONLY,
        }[self.kind]
        obj = _drop_none(dataclasses.asdict(self))
        return {k: v for k, v in obj.items() if k not in skip}

    @property
    def raw_default(self) -> Any:
        """The default as parsed: 0.0 for numerics, "" (OOV) or -1 for ids, unless given."""
        if self.default is not None:
            return self.default
        if self.kind == NUMERIC:
            return 0.0
        return -1 if (self.dtype == "int" and self.kind == CATEGORICAL) else ""


@dataclasses.dataclass(frozen=True)
class CrossConfig:
    """A cross-product transformation (paper P1/P2): one hashed id per combination of values.

    Numeric features take part through their bucket id. A cross of a multivalent feature with
    single-valued ones crosses every element (user_installed_app × impression_app).
    """

    features: tuple[str, ...]
    hash_buckets: int
    name: str = ""

    @property
    def key(self) -> str:
        return self.name or "_X_".join(self.features)


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """How the validation split is carved from the training files.

    A validation split that is later in time than the training rows, as the test split of
    time-ordered data is, selects models that hold up on the future rather than on a random
    sample of the past (memorized crosses look better on the latter).

    Attributes:
      time_column: a CSV column holding a number (a Unix timestamp, a day index): the
        latest rows by it are the validation split.
      user_column: when given, the latest rows of each user (per-user leave-last-out, as
        `wdl_tf.datasets.movielens` splits train from test); needs ``time_column``.
    """

    time_column: str
    user_column: str = ""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The whole schema: file layout, label, features and crosses (and the split columns)."""

    name: str
    csv: CsvFormat
    label: LabelSpec
    features: tuple[FeatureConfig, ...]
    crosses: tuple[CrossConfig, ...] = ()
    split: SplitSpec | None = None

    def feature(self, name: str) -> FeatureConfig:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def cross_is_multivalent(self, cross: CrossConfig) -> bool:
        return any(self.feature(n).kind == MULTIVALENT for n in cross.features)

    def to_dict(self) -> dict[str, Any]:
        obj = _drop_none(dataclasses.asdict(self))
        obj["features"] = [f.to_dict() for f in self.features]
        return obj

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            f.write(self.to_json() + "\n")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------
# Loading and validation.


class _Reader:
    """Reads typed fields from a JSON object, naming the path of a bad field in errors."""

    def __init__(self, obj: Any, path: str, allowed: tuple[str, ...]):
        if not isinstance(obj, dict):
            raise FeatureSpecError(f"{path}: expected a JSON object, got {obj!r}")
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            raise FeatureSpecError(
                f"{path}: unknown field(s) {unknown}; allowed fields are {sorted(allowed)}"
            )
        self.obj = obj
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, required=False):
        if key not in self.obj or self.obj[key] is None:
            if required or default is ...:
                raise FeatureSpecError(f"{self.where(key)}: required field is missing")
            return default
        value = self.obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # JSON booleans are ints in Python; never accept one for a number or vice versa.
        if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise FeatureSpecError(f"{self.where(key)}: expected {names}, got {value!r}")
        return value

    def positive_int(self, key: str, default: Any = ..., *, minimum: int = 1) -> int | None:
        value = self.get(key, int, default)
        if value is not None and value < minimum:
            raise FeatureSpecError(
                f"{self.where(key)}: must be an integer >= {minimum}, got {value!r}"
            )
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in allowed:
            raise FeatureSpecError(
                f"{self.where(key)}: unknown value {value!r}; allowed values are {list(allowed)}"
            )
        return value

    def str_list(self, key: str, default: Any = ..., *, required=False) -> tuple[str, ...]:
        value = self.get(key, list, default, required=required)
        if value is None:
            return ()
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise FeatureSpecError(
                    f"{self.where(key)}[{i}]: expected a non-empty string, got {item!r}"
                )
        return tuple(value)


def _parse_bucketize(obj: Any, path: str) -> Bucketize:
    r = _Reader(obj, path, ("boundaries", "num_quantiles"))
    if r.has("boundaries") == r.has("num_quantiles"):
        raise FeatureSpecError(f"{path}: give exactly one of 'boundaries' or 'num_quantiles'")
    if r.has("boundaries"):
        bounds = r.get("boundaries", list)
        if not bounds or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds
        ):
            raise FeatureSpecError(
                f"{path}.boundaries: expected a non-empty list of numbers, got {bounds!r}"
            )
        if any(a >= b for a, b in zip(bounds, bounds[1:])):
            raise FeatureSpecError(
                f"{path}.boundaries: must be strictly increasing, got {bounds!r}"
            )
        return Bucketize(boundaries=tuple(float(b) for b in bounds))
    return Bucketize(num_quantiles=r.positive_int("num_quantiles", minimum=2))


def _parse_vocabulary(obj: Any, path: str) -> VocabularySpec:
    r = _Reader(obj, path, ("min_count", "num_oov_buckets", "max_tokens"))
    return VocabularySpec(
        min_count=r.positive_int("min_count", 1),
        num_oov_buckets=r.positive_int("num_oov_buckets", 1),
        max_tokens=r.positive_int("max_tokens", None),
    )


_FEATURE_FIELDS = tuple(f.name for f in dataclasses.fields(FeatureConfig))


def _parse_feature(obj: Any, path: str) -> FeatureConfig:
    r = _Reader(obj, path, _FEATURE_FIELDS)
    name = r.get("name", str, required=True)
    kind = r.choice("kind", KINDS)
    wide = r.get("wide", bool, True)
    deep = r.get("deep", bool, True)
    if not (wide or deep):
        raise FeatureSpecError(f"{path} ({name!r}): feeds neither the wide nor the deep part")
    common = dict(
        name=name,
        kind=kind,
        wide=wide,
        deep=deep,
        embedding_dim=r.positive_int("embedding_dim", DEFAULT_EMBEDDING_DIM),
    )
    if kind == NUMERIC:
        for key in ("vocabulary", "hash_buckets", *_LIST_ONLY):
            if r.has(key):
                raise FeatureSpecError(f"{r.where(key)}: not allowed for a numeric feature")
        if r.has("dtype") and r.obj["dtype"] != "float":
            raise FeatureSpecError(
                f"{r.where('dtype')}: a numeric feature is float, got {r.obj['dtype']!r}"
            )
        default = r.get("default", (int, float), None)
        return FeatureConfig(
            dtype="float",
            default=None if default is None else float(default),
            normalization=r.choice("normalization", NORMALIZATIONS, "cdf"),
            num_quantiles=r.positive_int("num_quantiles", 100, minimum=2),
            bucketize=(
                _parse_bucketize(r.obj["bucketize"], r.where("bucketize"))
                if r.has("bucketize")
                else None
            ),
            **common,
        )
    for key in _NUMERIC_ONLY:
        if r.has(key):
            raise FeatureSpecError(f"{r.where(key)}: only allowed for a numeric feature")
    dtype = r.choice("dtype", CATEGORICAL_DTYPES, "string")
    default = r.get("default", str if dtype == "string" else int, None)
    if r.has("vocabulary") and r.has("hash_buckets"):
        raise FeatureSpecError(f"{path} ({name!r}): give 'vocabulary' or 'hash_buckets', not both")
    hash_buckets = r.positive_int("hash_buckets", None)
    vocabulary = (
        _parse_vocabulary(r.obj["vocabulary"], r.where("vocabulary"))
        if r.has("vocabulary")
        else (None if hash_buckets else VocabularySpec())
    )
    separator = r.get("separator", str, "|")
    combiner = r.choice("combiner", COMBINERS, "mean")
    wide_combiner = r.choice("wide_combiner", COMBINERS, "sum")
    if kind == CATEGORICAL:
        for key in _LIST_ONLY:
            if r.has(key):
                raise FeatureSpecError(f"{r.where(key)}: only allowed for a multivalent feature")
    elif not separator:
        raise FeatureSpecError(f"{r.where('separator')}: must be a non-empty string")
    return FeatureConfig(
        dtype=dtype,
        default=default,
        vocabulary=vocabulary,
        hash_buckets=hash_buckets,
        separator=separator,
        combiner=combiner,
        wide_combiner=wide_combiner,
        **common,
    )


def _parse_cross(obj: Any, path: str, features: dict[str, FeatureConfig]) -> CrossConfig:
    r = _Reader(obj, path, ("features", "hash_buckets", "name"))
    names = r.str_list("features", required=True)
    if len(names) < 2:
        raise FeatureSpecError(f"{path}.features: a cross needs at least 2 features, got {names}")
    for i, n in enumerate(names):
        if n not in features:
            raise FeatureSpecError(
                f"{path}.features[{i}]: unknown feature {n!r}; known features are "
                f"{sorted(features)}"
            )
        f = features[n]
        if f.kind == NUMERIC and f.bucketize is None:
            raise FeatureSpecError(
                f"{path}.features[{i}]: numeric feature {n!r} can only be crossed when it has "
                "'bucketize'"
            )
    if len(set(names)) != len(names):
        raise FeatureSpecError(f"{path}.features: a feature is repeated in {list(names)}")
    if sum(features[n].kind == MULTIVALENT for n in names) > 1:
        raise FeatureSpecError(
            f"{path}.features: at most one multivalent feature per cross, got {list(names)}"
        )
    return CrossConfig(
        features=names,
        hash_buckets=r.positive_int("hash_buckets"),
        name=r.get("name", str, ""),
    )


def _parse_csv(obj: Any) -> CsvFormat:
    r = _Reader(obj, "csv", tuple(f.name for f in dataclasses.fields(CsvFormat)))
    columns = r.str_list("columns", required=True)
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise FeatureSpecError(f"csv.columns: repeated column name(s) {dupes}")
    delimiter = r.get("delimiter", str, ",")
    if not delimiter:
        raise FeatureSpecError("csv.delimiter: must be a non-empty string")
    return CsvFormat(
        columns=columns,
        delimiter=delimiter,
        na_values=r.str_list("na_values", ()),
        comment_prefix=r.get("comment_prefix", str, ""),
        skip_header_lines=r.positive_int("skip_header_lines", 0, minimum=0),
    )


def _parse_label(obj: Any) -> LabelSpec:
    r = _Reader(obj, "label", ("name", "positive_values", "negative_values"))
    label = LabelSpec(
        name=r.get("name", str, required=True),
        positive_values=r.str_list("positive_values", ("1",)),
        negative_values=r.str_list("negative_values", ("0",)),
    )
    both = set(label.positive_values) & set(label.negative_values)
    if both:
        raise FeatureSpecError(f"label: value(s) {sorted(both)} are both positive and negative")
    return label


def _parse_split(obj: Any, csv: CsvFormat, label: LabelSpec) -> SplitSpec:
    r = _Reader(obj, "split", ("time_column", "user_column"))
    time_column = r.get("time_column", str, required=True)
    user_column = r.get("user_column", str, "")
    for key, column in (("time_column", time_column), ("user_column", user_column)):
        if key == "user_column" and not column:
            continue
        if column not in csv.columns:
            raise FeatureSpecError(
                f"split.{key}: {column!r} is not a column of csv.columns {list(csv.columns)}"
            )
        if column == label.name:
            raise FeatureSpecError(f"split.{key}: {column!r} is the label")
    if user_column == time_column:
        raise FeatureSpecError(
            f"split.user_column: {user_column!r} is also the time_column; give another column"
        )
    return SplitSpec(time_column=time_column, user_column=user_column)


def from_dict(obj: Any) -> FeatureSpec:
    """Builds and validates a FeatureSpec from its JSON object form.

    Raises:
      FeatureSpecError: naming the first bad field, its value and what is allowed.
    """
    r = _Reader(obj, "", ("name", "csv", "label", "features", "crosses", "split"))
    csv = _parse_csv(r.get("csv", dict, required=True))
    label = _parse_label(r.get("label", dict, required=True))
    raw_features = r.get("features", list, required=True)
    if not raw_features:
        raise FeatureSpecError("features: the spec has no features")
    features: dict[str, FeatureConfig] = {}
    for i, raw in enumerate(raw_features):
        f = _parse_feature(raw, f"features[{i}]")
        if f.name in features:
            raise FeatureSpecError(f"features[{i}].name: feature {f.name!r} is defined twice")
        if f.name not in csv.columns:
            raise FeatureSpecError(
                f"features[{i}].name: {f.name!r} is not a column of csv.columns {list(csv.columns)}"
            )
        if f.name == label.name:
            raise FeatureSpecError(f"features[{i}].name: {f.name!r} is the label")
        features[f.name] = f
    if label.name not in csv.columns:
        raise FeatureSpecError(
            f"label.name: {label.name!r} is not a column of csv.columns {list(csv.columns)}"
        )
    crosses = tuple(
        _parse_cross(c, f"crosses[{i}]", features) for i, c in enumerate(r.get("crosses", list, []))
    )
    keys = [c.key for c in crosses]
    clash = sorted({k for k in keys if keys.count(k) > 1 or k in features})
    if clash:
        raise FeatureSpecError(f"crosses: name(s) {clash} repeat a feature or another cross")
    return FeatureSpec(
        name=r.get("name", str, "custom"),
        csv=csv,
        label=label,
        features=tuple(features.values()),
        crosses=crosses,
        split=_parse_split(r.obj["split"], csv, label) if r.has("split") else None,
    )


def from_json(text: str, source: str = "<string>") -> FeatureSpec:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise FeatureSpecError(f"{source}: not valid JSON: {e}") from None
    return from_dict(obj)


def load(path: str) -> FeatureSpec:
    """Loads a spec from a JSON file, or a preset by name (``census``, ``census_synthetic``)."""
    if not os.path.splitext(path)[1] and os.sep not in path:
        return preset(path)
    if not os.path.exists(path):
        raise FeatureSpecError(f"feature spec file {path!r} does not exist")
    with open(path) as f:
        return from_json(f.read(), source=path)


SPEC_DIR = os.path.join(os.path.dirname(__file__), "specs")


def preset_names() -> list[str]:
    return sorted(os.path.splitext(n)[0] for n in os.listdir(SPEC_DIR) if n.endswith(".json"))


def preset(name: str) -> FeatureSpec:
    """A FeatureSpec shipped with the package (wdl_tf/specs/<name>.json)."""
    path = os.path.join(SPEC_DIR, f"{name}.json")
    if not os.path.exists(path):
        raise FeatureSpecError(
            f"unknown feature spec preset {name!r}; presets are {preset_names()} "
            "(or give the path of a .json file)"
        )
    return load(path)
