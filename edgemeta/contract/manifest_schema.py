"""The one written schema of ``manifest.json`` (format versions 1, 2 and 3), and its checker (stdlib only).

``docs/bundle-format.md`` states the same rules in prose; a test checks that every field named here
is named there. :func:`validate_manifest` runs after the integrity digest has matched, so it guards
against bundles that were rewritten whole (checksums and digest recomputed) or exported wrong: a
bundle that passes is one ``FewShotClassifier`` can fit and predict with.

Unknown fields are allowed (a reader ignores optional fields added later); every field a runtime
reads is typed, ranged and, where the runtime supports only some values, restricted to them.

Version 2 added colour bundles (``preprocess.channels`` 3, :data:`COLOUR_PREPROCESS`); a version-2
single-channel bundle has exactly the version-1 ``preprocess`` (:data:`GREY_PREPROCESS`), and a
version-1 manifest naming any other channel count is refused.

Version 3 adds optional capability sections (:data:`V3_SECTIONS`: top-level manifest key -> its
rule). The writer writes the lowest version that expresses a bundle (:func:`writer_version`: 3 only
when a version-3 section is present, else 2), so bundles without one keep loading in runtimes that
read versions 1 and 2; a version-1 or version-2 manifest holding a version-3 section is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edgemeta.errors import BundleError

FORMAT_NAME = "edgemeta-bundle"
FORMAT_VERSION = 2                 # what the writer writes for a bundle without a version-3 section
SECTION_VERSION = 3                # what it writes when the manifest holds one (V3_SECTIONS)
READABLE_VERSIONS = (1, 2, 3)      # what the reader accepts
RESIZE_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
HEAD_OUTPUTS = {"proto": ["prototypes"], "metasgd": ["weight", "bias"], "ridge": ["weight", "bias"],
                "finetune": ["weight", "bias"], "recurrent": ["weight", "bias"]}
MANIFEST = "manifest.json"          # the file that lists and checksums every other
GRAPH_FILES = {"backbone": "backbone.onnx", "adapt": "adapt.onnx", "classify": "classify.onnx"}
INT8_GRAPH = "backbone.int8.onnx"
MAX_FILES = 16
MAX_FILE_BYTES = 512 << 20   # per listed file (a ResNet-12 backbone is ~50 MB in fp32)
MAX_BUNDLE_BYTES = 512 << 20  # all listed files together: what loading a bundle may cost at most
MAX_SIDE = 1024              # preprocess.size / input.shape pixels per side
MAX_DIM = 1 << 16            # embedding.dim
MAX_WAYS = 1_000_000
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SHOTS_KEY = re.compile(r"[1-9][0-9]{0,5}")


def plain_file_name(name: Any) -> bool:
    """A listed file's name: letters, digits, ``_ . -``, no folder, not hidden, not ``..``."""
    return isinstance(name, str) and bool(_FILE_NAME.fullmatch(name)) and name not in (".", "..")


def _kind(v: Any) -> str:
    return "null" if v is None else {bool: "boolean", int: "integer", float: "number", str: "string",
                                     list: "list", dict: "object"}.get(type(v), type(v).__name__)


class Rule:
    """A type with constraints; ``check`` raises BundleError naming the field path."""

    expected = "a value"

    def check(self, value: Any, path: str, source: str) -> None:
        if not self.ok(value):
            raise BundleError(f"{source}: manifest field {path} must be {self.expected}, "
                              f"got {_kind(value)} {_short(value)}")

    def ok(self, value: Any) -> bool:  # pragma: no cover - every rule overrides it
        return True


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Const(Rule):
    value: Any

    def __post_init__(self) -> None:
        self.expected = repr(self.value)

    def ok(self, v: Any) -> bool:
        return type(v) is type(self.value) and v == self.value


@dataclass
class OneOf(Rule):
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        self.expected = f"one of {list(self.values)}"

    def ok(self, v: Any) -> bool:
        return isinstance(v, str) and v in self.values


@dataclass
class Int(Rule):
    lo: int
    hi: int

    def __post_init__(self) -> None:
        self.expected = f"an integer in [{self.lo}, {self.hi}]"

    def ok(self, v: Any) -> bool:
        return type(v) is int and self.lo <= v <= self.hi


