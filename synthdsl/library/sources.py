"""Kinds of source: the one place a new kind of pretrained model plugs in.

A `source` statement names a constructor (``timm("resnet50", ...)``,
``spec("trunk.synth")``). Each constructor is a :class:`SourceKind` in
:data:`SOURCE_KINDS`: it says whether the name exists, builds the model (on the
``meta`` device, or for real with its weights), and knows what the model offers
a spec: its parts (submodules, slices, methods, cuts; :func:`make_plan`), its
stages (``feature_info``), the fx node names it can be cut at, and its
preprocessing (data config). A new kind (Hugging Face, a user's modules) is one
module that subclasses :class:`SourceKind` and calls :func:`register_source_kind`,
imported at the end of this module (``torchvision(...)``,
:mod:`synthdsl.library.torchvision_source`, is one); the check, compiler,
pictures and data all reach models through it and the per-run cache
(:class:`synthdsl.library.cache.Sources`).

>>> kind = source_kind("timm")
>>> model = kind.build({"target": "test_resnet", "create_kwargs": {}}, "meta")
>>> [d["module"] for d in kind.feature_info(model)][:2], kind.node_names(model)[:2]
(['act1', 'layer1'], ['x', 'conv1.0'])
"""

from __future__ import annotations

import functools
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from synthdsl.lang.errors import InternalError, SynthError, did_you_mean
from synthdsl.library.checkpoints import (  # noqa: F401 - read_state_dict, _reason: used here
    ReaderCache, checkpoint_dtypes, checkpoint_shapes, read_state_dict, reason as _reason,
    weights_format)
from synthdsl.library.cuts import graph_node_names
from synthdsl.library.parts import PartPlan, feature_info, make_plan
from synthdsl.library.weights import dtype_problems


class SourceKind(ABC):
    """What synthdsl needs from one kind of source. `node` is the `source` node of the
    graph: ``target`` (the name), ``create_kwargs``, ``weights`` (a resolved path or
    absent), ``pretrained``, and the spans of each."""

    #: The constructor a spec writes: ``timm(...)``.
    name: str = ""

    def check(self, node: Mapping[str, Any]) -> SynthError | None:
        """The name does not exist (with the closest names as hints), else None."""
        return None

    @abstractmethod
    def build(self, node: Mapping[str, Any], device: str | torch.device = "cpu",
              load_weights: bool = True) -> nn.Module:
        """The model, on `device`; on ``meta`` it costs no memory and reads no weights."""

    def weights_problem(self, node: Mapping[str, Any], model: nn.Module,
                        readers: ReaderCache | None = None) -> SynthError | None:
        """The source's weights file does not fit the model (checked from its header)."""
        return None

    def plan(self, model: nn.Module, node: Mapping[str, Any],
             exclusive: bool = True) -> PartPlan:
        """The plan of a part node: what it takes from `model` (see `library.parts`), its
        stages those of :meth:`feature_info`."""
        return make_plan(model, dict(node), exclusive, info=lambda: self.feature_info(model))

    def feature_info(self, model: nn.Module) -> list[dict]:
        """The model's feature stages: module, channels, reduction; [] when it has none."""
        return feature_info(model)

    def node_names(self, model: nn.Module) -> list[str]:
        """The internal nodes a spec can cut the model at (one trace per mode, cached)."""
        return graph_node_names(model)

    def data_config(self, model: nn.Module) -> dict[str, Any] | None:
        """How inputs are prepared for the model: mean, std, interpolation, input size."""
        return None

    #: Options whose values are paths of files the source reads (``merge``'s ``base`` and
    #: ``models``): the graph resolves them from the spec's folder into ``node["files"]``
    #: (option, index, text, path, span), and the lock covers each.
    path_options: tuple[str, ...] = ()
    #: Options the kind reads itself although other kinds give them a common meaning
    #: (``merge``'s ``weights=[...]`` are its models' coefficients, not a file).
    own_options: tuple[str, ...] = ()

    def has_reader(self, node: Mapping[str, Any]) -> bool:
        """Whether the source's tensors come from a reader (:meth:`reader`): the compiler
        then fills the meta model tensor by tensor, reading only what the spec keeps."""
        return bool(node.get("weights"))

    def reader(self, node: Mapping[str, Any], readers: ReaderCache,
               model: nn.Module | None = None):
        """The reader of the source's tensors (by default its weights file, opened once per
        run through `readers`, seen under the model's names where the check found them
        under a prefix or beside a classifier: ``node["weights_view"]``); `model` is its
        meta model when the caller has it."""
        reader = readers.open(node["weights"])
        if node.get("weights_view"):
            from synthdsl.library.weight_keys import KeyView, ViewReader

            keys = list(model.state_dict()) if model is not None else None
            return ViewReader(reader, KeyView.from_dict(node["weights_view"]), keys)
        return reader

    def zoo_weights(self, text: str) -> bool:
        """`weights="..."` names the zoo's own downloadable weights (an enum entry), not a
        local file: the source is then ``pretrained`` with ``zoo_weights`` set to it."""
        return False

    def resolve(self, node: dict, base_dir: Path) -> None:
        """Fill in, as the graph is built, what the source's target names on disk, resolved
        from the spec's folder `base_dir` (``hf("folder")``: the folder, its weights file as
        ``weights``, its config in ``files``), so that the lock covers those files. Only
        the folder's listing is read; by default the target names no file."""

    def restore_hidden(self, model: nn.Module, device: str | torch.device = "cpu") -> bool:
        """Make real, on a model built on meta, the tensors no checkpoint restores (its
        non-persistent buffers), so the compiler can fill the rest tensor by tensor from
        the reader; False where the kind cannot (the model is then built for real)."""
        return False


