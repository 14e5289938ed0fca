"""``torchvision("resnet50", weights="ckpt/r50.pth")``: torchvision's models as a kind of source.

Any name of ``torchvision.models.list_models()`` is built with
``torchvision.models.get_model(name, weights=None, **options)``; the options are
the builder's own (``num_classes``, ``width_mult``, ...). Weights come from:

* a local state dict, ``weights="file.pth"`` (or .safetensors): read through the
  checkpoint code every source uses (weights-only, regular files, header checked
  against the model, provenance, ``synth lock``);
* torchvision's own weights, by the name of an entry of the model's weights enum
  (``weights="IMAGENET1K_V1"``, ``weights="ResNet50_Weights.IMAGENET1K_V1"``,
  ``weights="DEFAULT"``) or ``pretrained=true`` (the ``DEFAULT`` entry): torchvision
  downloads them (or finds them in its cache); offline that is an S203.

Options that name a file or a URL are refused (S402), as for timm.

Stages (``stages=[...]``) follow one rule for every architecture, computed from the
model itself on the meta device (:func:`tv_feature_info`): the *blocks* are the
children of ``features`` (vgg, mobilenet, efficientnet, densenet, convnext,
squeezenet, alexnet), of ``layers`` (mnasnet), ``stem`` and the children of
``trunk_output`` (regnet), and otherwise the model's own children (resnet, resnext,
wide_resnet, shufflenet, googlenet); a stage is the last block run at each spatial
resolution, before the global pooling (outputs larger than 1x1 for a 224x224
input). For a resnet that is ``relu, layer1, layer2, layer3, layer4``; for
mobilenet_v2 ``features.1, .3, .6, .13, .18``. Cuts (``at=``) and ``synth nodes``
use the fx node names of torchvision's ``get_graph_node_names``.
"""

from __future__ import annotations

import functools
import re
import weakref
from typing import Any, Mapping

import torch
from torch import nn

from synthdsl.lang.errors import SynthError, did_you_mean
from synthdsl.library.sources import (SourceKind, _names_a_file, build_source, check_weights,
                                      register_source_kind)

#: A `weights=` value naming an entry of torchvision's weights enums, not a file.
_ENUM = re.compile(r"^(?:[A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*$")
#: torchvision's classification preprocessing (every ImageNet weights entry uses it).
DATA_CONFIG = {"input_size": (3, 224, 224), "interpolation": "bilinear",
               "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
               "crop_pct": 0.875}
#: Containers whose children are an architecture's blocks, in the order they are tried.
_TRUNKS = ("features", "layers")


@functools.lru_cache(maxsize=1)
def tv_models() -> tuple[str, ...]:
    import torchvision.models

    return tuple(torchvision.models.list_models())


def weights_enum(arch: str):
    import torchvision.models

    return torchvision.models.get_model_weights(arch)


def create_torchvision(arch: str, kwargs: Mapping[str, Any], device: str | torch.device = "cpu",
                       weights: str | None = None) -> nn.Module:
    """Build a torchvision model; on ``meta`` it costs no memory and reads no weights."""
    import warnings

    import torchvision.models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet/inception: "init_weights will change"
        try:
            with torch.device(device):
                model = torchvision.models.get_model(arch, weights=weights, **dict(kwargs))
        except NotImplementedError:
            if str(device) != "meta":
                raise
            # regnet computes its widths with tensors: built on the CPU, then moved
            model = torchvision.models.get_model(arch, weights=None, **dict(kwargs)).to("meta")
    return model.eval()


def _enum_problem(node: Mapping[str, Any]) -> SynthError | None:
    """torchvision weights named by an entry its model does not have (S203)."""
    name = node.get("zoo_weights")
    if not name:
        return None
    try:
        enum = weights_enum(node["target"])
    except Exception:  # noqa: BLE001 - a model without weights of its own
        return SynthError("S203", f"torchvision has no weights for '{node['target']}'",
                          node.get("weights_span") or node.get("span"),
                          hint='name a local file with weights="..."')
    entries = [e.name for e in enum] + ["DEFAULT"]
    if name.removeprefix(enum.__name__ + ".") in entries:
        return None
    return SynthError("S203", f"{enum.__name__} has no entry '{name}'",
                      node.get("weights_span") or node.get("span"),
                      hint=did_you_mean(name, entries) or "its entries: " + ", ".join(entries))