@dataclass
class Num(Rule):
    """A finite JSON number (integer or float, not a boolean) in ``[lo, hi]``."""
    lo: float = -1e300
    hi: float = 1e300

    def __post_init__(self) -> None:
        self.expected = f"a number in [{self.lo:g}, {self.hi:g}]"

    def ok(self, v: Any) -> bool:
        return type(v) in (int, float) and self.lo <= v <= self.hi


@dataclass
class Str(Rule):
    pattern: str = r".{0,4096}"

    def __post_init__(self) -> None:
        self.expected = f"a string matching {self.pattern}"

    def ok(self, v: Any) -> bool:
        return isinstance(v, str) and re.fullmatch(self.pattern, v, re.DOTALL) is not None


@dataclass
class Nullable(Rule):
    rule: Rule

    def __post_init__(self) -> None:
        self.expected = f"null or {self.rule.expected}"

    def check(self, value: Any, path: str, source: str) -> None:
        if value is not None:
            self.rule.check(value, path, source)


@dataclass
class Either(Rule):
    """The first of ``rules`` whose type matches decides (e.g. a string, or an object of metrics)."""
    rules: tuple[Rule, ...]
    types: tuple[type, ...]

    def __post_init__(self) -> None:
        self.expected = " or ".join(r.expected for r in self.rules)

    def check(self, value: Any, path: str, source: str) -> None:
        for rule, t in zip(self.rules, self.types):
            if type(value) is t:
                return rule.check(value, path, source)
        super().check(value, path, source)

    def ok(self, v: Any) -> bool:
        return False


@dataclass
class List(Rule):
    item: Rule
    min_len: int = 0
    max_len: int = 1024
    exact: list[Any] | None = None

    def __post_init__(self) -> None:
        self.expected = (f"the list {self.exact}" if self.exact is not None else
                         f"a list of {self.min_len}..{self.max_len} items, each {self.item.expected}")

    def check(self, value: Any, path: str, source: str) -> None:
        if not (isinstance(value, list) and self.min_len <= len(value) <= self.max_len):
            super().check(value, path, source)
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]", source)
        if self.exact is not None and value != self.exact:
            super().check(value, path, source)

    def ok(self, v: Any) -> bool:
        return False


@dataclass
class Obj(Rule):
    """A JSON object: ``required`` and ``optional`` fields by name; other keys are allowed and ignored."""
    required: dict[str, Rule] = field(default_factory=dict)
    optional: dict[str, Rule] = field(default_factory=dict)
    values: Rule | None = None            # every value (for maps keyed by data: files, validation, ...)
    keys: Callable[[str], bool] | None = None
    keys_expected: str = ""
    max_keys: int = 256

    expected = "an object"

    def check(self, value: Any, path: str, source: str) -> None:
        if not isinstance(value, dict):
            super().check(value, path, source)
        if len(value) > self.max_keys:
            raise BundleError(f"{source}: manifest field {path} has {len(value)} entries; expected at most "
                              f"{self.max_keys}")
        missing = [k for k in self.required if k not in value]
        if missing:
            where = f"manifest field {path}" if path else "manifest"
            raise BundleError(f"{source}: {where} lacks required fields {missing}")
        for key, v in value.items():
            sub = f"{path}.{key}" if path else key
            if self.keys is not None and not self.keys(key):
                raise BundleError(f"{source}: manifest field {path} has the key {_short(key)}; expected "
                                  f"{self.keys_expected}")
            rule = self.required.get(key) or self.optional.get(key) or self.values
            if rule is not None:
                rule.check(v, sub, source)

    def ok(self, v: Any) -> bool:
        return False


@dataclass
class ByKey(Rule):
    """An object checked by the rule that the value of its field ``key`` selects (``default`` when absent)."""
    key: str
    default: int
    options: dict[int, Obj]

    expected = "an object"

    def check(self, value: Any, path: str, source: str) -> None:
        if not isinstance(value, dict):
            super().check(value, path, source)
        k = value.get(self.key, self.default)
        rule = self.options.get(k) if type(k) is int else None
        if rule is None:
            raise BundleError(f"{source}: manifest field {path}.{self.key} must be one of {list(self.options)}, "
                              f"got {_kind(k)} {_short(k)}")
        rule.check(value, path, source)

    def ok(self, v: Any) -> bool:
        return False