#: Every kind of source, by the constructor name a spec writes.
SOURCE_KINDS: dict[str, SourceKind] = {}


def register_source_kind(kind: SourceKind) -> SourceKind:
    """Make a kind of source available to specs under ``kind.name``."""
    if not kind.name:
        raise ValueError("a source kind needs a name: the constructor specs write")
    SOURCE_KINDS[kind.name] = kind
    return kind


def source_kind(constructor: str) -> SourceKind | None:
    """The kind behind a constructor name, or None when no kind has that name."""
    return SOURCE_KINDS.get(constructor)


# ---- timm ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def timm_models() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def create_timm(arch: str, kwargs: Mapping[str, Any], device: str | torch.device = "cpu",
                pretrained: bool = False) -> nn.Module:
    """Build a timm model; on ``meta`` it costs no memory and reads no weights."""
    import timm

    with torch.device(device):
        model = timm.create_model(arch, pretrained=pretrained, **dict(kwargs))
    return model.eval()


#: timm keyword arguments that make timm read weights (or a pretrained config naming them)
#: itself, from a file, a folder or a URL: behind the checks of `weights=`, its provenance
#: and `synth lock`. They are refused; `weights="..."` loads a local file.
FILE_KWARGS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
#: What a string option naming a file or URL looks like.
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz", ".h5")


def _names_a_file(value: Any) -> bool:
    if isinstance(value, str):
        return "://" in value or value.lower().endswith(_WEIGHT_SUFFIXES)
    if isinstance(value, (list, tuple)):
        return any(_names_a_file(v) for v in value)
    if isinstance(value, Mapping):
        return any(_names_a_file(v) for v in value.values())
    return False


def check_file_kwargs(node: Mapping[str, Any]) -> SynthError | None:
    """A timm option that would load weights from a file or URL behind `weights=` (S402,
    at the option)."""
    for name, value in node.get("create_kwargs", {}).items():
        if name in FILE_KWARGS or _names_a_file(value):
            span = node.get("option_spans", {}).get(name, node.get("span"))
            meant = did_you_mean(name, ("weights", "pretrained"), n=1)
            if meant is not None and name not in FILE_KWARGS:  # `weigths="w.safetensors"`
                return SynthError("S402", f"{node['constructor']}('{node['target']}') has no "
                                  f"option '{name}'", span, hint=meant)
            what = (f"timm's {name}= would read weights or their configuration itself"
                    if name in FILE_KWARGS else f"{name}={value!r} names a file or URL")
            return SynthError(
                "S402", f"{node['constructor']}('{node['target']}') does not take {name}=: "
                f"{what}, behind the weights checks, their provenance and `synth lock`",
                span, hint='name a local checkpoint with weights="..." (or hub weights with '
                           "pretrained=true)")
    return None


#: Options timm's models commonly take: the names an unknown option is compared with.
COMMON_TIMM_OPTIONS = ("num_classes", "in_chans", "global_pool", "drop_rate", "drop_path_rate",
                       "img_size", "pretrained", "weights", "features_only", "out_indices",
                       "output_stride", "act_layer", "norm_layer", "class_token", "pos_embed",
                       "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                       "qkv_bias", "drop_block_rate", "attn_drop_rate", "proj_drop_rate",
                       "dynamic_img_size", "reg_tokens", "no_embed_class")


