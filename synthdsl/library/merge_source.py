"""``merge("resnet18", method="ties", base=..., models=[...])``: a source whose weights are
merged in weight space from several checkpoints of one architecture.

The architecture comes from a zoo (``zoo="timm"`` by default, or ``"torchvision"``) with
its own options (``num_classes=10``); the merge's options are

=============  =========================================================================
``method``     ``linear``, ``task_arithmetic``, ``ties``, ``dare_ties``, ``dare_linear``,
               ``slerp`` (:mod:`synthdsl.library.merging`)
``models``     the checkpoints merged (a list of paths; ``slerp`` takes exactly two)
``base``       the checkpoint task vectors start from (required by the task methods;
               with ``parts=``, what the other tensors are taken from)
``weights``    one number per model (default 1 each); ``linear`` divides by their sum
``density``    the fraction of each task vector kept (``ties``, ``dare_*``), in (0, 1]
``scale``      λ, how much of the merged task vector is added (task methods)
``t``          ``slerp``'s position between its two models, in [0, 1]
``seed``       DARE's random drop (a whole number; the same seed gives the same merge)
``rescale``    how DARE scales what it keeps: ``"l1"`` (default), ``"density"``, ``"none"``
``normalize``  divide the sum by the weights (``linear``, task methods)
``parts``      globs over tensor names (``["layer3.*", "fc"]``): only these are merged
``rename``     ``[regex, replacement, ...]``: the input files' tensor names renamed to
               the architecture's (files saved by other code), as ``inherit`` does
``map``        ``"name"`` (default) or ``"order"``: a ``.pt``/``.pth`` file's tensors paired
               with the architecture's in the order the file keeps (same count required)
=============  =========================================================================

Everything is checked from the files' headers before a tensor is read: each file exists
and holds exactly the architecture's tensors with their shapes and dtype kinds, the
options are in range, the patterns of ``parts=`` select tensors. The merged weights
are computed one tensor at a time as the compiler (or ``synth merge``) asks for them
(:class:`MergeReader`): memory holds the result and one tensor of each input. Each
tensor's provenance names the method, its options and every input file with its sha256;
``synth lock`` covers every input.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
import math
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from synthdsl.lang.errors import SynthError, did_you_mean
from synthdsl.library.checkpoints import ReaderCache, TensorReader, file_sha256, reason
from synthdsl.library.merging import METHODS, RESCALES, merge_tensor
from synthdsl.library.rename import Renamer, RenameError, rename_problem
from synthdsl.library.sources import (SourceKind, compare_state, model_state_dtypes,
                                      model_state_shapes, register_source_kind, source_kind)
from synthdsl.library.weights import dtype_problems

#: The options a merge takes itself; every other option is the architecture's.
MERGE_OPTIONS = ("method", "models", "base", "weights", "density", "scale", "t", "seed",
                 "normalize", "rescale", "parts", "rename", "map", "zoo")
#: The zoos a merge builds its architecture from.
ZOOS = ("timm", "torchvision")


def arch_node(node: Mapping[str, Any]) -> dict:
    """The node of the architecture alone, as its zoo's kind reads it: no weights."""
    zoo = node.get("options", {}).get("zoo", "timm")
    return {**node, "constructor": zoo, "weights": None, "pretrained": False,
            "create_kwargs": {k: v for k, v in node.get("create_kwargs", {}).items()
                              if k not in MERGE_OPTIONS}}


def _span(node, option: str):
    return node.get("option_spans", {}).get(option) or node.get("span")


def files_of(node: Mapping[str, Any], option: str) -> list[dict]:
    """The resolved files of a path option (``base``, ``models``), in order."""
    return [f for f in node.get("files", ()) if f["option"] == option]