FINITE = Num()
FILE_ENTRY = Obj(required={"sha256": Str(r"[0-9a-f]{64}"), "bytes": Int(0, MAX_FILE_BYTES)})
METRICS = Obj(required={"accuracy": Num(0, 100), "ci95": Num(0, 100), "episodes": Int(0, 10**9)},
              optional={"queries": Int(0, 10**9)})
SIDE = Int(1, MAX_SIDE)
UNIT_RANGE = List(FINITE, 2, 2, exact=[0, 1])
# version 1, and version-2 single-channel bundles
GREY_PREPROCESS = Obj(required={"size": List(SIDE, 2, 2), "resize": OneOf(RESIZE_FILTERS)},
                      optional={"channels": Const(1), "ink": Const("high"), "value_range": UNIT_RANGE})
# version-2 colour bundles (normalisation, if any, lives inside backbone.onnx; no ink)
COLOUR_PREPROCESS = Obj(required={"channels": Const(3), "channel_order": Const("RGB"), "size": List(SIDE, 2, 2),
                                  "fit": Const("centre_crop"), "resize": Const("box_int"),
                                  "normalization": Const("in_graph")},
                        optional={"value_range": UNIT_RANGE})

SCHEMA = Obj(
    required={
        "format": Const(FORMAT_NAME),
        "format_version": Int(min(READABLE_VERSIONS), max(READABLE_VERSIONS)),
        "method": OneOf(tuple(HEAD_OUTPUTS)),
        "input": Obj(required={"shape": List(Nullable(Int(-1, MAX_SIDE)), 4, 4)},
                     optional={"name": Const("images"), "dtype": Const("float32"), "range": UNIT_RANGE}),
        "preprocess": ByKey("channels", 1, {1: GREY_PREPROCESS, 3: COLOUR_PREPROCESS}),
        "embedding": Obj(required={"dim": Int(1, MAX_DIM)},
                         optional={"name": Const("embeddings"),
                                   "shift_views": List(List(Int(-8, 8), 2, 2), 1, 81)}),
        "head": Obj(required={"method": OneOf(tuple(HEAD_OUTPUTS)), "outputs": List(Str(r"[a-z_]{1,32}"), 1, 8)}),
        "graphs": Obj(required={role: Const(name) for role, name in GRAPH_FILES.items()},
                      optional={"backbone_int8": Const(INT8_GRAPH)}),
        "files": Obj(values=FILE_ENTRY, keys=plain_file_name, max_keys=MAX_FILES,
                     keys_expected="plain file names (letters, digits, '_', '.', '-'; no folder, not hidden)"),
        "provenance": Obj(optional={"dataset": Nullable(Str(r".{0,256}")), "split": Str(r".{0,256}"),
                                    "backbone": Nullable(Str(r".{0,256}"))}),
        "validation": Obj(values=Either((Str(), METRICS), (str, dict))),
        "integrity": Obj(required={"manifest_sha256": Str(r"[0-9a-f]{64}")}),
    },
    optional={
        "limits": Obj(optional={"min_ways": Int(2, MAX_WAYS), "max_ways": Int(2, MAX_WAYS),
                                "min_shots": Int(1, 10**6)}),
        "open_set": Obj(optional={"score": Const("max_logit"),
                                  "threshold_by_shots": Obj(values=FINITE, keys=lambda k: bool(_SHOTS_KEY.fullmatch(k)),
                                                            keys_expected="shot counts ('1', '5', ...)")}),
        "parity": Obj(),
        "precision": Obj(optional={"default": OneOf(("fp32", "int8")), "int8_accuracy_drop": Num(-100, 100),
                                   "int8_speedup": Num(0, 1e6), "min_speedup": Num(0, 1e6), "int8": Obj()}),
    },
)


@dataclass(frozen=True)
class Section:
    """A version-3 capability section: ``rule`` checks its fields, ``relate`` (optional) its relation to
    the rest of the manifest (``relate(manifest, source)`` raises BundleError); ``methods``: the methods
    whose bundles cannot work without it (a manifest naming one without the section is refused)."""
    rule: Rule
    relate: Callable[[Mapping[str, Any], str], None] | None = None
    methods: tuple[str, ...] = ()
    # base fields whose rule the section replaces (e.g. vector inputs replace input and preprocess); the
    # image cross-field rules are skipped for a replaced input, the head-output table for a replaced head
    replaces: Mapping[str, Rule] = field(default_factory=dict)
    graphs: Mapping[str, str] | None = None      # the fixed graph files when they are not GRAPH_FILES