def unknown_option(node: Mapping[str, Any], error: BaseException) -> SynthError | None:
    """A model that refused an option it does not take (``unexpected keyword argument``)
    as S402 at that option, with the closest option meant; None for any other failure."""
    m = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if not isinstance(error, TypeError) or m is None:
        return None
    name = m.group(1)
    if name not in node.get("create_kwargs", {}):
        return None
    meant = did_you_mean(name, COMMON_TIMM_OPTIONS, n=1)
    return SynthError("S402", f"{node['constructor']}('{node['target']}') has no option "
                      f"'{name}'", node.get("option_spans", {}).get(name, node.get("span")),
                      hint=meant or "its options are those timm.create_model takes for it")


def check_arch(node: Mapping[str, Any]) -> SynthError | None:
    """An unknown timm architecture, with the closest names as suggestions."""
    import timm

    arch = node["target"]
    if timm.is_model(arch):
        return None
    hint = did_you_mean(arch, timm_models())
    return SynthError("S201", f"unknown timm architecture '{arch}'", node["target_span"],
                      hint=hint or "`python -c \"import timm; print(timm.list_models())\"` "
                                   "lists them")


def compare_state(expected: Mapping[str, tuple[int, ...]],
                  found: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What keeps a checkpoint from loading strictly into a model: missing, unexpected, shape."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    for k in mismatched[:5]:
        problems.append(f"'{k}' has shape {list(found[k])} in the checkpoint, "
                        f"the model expects {list(expected[k])}")
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing from the checkpoint: "
                        + ", ".join(f"'{k}'" for k in missing[:5])
                        + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) in the checkpoint: "
                        + ", ".join(f"'{k}'" for k in unexpected[:5])
                        + (" ..." if len(unexpected) > 5 else ""))
    if len(mismatched) > 5:
        problems.append(f"... and {len(mismatched) - 5} more shape mismatches")
    return problems


def model_state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_weights(node: Mapping[str, Any], model: nn.Module,
                  readers: ReaderCache | None = None, classifiers: tuple[str, ...] | None = None,
                  hint: str = "check the architecture and its options (num_classes, in_chans)"
                  ) -> SynthError | None:
    """The weights file of a source exists, is readable, and fits the model exactly.
    With `readers` (the run's), the file is opened once for the check and the compiler.
    `classifiers`: the names of a classifier the file may hold and the model lack (by
    default the model's own, :func:`~synthdsl.library.weight_keys.classifier_names`)."""
    path = Path(node["weights"])
    span = node["weights_span"]
    if not path.exists():
        return SynthError("S203", f"weights file '{node['weights_text']}' does not exist", span,
                          hint="a relative path starts at the spec's own folder")
    try:
        weights_format(path)
    except ValueError as e:
        return SynthError("S203", str(e), span)
    def table(what: str, of_file):
        """The file's shapes or dtypes, or the S203 that it cannot be read."""
        try:
            return (getattr(readers, what)(path) if readers is not None else of_file(path)), None
        except Exception as e:  # noqa: BLE001 - any failure to read is the user's file
            return None, SynthError("S203", f"cannot read weights file '{path.name}': "
                                    f"{_reason(e)}", span)

    found, error = table("shapes", checkpoint_shapes)
    if error:
        return error
    expected = model_state_shapes(model)
    problems = compare_state(expected, found)
    view = None
    if problems:
        from synthdsl.library.weight_keys import classifier_names, key_view

        view = key_view(node.get("name", ""), list(expected), list(found),
                        classifier_names(model) if classifiers is None else classifiers)
        if view is not None and not compare_state(
                expected, {k: found[view.file_key(k)] for k in expected}):
            problems = []
            node["weights_view"] = view.as_dict()
    if problems:
        return SynthError("S205", f"weights file '{path.name}' does not fit "
                          f"{node['constructor']}('{node['target']}')", span, notes=problems,
                          hint=hint)
    dtypes, error = table("dtypes", checkpoint_dtypes)
    if error:
        return error
    if view is not None:
        dtypes = {k: dtypes[view.file_key(k)] for k in expected}
    problems = dtype_problems(model_state_dtypes(model), dtypes)
    if problems:
        return _dtype_error(node, path, problems)
    return None


def model_state_dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    return {k: v.dtype for k, v in model.state_dict().items()}


def _dtype_error(node: Mapping[str, Any], path: Path, problems: list[str]) -> SynthError:
    more = len(problems) - 5
    return SynthError("S205", f"weights file '{path.name}' holds tensors of another dtype kind "
                      f"than {node['constructor']}('{node['target']}'): casting them would "
                      "change their values", node["weights_span"],
                      notes=problems[:5] + ([f"... and {more} more"] if more > 0 else []),
                      hint="save the checkpoint with the model's dtypes (float16 into float32 "
                           "is fine; integer or bool into float is not)")