class TorchvisionKind(SourceKind):
    """``torchvision("resnet50", num_classes=10, weights="...")``: torchvision's models."""

    name = "torchvision"

    def zoo_weights(self, text: str) -> bool:
        return bool(_ENUM.match(text))

    def check(self, node):
        arch = node["target"]
        if arch not in tv_models():
            return SynthError("S201", f"unknown torchvision model '{arch}'", node["target_span"],
                              hint=did_you_mean(arch, tv_models()) or "`python -c \"import "
                              "torchvision; print(torchvision.models.list_models())\"` lists them")
        return self.refused(node) or _enum_problem(node)

    def refused(self, node) -> SynthError | None:
        """An option naming a file or URL, behind the weights checks (S402, at it)."""
        for name, value in node.get("create_kwargs", {}).items():
            if _names_a_file(value):
                span = node.get("option_spans", {}).get(name, node.get("span"))
                return SynthError(
                    "S402", f"torchvision('{node['target']}') does not take {name}={value!r}: it "
                    "names a file or URL, behind the weights checks, their provenance and "
                    "`synth lock`", span, hint='name a local checkpoint with weights="..."')
        return None

    def build(self, node, device="cpu", load_weights=True):
        if (refused := self.refused(node)) is not None:
            raise refused
        arch, kwargs = node["target"], node["create_kwargs"]
        if str(device) == "meta" or not load_weights:
            return create_torchvision(arch, kwargs, device)
        if node.get("pretrained"):
            if (problem := _enum_problem(node)) is not None:
                raise problem
            wanted = node.get("zoo_weights") or "DEFAULT"
            try:
                return create_torchvision(arch, kwargs, device, weights=wanted)
            except Exception as e:  # noqa: BLE001 - no network, or not in torch's cache
                raise SynthError(
                    "S203", f"cannot get torchvision weights '{wanted}' for '{arch}'",
                    node.get("weights_span") or node.get("span"),
                    notes=[f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                           if str(e) else type(e).__name__],
                    hint="download them once with a network (torch caches them), or name a "
                         "local file with weights=\"...\"") from None
        return build_source(node, device, load_weights,
                            create=lambda: create_torchvision(arch, kwargs, device))

    def weights_problem(self, node, model, readers=None):
        return check_weights(node, model, readers) if node.get("weights") else None

    def feature_info(self, model):
        return tv_feature_info(model)

    def data_config(self, model):
        return dict(DATA_CONFIG)


_INFO: "weakref.WeakKeyDictionary[nn.Module, list[dict]]" = weakref.WeakKeyDictionary()


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    for name in _TRUNKS:
        trunk = model._modules.get(name)
        if isinstance(trunk, nn.Sequential):
            return [(f"{name}.{k}", m) for k, m in trunk.named_children()]
    trunk = model._modules.get("trunk_output")
    if isinstance(trunk, nn.Sequential):
        stem = [("stem", model.stem)] if isinstance(model._modules.get("stem"), nn.Module) else []
        return stem + [(f"trunk_output.{k}", m) for k, m in trunk.named_children()]
    return list(model.named_children())


def tv_feature_info(model: nn.Module, size: int = 224) -> list[dict]:
    """The stages of a torchvision model (the rule is the module's docstring): module,
    num_chs, reduction. One forward on meta per model object."""
    if model in _INFO:
        return _INFO[model]
    runs: list[tuple[str, tuple[int, ...]]] = []
    seen: set[str] = set()

    def hook(name):
        def record(_module, _args, out):
            if name not in seen and isinstance(out, torch.Tensor) and out.dim() == 4:
                seen.add(name)
                runs.append((name, tuple(out.shape)))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in _blocks(model)]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters(), torch.empty(0, device="meta")).device
        with torch.no_grad():
            model(torch.empty(1, 3, size, size, device=device))
    except Exception:  # noqa: BLE001 - a model that cannot run on a plain image has no stages
        runs = []
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    runs = [(n, s) for n, s in runs if s[2] > 1]
    info = []
    for i, (name, shape) in enumerate(runs):
        if i + 1 == len(runs) or runs[i + 1][1][2] != shape[2]:
            info.append({"module": name, "num_chs": shape[1],
                         "reduction": max(1, round(size / shape[2]))})
    _INFO[model] = info
    return info



register_source_kind(TorchvisionKind())