def _relate_refine(m: Mapping[str, Any], source: str) -> None:
    if m["method"] != "proto":
        raise BundleError(f"{source}: manifest section refine needs method 'proto' (it refines prototypes), "
                          f"got {m['method']!r}")
    if m["refine"]["outputs"] != m["head"]["outputs"]:
        raise BundleError(f"{source}: manifest field refine.outputs is {m['refine']['outputs']}; expected "
                          f"head.outputs {m['head']['outputs']}")
    if m["refine"]["graph"] not in m["files"]:
        raise BundleError(f"{source}: manifest must list the refine graph ({m['refine']['graph']}) under files")


REFINE_GRAPH = "refine.onnx"


def _relate_recurrent(m: Mapping[str, Any], source: str) -> None:
    if m["method"] != "recurrent":
        raise BundleError(f"{source}: manifest section recurrent needs method 'recurrent', got {m['method']!r}")
    if m["recurrent"]["outputs"] != m["head"]["outputs"]:
        raise BundleError(f"{source}: manifest field recurrent.outputs is {m['recurrent']['outputs']}; expected "
                          f"head.outputs {m['head']['outputs']}")
    if m["recurrent"]["graph"] not in m["files"]:
        raise BundleError(f"{source}: manifest must list the recurrent update graph ({m['recurrent']['graph']}) "
                          f"under files")


RECURRENT_GRAPH = "update.onnx"
RECURRENT_RULES = ("gru_class_memory", "gru_class_mean")
MAX_VECTOR_DIM = 1 << 16     # vector_input.dim
MAX_TARGETS = 1024           # regression.outputs
REGRESSION_GRAPH_FILES = {"backbone": "backbone.onnx", "adapt": "adapt.onnx", "predict": "predict.onnx"}
REGRESSION_HEAD_OUTPUTS = {"alpaca": ["weight", "covariance", "noise_variance"], "metasgd": ["weight"]}
REGRESSION_UNCERTAINTY = {"alpaca": "predictive_variance", "metasgd": "none"}
VECTOR_INPUT = Obj(required={"shape": List(Nullable(Int(-1, MAX_VECTOR_DIM)), 2, 2)},
                   optional={"name": Const("inputs"), "dtype": Const("float32"), "kind": Const("vectors")})
VECTOR_PREPROCESS = Obj(required={"kind": Const("vectors")})
REGRESSION_METRICS = Obj(required={"mse": Num(0, 1e300), "ci95": Num(0, 1e300), "tasks": Int(0, 10**9)},
                         optional={"support": Int(0, 10**9), "queries": Int(0, 10**9)})


def _relate_vector_input(m: Mapping[str, Any], source: str) -> None:
    shape, dim = m["input"]["shape"], m["vector_input"]["dim"]
    if shape[0] not in (None, -1) or type(shape[0]) is bool or shape[1] != dim:
        raise BundleError(f"{source}: manifest input.shape {shape} must be [null or -1, vector_input.dim] = "
                          f"[-1, {dim}]")
    names = m["vector_input"].get("feature_names")
    if names is not None and len(names) != dim:
        raise BundleError(f"{source}: manifest field vector_input.feature_names has {len(names)} names; expected "
                          f"vector_input.dim = {dim}")


def _relate_regression(m: Mapping[str, Any], source: str) -> None:
    method, reg = m["method"], m["regression"]
    want = REGRESSION_HEAD_OUTPUTS[method]
    if m["head"]["outputs"] != want:
        raise BundleError(f"{source}: manifest field head.outputs is {m['head']['outputs']} but regression method "
                          f"{method!r} has the head parameters {want}")
    if reg["uncertainty"] != REGRESSION_UNCERTAINTY[method]:
        raise BundleError(f"{source}: manifest field regression.uncertainty is {reg['uncertainty']!r}; method "
                          f"{method!r} gives {REGRESSION_UNCERTAINTY[method]!r}")
    names = reg.get("target_names")
    if names is not None and len(names) != reg["outputs"]:
        raise BundleError(f"{source}: manifest field regression.target_names has {len(names)} names; expected "
                          f"regression.outputs = {reg['outputs']}")