def build_source(node: Mapping[str, Any], device: str = "cpu",
                 load_weights: bool = True,
                 create: Callable[[], nn.Module] | None = None) -> nn.Module:
    """The timm model of a `source` node, with its weights when it names them; `create`
    (another kind's builder, without weights) stands for timm's."""
    pretrained = node.get("pretrained", False) and load_weights and create is None
    if create is None and (refused := check_file_kwargs(node)) is not None:
        raise refused
    try:
        model = create() if create is not None else create_timm(
            node["target"], node["create_kwargs"], device, pretrained=pretrained)
    except Exception as e:  # noqa: BLE001
        if not pretrained:
            raise
        offline = any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        raise SynthError("S203", f"cannot get hub weights for '{node['target']}'"
                         + (" (HF_HUB_OFFLINE=1 and they are not in the cache)" if offline
                            else ""), node.get("span"),
                         notes=[f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                                if str(e) else type(e).__name__],
                         hint="download them once with a network (they are cached), or name a "
                              "local file with weights=\"...\"") from None
    if node.get("weights") and device != "meta" and load_weights:
        path = Path(node["weights"])
        try:
            state = read_state_dict(path)
        except Exception as e:  # noqa: BLE001
            raise SynthError("S203", f"cannot read weights file '{path.name}': {_reason(e)}",
                             node["weights_span"]) from None
        if node.get("weights_view"):
            from synthdsl.library.weight_keys import KeyView, view_state

            state = view_state(state, KeyView.from_dict(node["weights_view"]))
        problems = compare_state(model_state_shapes(model),
                                 {k: tuple(v.shape) for k, v in state.items()})
        if problems:
            raise SynthError("S205", f"weights file '{path.name}' does not fit "
                             f"{node['constructor']}('{node['target']}')", node["weights_span"],
                             notes=problems)
        problems = dtype_problems(model_state_dtypes(model),
                                  {k: v.dtype for k, v in state.items()})
        if problems:
            raise _dtype_error(node, path, problems)
        model.load_state_dict(state, strict=True)
    return model.eval()


class TimmKind(SourceKind):
    """``timm("resnet50", num_classes=10, weights="...")``: any timm architecture."""

    name = "timm"

    def check(self, node):
        return check_arch(node) or check_file_kwargs(node)

    def build(self, node, device="cpu", load_weights=True):
        if (refused := check_file_kwargs(node)) is not None:
            raise refused
        if str(device) == "meta":
            return create_timm(node["target"], node["create_kwargs"], "meta")
        return build_source(node, device, load_weights)

    def weights_problem(self, node, model, readers=None):
        return check_weights(node, model, readers) if node.get("weights") else None

    def data_config(self, model):
        import timm.data

        return timm.data.resolve_model_data_config(model)


class SpecKind(SourceKind):
    """``spec("trunk.synth")``: another spec, checked as a graph of its own and compiled
    whole. It has no stages and no cut points; its preprocessing is that of its own
    first source.

    ``spec("trunk.synth", weights="runs/trunk")``: what was trained of it. The file must
    hold exactly the state of the spec's module (compiled on meta: parameters, persistent
    buffers, adapters), each tensor under its name or under one prefix (an artifact of a
    spec that had it as a source); no classifier is dropped. The module is then built
    without its own sources' weights and every tensor read from the file."""

    name = "spec"
    #: How a child spec's checked graph becomes a module; the compiler installs
    #: `synthdsl.build.compile.compile_graph` here (the library stays below it).
    compile: Callable[..., nn.Module] | None = None

    def build(self, node, device="cpu", load_weights=True):
        if self.compile is None:  # a caller that checks, or builds, below the compiler
            raise InternalError("spec(...) sources are built by synthdsl.build.compile: "
                                "import it (or synthdsl.pipeline) first")
        return self.compile(node["graph"], device=device, load_weights=load_weights)

    def weights_problem(self, node, model, readers=None):
        if not node.get("weights"):
            return None
        return check_weights(node, model, readers, classifiers=(),
                             hint="name what was trained of this spec: its run folder, its "
                             "artifact (synth compile -o) or its module's state dict")

    def plan(self, model, node, exclusive=True):
        from synthdsl.library.parts import SpecPlan

        names = tuple(model.output_names)
        return SpecPlan(node["source"], outputs=len(names), output_names=names)

    def feature_info(self, model):
        return []

    def node_names(self, model):
        return []


register_source_kind(TimmKind())
register_source_kind(SpecKind())

from synthdsl.library import torchvision_source  # noqa: E402,F401 - registers torchvision(...)
from synthdsl.library import merge_source  # noqa: E402,F401 - registers merge(...)
from synthdsl.library import hf_source  # noqa: E402,F401 - registers hf(...)