def pattern_matches(name: str, pattern: str) -> bool:
    """A glob over tensor names; a pattern naming a module covers everything below it."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


#: The zoo kind that built each merge source's model (its stages, cuts, preprocessing).
_ZOO_OF: "weakref.WeakKeyDictionary[nn.Module, SourceKind]" = weakref.WeakKeyDictionary()


def renamed_keys(node: Mapping[str, Any], keys, model_keys=None) -> dict[str, str]:
    """The architecture's name of each tensor of an input file (``rename=`` applied; a key
    no pattern matches keeps its name; with ``map="order"`` the i-th key of the file is the
    i-th of `model_keys`): file key -> model key. Raises RenameError."""
    if node.get("options", {}).get("map") == "order":
        return dict(zip(keys, model_keys or ()))
    rename = node.get("options", {}).get("rename")
    if not rename:
        return {k: k for k in keys}
    renamer = Renamer(list(rename))
    return {k: renamer(k) or k for k in keys}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def options_problem(node: Mapping[str, Any]) -> SynthError | None:
    """The merge's own options, checked without reading a file (S402 at the option)."""
    opts = node.get("options", {})
    name = f"merge('{node['target']}')"

    def bad(option: str, message: str, hint: str | None = None) -> SynthError:
        return SynthError("S402", f"{name} {message}", _span(node, option), hint=hint)

    if "pretrained" in opts:
        return bad("pretrained", "takes its weights from models= (and base=), not pretrained=",
                   hint="the hub's weights can be one of the models once saved to a file")
    method = opts.get("method")
    if method is None:
        return SynthError("S402", f"{name} needs method=", node.get("span"),
                          hint="one of " + ", ".join(METHODS))
    if method not in METHODS:
        return bad("method", f"has no method {method!r}",
                   did_you_mean(str(method), tuple(METHODS)) or "one of " + ", ".join(METHODS))
    zoo = opts.get("zoo", "timm")
    if zoo not in ZOOS:
        return bad("zoo", f"builds its architecture from zoo= {' or '.join(ZOOS)}, found {zoo!r}")
    models = files_of(node, "models")
    if not models and "models" in opts:  # not paths: the graph has said so at the option
        return None
    if not models:
        return SynthError("S402", f"{name} needs models=[...]: the checkpoints it merges",
                          node.get("span"))
    if method == "slerp" and len(models) != 2:
        return bad("models", f"with method 'slerp' interpolates between exactly two models, "
                   f"found {len(models)}")
    base = files_of(node, "base")
    if METHODS[method]["base"] and not base:
        return SynthError("S402", f"{name} with method {method!r} needs base=: the "
                          "checkpoint its task vectors start from", node.get("span"))
    if "parts" in opts and not base:
        return bad("parts", "takes the tensors parts= does not select from base=, and "
                   "names no base", hint='add base="..."')
    if len(base) > 1:
        return bad("base", "takes one base checkpoint, found a list")
    weights = opts.get("weights")
    if weights is not None:
        if method == "slerp":
            return bad("weights", "with method 'slerp' takes t=, not weights=")
        if not isinstance(weights, (list, tuple)) or not all(_is_number(w) for w in weights):
            return bad("weights", f"weights= expects a list of numbers, found {weights!r}")
        if len(weights) != len(models):
            return bad("weights", f"weights= has {len(weights)} number(s) for "
                       f"{len(models)} model(s)")
        if method == "linear" and opts.get("normalize", True) and abs(sum(weights)) < 1e-12:
            return bad("weights", "weights= sum to 0: a weighted average divides by their sum",
                       hint="normalize=false keeps the plain weighted sum")
        if any(w < 0 for w in weights) and method == "linear":
            return bad("weights", "weights= of a weighted average must be ≥ 0, found "
                       f"{list(weights)}")
    allowed = {"linear": {"normalize"}, "slerp": {"t"},
               "task_arithmetic": {"scale", "normalize"},
               "ties": {"density", "scale", "normalize"},
               "dare_ties": {"density", "scale", "normalize", "seed", "rescale"},
               "dare_linear": {"density", "scale", "normalize", "seed", "rescale"}}[method]
    for option in ("density", "scale", "t", "seed", "normalize", "rescale"):
        if option in opts and option not in allowed:
            return bad(option, f"with method {method!r} takes no {option}=",
                       hint="its options: " + ", ".join(sorted(allowed | {"weights"}))
                       if method != "slerp" else "its option: t")
    checks = {"density": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
              "scale": (_is_number, "a finite number"),
              "t": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
              "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool)
                       and 0 <= v < 2 ** 31, "a whole number in [0, 2^31)"),
              "normalize": (lambda v: isinstance(v, bool), "true or false"),
              "rescale": (lambda v: v in RESCALES, " or ".join(f'"{r}"' for r in RESCALES))}
    for option, (ok, want) in checks.items():
        if option in opts and not ok(opts[option]):
            return bad(option, f"{option}= expects {want}, found {opts[option]!r}")
    rename = opts.get("rename")
    if rename is not None:
        items = list(rename) if isinstance(rename, (list, tuple)) else [rename]
        if (problem := rename_problem(items)) is not None:
            return bad("rename", problem.replace("inherit rename=", "rename="))
    if opts.get("map", "name") not in ("name", "order"):
        return bad("map", f'map= expects "name" or "order", found {opts["map"]!r}')
    if opts.get("map") == "order" and rename is not None:
        return bad("map", 'pairs tensors by rename= or by map="order", not both')
    if opts.get("map") == "order":
        for f in node.get("files", ()):
            if f["path"].endswith(".safetensors"):
                return bad("map", f"map=\"order\": a safetensors file ('{f['text']}') does "
                           "not keep the order of its tensors, so it cannot be mapped by order",
                           hint="map it by name with rename=[...], or use the .pt/.pth file")
    parts = opts.get("parts")
    if parts is not None and (not isinstance(parts, (list, tuple)) or not parts
                              or not all(isinstance(p, str) and p for p in parts)):
        return bad("parts", f"parts= expects a list of name patterns, found {parts!r}")
    return None