# Version-3 sections, one entry per capability: top-level manifest key -> Section.
V3_SECTIONS: dict[str, Section] = {
    # semi-supervised refinement (docs/semi-supervised.md): labelled support + unlabelled embeddings -> prototypes
    "refine": Section(Obj(required={"graph": Const(REFINE_GRAPH), "rule": Const("masked_soft_kmeans"),
                                    "outputs": List(Str(r"[a-z_]{1,32}"), 1, 8), "max_unlabeled": Int(1, 10**6)},
                          optional={"steps": Int(1, 16), "distractor": Obj(), "calibrated_on": Str(r".{0,512}")}),
                      _relate_refine),
    # recurrent class memory (docs/recurrent.md): memory [C, H] + new samples -> memory, head, in constant time a sample
    # (rule gru_class_memory: the memory is the GRU state; gru_class_mean: GRU state, class mean, count)
    "recurrent": Section(Obj(required={"graph": Const(RECURRENT_GRAPH), "rule": OneOf(RECURRENT_RULES),
                                       "hidden": Int(1, 1 << 15), "outputs": List(Str(r"[a-z_]{1,32}"), 1, 8)},
                             optional={"gru_hidden": Int(1, 1 << 14)}),
                         _relate_recurrent, methods=("recurrent",)),
    # vector inputs [N, D] (docs/regression.md): the normalisation lives inside backbone.onnx
    "vector_input": Section(Obj(required={"dim": Int(1, MAX_VECTOR_DIM), "normalization": Const("in_graph")},
                                optional={"feature_names": List(Str(r".{1,64}"), 1, MAX_VECTOR_DIM)}),
                            _relate_vector_input, replaces={"input": VECTOR_INPUT, "preprocess": VECTOR_PREPROCESS}),
    # regression heads adapted from sufficient statistics (docs/regression.md): predict.onnx instead of classify.onnx
    "regression": Section(Obj(required={"outputs": Int(1, MAX_TARGETS),
                                        "uncertainty": OneOf(("predictive_variance", "none")),
                                        "statistics": Const("feature_gram,feature_targets")},
                              optional={"target_names": List(Str(r".{1,64}"), 1, MAX_TARGETS)}),
                          _relate_regression, methods=("alpaca",),
                          replaces={"method": OneOf(tuple(REGRESSION_HEAD_OUTPUTS)),
                                    "head": Obj(required={"method": OneOf(tuple(REGRESSION_HEAD_OUTPUTS)),
                                                          "outputs": List(Str(r"[a-z_]{1,32}"), 1, 8)}),
                                    "graphs": Obj(required={r: Const(n) for r, n in REGRESSION_GRAPH_FILES.items()}),
                                    "validation": Obj(values=Either((Str(), REGRESSION_METRICS), (str, dict)))},
                          graphs=REGRESSION_GRAPH_FILES),
}


def replaced_rules(m: Mapping[str, Any]) -> dict[str, Rule]:
    """Base fields whose rule a present version-3 section replaces -> that rule."""
    return {k: r for name, sec in V3_SECTIONS.items() if name in m for k, r in sec.replaces.items()}


def graph_files(m: Mapping[str, Any]) -> Mapping[str, str]:
    """The fixed graph files (role -> name) of a manifest: :data:`GRAPH_FILES` unless a section says otherwise."""
    for name, sec in V3_SECTIONS.items():
        if name in m and sec.graphs is not None:
            return sec.graphs
    return GRAPH_FILES


def writer_version(manifest: Mapping[str, Any]) -> int:
    """The lowest format version that expresses ``manifest``: 3 when it holds a version-3 section, else 2."""
    return SECTION_VERSION if any(name in manifest for name in V3_SECTIONS) else FORMAT_VERSION