def running_statistics(model: nn.Module) -> list[str]:
    """The state names of normalisation layers' running means and variances: averaged
    across models by every method (:func:`synthdsl.library.merging.merge_tensor`)."""
    return [f"{name}.{buf}" if name else buf for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._NormBase)
            for buf in ("running_mean", "running_var") if getattr(m, buf, None) is not None]


class MergeReader(TensorReader):
    """The merged tensors of a merge source, each computed when it is asked for from one
    tensor of each input file (through the run's readers)."""

    def __init__(self, node: Mapping[str, Any], readers: ReaderCache,
                 shapes: Mapping[str, tuple[int, ...]],
                 dtypes: Mapping[str, torch.dtype], statistics: Sequence[str] = ()) -> None:
        self.node = node
        opts = node.get("options", {})
        self.method = opts["method"]
        self.options = {k: v for k, v in opts.items()
                        if k in ("weights", "density", "scale", "t", "seed", "normalize",
                                 "rescale")}
        self.parts = tuple(opts.get("parts") or ())
        self._base = [readers.open(f["path"]) for f in files_of(node, "base")]
        self._models = [readers.open(f["path"]) for f in files_of(node, "models")]
        # model key -> the file's own key, per input (the same names unless rename=)
        self._keys = {id(r): {m: k for k, m in renamed_keys(node, r.keys(), list(shapes)).items()}
                      for r in self._base + self._models}
        self._shapes, self._dtypes = dict(shapes), dict(dtypes)
        self._statistics = set(statistics)
        self._inputs = None

    def keys(self) -> list[str]:
        return list(self._shapes)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def dtypes(self) -> dict[str, torch.dtype]:
        return dict(self._dtypes)

    def merged(self, key: str) -> bool:
        """Whether `key` is merged (or taken from the base, outside ``parts=``)."""
        return not self.parts or any(pattern_matches(key, p) for p in self.parts)

    def get(self, key: str) -> torch.Tensor:
        if key not in self._shapes:
            raise KeyError(key)
        base = self._read(self._base[0], key) if self._base else None
        if not self.merged(key):
            return base
        ts = [self._read(r, key) for r in self._models]
        out = merge_tensor(self.method, key, base, ts, self.options,
                           statistic=key in self._statistics)
        return out.to(self._dtypes[key])

    def _read(self, reader: TensorReader, key: str) -> torch.Tensor:
        return reader.get(self._keys[id(reader)].get(key, key))

    def inputs(self) -> list[dict[str, Any]]:
        """Every input file: its role, as the spec writes it, resolved, and its sha256."""
        if self._inputs is None:
            self._inputs = [{"role": f["option"] + (f"[{f['index']}]" if f.get("index")
                                                     is not None else ""),
                             "file": f["path"], "sha256": file_sha256(f["path"])}
                            for f in self.node.get("files", ())]
        return self._inputs

    def origin(self, key: str) -> dict[str, Any]:
        if not self.merged(key):  # outside parts=: the base's tensor
            base = self.inputs()[0]
            return {"origin": "checkpoint", "method": "base", "file": base["file"],
                    "sha256": base["sha256"], "key": key}
        return {"origin": "merge", "method": self.method, "options": dict(self.options),
                "inputs": self.inputs(), "key": key}


class MergeKind(SourceKind):
    """``merge("resnet18", method=..., models=[...], base=...)``: see the module."""

    name = "merge"
    path_options = ("base", "models")
    own_options = ("weights",)

    def zoo(self, node) -> SourceKind:
        return source_kind(node.get("options", {}).get("zoo", "timm"))

    def check(self, node):
        return options_problem(node) or self.zoo(node).check(arch_node(node))

    def build(self, node, device="cpu", load_weights=True):
        zoo = self.zoo(node)
        model = zoo.build(arch_node(node), "meta" if str(device) == "meta" else device,
                          load_weights=False)
        _ZOO_OF[model] = zoo
        if str(device) == "meta" or not load_weights:
            return model
        reader = self.reader(node, ReaderCache(), model)
        state = {k: reader.get(k) for k in reader.keys()}
        model.load_state_dict(state, strict=True)
        return model.eval()

    def weights_problem(self, node, model, readers=None):
        readers = readers if readers is not None else ReaderCache()
        shapes, dtypes = model_state_shapes(model), model_state_dtypes(model)
        for f in node.get("files", ()):
            where = f["option"] + (f"[{f['index']}]" if f.get("index") is not None else "")
            path = Path(f["path"])
            if not path.exists():
                return SynthError("S203", f"{where}: weights file '{f['text']}' does not exist",
                                  f["span"], hint="a relative path starts at the spec's "
                                                  "own folder")
            try:
                found, kinds = readers.shapes(path), readers.dtypes(path)
            except Exception as e:  # noqa: BLE001 - any failure to read is the user's file
                return SynthError("S203", f"{where}: cannot read weights file "
                                  f"'{f['text']}': {reason(e)}", f["span"])
            if node.get("options", {}).get("map") == "order" and len(found) != len(shapes):
                return SynthError("S205", f"{where}: weights file '{f['text']}' holds "
                                  f"{len(found)} tensors and "
                                  f"{node.get('options', {}).get('zoo', 'timm')}"
                                  f"('{node['target']}') has {len(shapes)}: map=\"order\" pairs "
                                  "them one by one", f["span"])
            try:
                names = renamed_keys(node, list(found), list(shapes))
            except RenameError as e:
                return SynthError("S402", f"merge('{node['target']}') {e}",
                                  _span(node, "rename"))
            twice = sorted(m for m, n in Counter(names.values()).items() if n > 1)
            if twice:
                return SynthError("S402", f"{where}: rename= gives {len(twice)} name(s) to two "
                                  f"tensors of '{f['text']}': " + ", ".join(twice[:3]),
                                  _span(node, "rename"))
            found = {names[k]: v for k, v in found.items()}
            kinds = {names[k]: v for k, v in kinds.items()}
            problems = compare_state(shapes, found) or dtype_problems(dtypes, kinds)
            if problems:
                return SynthError("S205", f"{where}: weights file '{f['text']}' does not fit "
                                  f"{node.get('options', {}).get('zoo', 'timm')}"
                                  f"('{node['target']}')", f["span"], notes=problems[:6],
                                  hint="every model of a merge is a checkpoint of the same "
                                       "architecture, with the same options")
        for pattern in node.get("options", {}).get("parts") or ():
            if not any(pattern_matches(k, pattern) for k in shapes):
                return SynthError("S402", f"merge('{node['target']}') parts= pattern "
                                  f"'{pattern}' selects no tensor of the model",
                                  _span(node, "parts"),
                                  hint=did_you_mean(pattern.split(".")[0],
                                                    sorted({k.split(".")[0] for k in shapes}))
                                  or "patterns are globs over state_dict() names")
        return None

    def has_reader(self, node) -> bool:
        return True

    def reader(self, node, readers: ReaderCache, model: nn.Module | None = None
               ) -> MergeReader:
        model = model if model is not None else self.build(node, "meta")
        return MergeReader(node, readers, model_state_shapes(model), model_state_dtypes(model),
                           running_statistics(model))

    def plan(self, model, node, exclusive=True):
        return self.zoo(node).plan(model, arch_node(node), exclusive)

    def feature_info(self, model):
        # the architecture's stages: the zoo kind that built `model` knows them
        return self._zoo_of(model).feature_info(model)

    def node_names(self, model):
        return self._zoo_of(model).node_names(model)

    def data_config(self, model):
        return self._zoo_of(model).data_config(model)

    @staticmethod
    def _zoo_of(model: nn.Module) -> SourceKind:
        return _ZOO_OF.get(model) or source_kind("timm")


register_source_kind(MergeKind())