def _cross_field_rules(m: Mapping[str, Any], source: str) -> None:
    """The rules that relate two fields (the declarative part checks each field alone)."""
    replaced = replaced_rules(m)
    if m["head"]["method"] != m["method"]:
        raise BundleError(f"{source}: manifest field head.method is {m['head']['method']!r} but method is "
                          f"{m['method']!r}; expected the same")
    want = HEAD_OUTPUTS.get(m["method"])
    if "head" not in replaced and m["head"]["outputs"] != want:
        raise BundleError(f"{source}: manifest field head.outputs is {m['head']['outputs']} but method "
                          f"{m['method']!r} has the head parameters {want}")
    for role, name in m["graphs"].items():
        if isinstance(name, str) and name not in m["files"]:
            raise BundleError(f"{source}: manifest must list graph {role!r} ({name}) under files")
    limits = m.get("limits", {})
    if limits.get("min_ways", 2) > limits.get("max_ways", MAX_WAYS):
        raise BundleError(f"{source}: manifest limits.min_ways {limits['min_ways']} exceeds limits.max_ways "
                          f"{limits['max_ways']}")
    if "input" in replaced:              # a section's relate checks the input it describes
        return
    shape, spec = m["input"]["shape"], m["preprocess"]
    batch = (None,) if m["format_version"] == 1 else (None, -1)
    channels = spec.get("channels", 1)
    if shape[0] not in batch or type(shape[0]) is bool or shape[1:] != [channels, *spec["size"]]:
        first = "null" if m["format_version"] == 1 else "null or -1"
        raise BundleError(f"{source}: manifest input.shape {shape} must be [{first}, channels, *preprocess.size] = "
                          f"[{first}, {channels}, {spec['size'][0]}, {spec['size'][1]}]")
    if channels != 1 and "ink" in spec:
        raise BundleError(f"{source}: manifest field preprocess.ink is set in a colour bundle; expected no ink "
                          f"field (ink applies to single-channel bundles only)")


def _version_rules(m: Mapping[str, Any], source: str) -> None:
    """What one format version forbids that a later one allows: version 1 knows single-channel bundles only;
    versions 1 and 2 know no version-3 section."""
    version = m.get("format_version")
    if type(version) is int and version < SECTION_VERSION:
        for name in V3_SECTIONS:
            if name in m:
                raise BundleError(f"{source}: manifest section {name} needs format version {SECTION_VERSION}, but "
                                  f"format_version is {version} (a version-{version} reader would ignore it)")
    spec = m.get("preprocess")
    if m.get("format_version") == 1 and isinstance(spec, dict) and spec.get("channels", 1) != 1:
        raise BundleError(f"{source}: manifest field preprocess.channels must be 1 in a format-version-1 bundle, "
                          f"got {_kind(spec['channels'])} {_short(spec['channels'])} (colour bundles are version 2)")


def validate_manifest(manifest: Any, source: str = "bundle") -> dict[str, Any]:
    """Check a parsed manifest against :data:`SCHEMA` and the cross-field rules; returns it unchanged.

    Raises :class:`BundleError` ``"{source}: manifest field <path> must be <expected>, got ..."``.
    """
    if isinstance(manifest, dict):
        _version_rules(manifest, source)
    replaced = replaced_rules(manifest) if isinstance(manifest, dict) else {}
    schema = SCHEMA if not replaced else Obj(required={**SCHEMA.required, **replaced}, optional=SCHEMA.optional)
    schema.check(manifest, "", source)
    _cross_field_rules(manifest, source)
    for name, section in V3_SECTIONS.items():
        if name in manifest:
            section.rule.check(manifest[name], name, source)
            if section.relate is not None:
                section.relate(manifest, source)
        elif manifest["method"] in section.methods:
            raise BundleError(f"{source}: method {manifest['method']!r} needs the manifest section {name} (format "
                              f"version {SECTION_VERSION}); re-export the bundle")
    return manifest


def schema_paths(rule: Rule | None = None, prefix: str = "") -> list[str]:
    """Every named field of the schema and of the version-3 sections as a dotted path (``preprocess.ink``,
    ``refine.graph``, ...): the docs name each."""
    if rule is None:
        return schema_paths(SCHEMA) + [p for name, sec in V3_SECTIONS.items()
                                        for p in (name, *schema_paths(sec.rule, name))]
    out: list[str] = []
    if isinstance(rule, ByKey):
        for sub in rule.options.values():
            out += [p for p in schema_paths(sub, prefix) if p not in out]
    elif isinstance(rule, Obj):
        for key, sub in {**rule.required, **rule.optional}.items():
            path = f"{prefix}.{key}" if prefix else key
            out += [path, *schema_paths(sub, path)]
    return out
