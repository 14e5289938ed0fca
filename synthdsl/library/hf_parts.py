"""Parts of a Hugging Face model: its chosen output, its hidden states, its submodules.

Transformers' models do not trace with torch.fx (their forwards branch on their
inputs and build masks), so a part of an ``hf(...)`` source is never cut inside:

* the whole model, ``t(x)``, stays one module of the compiled graph: a
  ``get_attr`` of the model and a ``call_function`` of :func:`hf_forward`, which
  calls it with the input under the model's own name (``input_ids``,
  ``input_values``, ``pixel_values``) and returns one tensor of its output:
  ``output="last_hidden_state"`` (the default), ``"pooler_output"``, ... (the
  tensors the model returns; :func:`model_outputs`), or ``hidden_state=k`` (the
  input of layer ``k``: 0 is the embeddings' output, the last one what the last
  layer gives), or ``hidden_states=[i, j]`` (several values, unpacked);
* a submodule, ``t.embeddings(x)``, ``t.encoder.layer[0:2](h)``: its modules
  called in order (:class:`HFModulesPlan`), each given ``None`` for the masks its
  forward requires, and each value that is a model output or a tuple reduced to
  its first tensor (:func:`first_tensor`: a ``BertEncoder`` gives its
  ``last_hidden_state``).

:func:`hf_forward` takes an ``attention_mask`` after the input, so that a mask can
be passed as a second data input; without one the model's default (every position
kept) applies.
"""

from __future__ import annotations

import inspect
import operator
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from synthdsl.lang.errors import did_you_mean
from synthdsl.library.partcheck import PartError
from synthdsl.library.parts import CUT_OPTIONS, ModulesPlan, Part, PartPlan, make_plan

#: The options a call of a whole hf source takes: what it returns.
OUTPUT_OPTIONS = ("output", "hidden_state", "hidden_states")


def hf_forward(model: nn.Module, input: torch.Tensor, attention_mask: torch.Tensor | None = None,
               *, output: str = "last_hidden_state",
               hidden_states: int | tuple[int, ...] | None = None, **inputs: torch.Tensor):
    """Run a Transformers model on one input (and the keyword data inputs the spec gives
    it: `attention_mask`, `token_type_ids`, ...) and return tensors, not a ModelOutput:
    the output named `output`, or the hidden state at index `hidden_states` (a tuple of
    indices gives a tuple of tensors)."""
    kwargs = {getattr(model, "main_input_name", "input_ids"): input, **inputs}
    if attention_mask is not None and attention_mask.device.type == "meta":
        _mask_fits(attention_mask, input)
    elif attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if hidden_states is None:
        return model(**kwargs, return_dict=True)[output]
    states = model(**kwargs, output_hidden_states=True, return_dict=True).hidden_states
    if isinstance(hidden_states, tuple):
        return tuple(states[i] for i in hidden_states)
    return states[hidden_states]


def _mask_fits(mask: torch.Tensor, input: torch.Tensor) -> None:
    """The check's shape pass: a mask changes no shape, and Transformers' mask code reads
    values (``.item()``), which a meta tensor has none of; so its shape is checked (one
    value per token) and it is not passed on."""
    if tuple(mask.shape) != tuple(input.shape[:mask.dim()]):
        raise ValueError(f"attention_mask has shape {list(mask.shape)}, the input "
                         f"{list(input.shape)}: one mask value per token")


def first_tensor(value: Any) -> Any:
    """A submodule's value as one tensor: a tensor as it is, else the first item of a model
    output or a tuple (a ``BertEncoder``'s ``last_hidden_state``)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) or hasattr(value, "to_tuple"):
        return value[0]
    return value


def named_output(value: Any, output: str) -> torch.Tensor:
    """The tensor named `output` of a submodule's model output (``pooler_output`` of a
    ``CLIPVisionTransformer``); PartError naming the outputs it has otherwise."""
    names = [k for k, v in value.items() if isinstance(v, torch.Tensor)] \
        if hasattr(value, "items") else []
    if output not in names:
        what = "outputs " + ", ".join(f"'{n}'" for n in names) if names else \
            f"a {type(value).__name__}, not a model output with named tensors"
        raise PartError(f"the submodule has no output '{output}': it gives {what}",
                        option="output", code="S402", hint=did_you_mean(output, names))
    return value[output]


def _mask_kwargs(module: nn.Module) -> dict[str, None]:
    """``None`` for every parameter after the first that the module's forward requires
    (a ``SiglipEncoderLayer`` requires ``attention_mask``)."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return {}
    return {p.name: None for p in params
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


# ---- what a model returns ------------------------------------------------------------

_OUTPUTS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def example_input(model: nn.Module) -> torch.Tensor | None:
    """A small input of the model's kind on its device: token ids ``[1, 8]``, a second of
    audio ``[1, 16000]``, an image of its config's size; None for another kind."""
    device = next(model.parameters(), torch.empty(0)).device
    config = getattr(model, "config", None)
    name = getattr(model, "main_input_name", None)
    if name == "input_ids":
        return torch.zeros(1, 8, dtype=torch.long, device=device)
    if name == "input_values":
        return torch.zeros(1, 16000, device=device)
    if name == "pixel_values":
        size = getattr(config, "image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        return torch.zeros(1, getattr(config, "num_channels", 3), h, w, device=device)
    return None


def model_outputs(model: nn.Module) -> tuple[tuple[str, ...], int] | None:
    """The names of the tensors the model returns (``last_hidden_state``,
    ``pooler_output``, ...) and how many hidden states it gives, from one run on a small
    input (on meta, the check's model: no cost); None when the model's kind of input is
    not known."""
    if model in _OUTPUTS:
        return _OUTPUTS[model]
    x = example_input(model)
    found = None
    if x is not None:
        try:
            with torch.no_grad():
                out = model(**{model.main_input_name: x}, output_hidden_states=True,
                            return_dict=True)
            names = tuple(k for k, v in out.items() if isinstance(v, torch.Tensor))
            found = (names, len(out.hidden_states or ()))
        except Exception:  # noqa: BLE001 - the model needs more than one input
            found = None
    _OUTPUTS[model] = found
    return found


# ---- plans ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HFOutputPlan(PartPlan):
    """The whole model, one output or hidden states of it (see the module)."""

    output: str = "last_hidden_state"
    hidden_states: int | tuple[int, ...] | None = None

    @property
    def kwargs(self) -> dict:
        if self.hidden_states is not None:
            return {"hidden_states": self.hidden_states}
        return {"output": self.output}

    def bind(self, model: nn.Module) -> Part:
        kwargs, source, several = self.kwargs, self.source, isinstance(self.hidden_states, tuple)

        def emit(g: fx.Graph, args: tuple, name: str, data=None) -> list[fx.Node]:
            owner = g.create_node("get_attr", source, name=f"{name}_owner")
            out = g.create_node("call_function", hf_forward, (owner, *args),
                                {**kwargs, **(data or {})},
                                name=f"{name}_all" if several else name)
            if not several:
                return [out]
            return [g.create_node("call_function", operator.getitem, (out, i),
                                  name=f"{name}_{i}") for i in range(self.outputs)]

        return Part({source: model}, lambda *a, **kw: hf_forward(model, *a, **kwargs, **kw),
                    emit, self)


@dataclass(frozen=True, eq=False)
class HFModulesPlan(ModulesPlan):
    """Submodules of a Transformers model called in order, each given ``None`` for the
    masks it requires and reduced to one tensor (:func:`first_tensor`), or, for one
    submodule given ``output=``, to that tensor of its model output (:func:`named_output`:
    ``clip.vision_model(image, output="pooler_output")``)."""

    output: str | None = None

    def bind(self, model: nn.Module) -> Part:
        mods = [model.get_submodule(p[len(self.source) + 1:]) if p != self.source else model
                for p in self.paths]
        extras = [_mask_kwargs(m) for m in mods]
        paths, output = self.paths, self.output

        def reduce(value):
            return first_tensor(value) if output is None else named_output(value, output)

        def call(*args, **data):
            mask = data.get("attention_mask")
            if mask is not None and mask.device.type == "meta":  # the check: shape only
                _mask_fits(mask, args[0])
                data = {k: v for k, v in data.items() if k != "attention_mask"}
            value = mods[0](*args, **{**extras[0], **data})
            for m, kw in zip(mods[1:], extras[1:]):
                value = m(first_tensor(value), **kw)
            return reduce(value)

        def emit(g: fx.Graph, args: tuple, name: str, data=None) -> list[fx.Node]:
            value = None
            for i, (p, kw) in enumerate(zip(paths, extras)):
                last = i == len(paths) - 1
                kw = {**kw, **(data or {})} if i == 0 else kw  # keyword inputs: the first's
                node = g.create_node("call_module", p, args if i == 0 else (value,), dict(kw),
                                     name=f"{name}_{i}_call")
                pick = (first_tensor, (node,)) if output is None or not last else \
                    (named_output, (node, output))
                value = g.create_node("call_function", pick[0], pick[1],
                                      name=name if last else f"{name}_{i}")
            return [value]

        return Part(dict(zip(paths, mods)), call, emit, self)


def _index(value: Any, option: str, count: int | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PartError(f"{option}= takes the index of a hidden state (a whole number), "
                        f"found {value!r}", option=option, code="S402")
    if count is not None and not -count <= value < count:
        raise PartError(f"hidden state {value} does not exist: the model gives {count} "
                        f"(0 to {count - 1}: 0 is the embeddings' output, {count - 1} the "
                        "last layer's)", option=option, code="S402",
                        hint=f"an index from 0 to {count - 1}, or -{count} to -1")
    return value % count if count is not None else value


def hf_plan(model: nn.Module, node: dict, exclusive: bool = True) -> PartPlan:
    """The plan of a part node of an hf source (see the module); PartError for what the
    model does not offer."""
    source, path, options = node["source"], tuple(node["path"]), dict(node["options"])
    if node.get("method"):
        return make_plan(model, node, exclusive)  # part_problem names what it lacks
    if path or node.get("index") is not None:
        output = options.pop("output", None)
        if options:
            bad = next(iter(options))
            raise PartError(f"part '{node['label']}' has no option '{bad}'", option=bad,
                            hint="a submodule part takes output= (one tensor of what it "
                                 "returns); only the whole source takes hidden_state= or "
                                 "hidden_states=")
        plan = make_plan(model, {**node, "options": {}}, exclusive)
        if output is not None and not isinstance(output, str):
            raise PartError(f"output= takes the name of a tensor the submodule returns, "
                            f"found {output!r}", option="output", code="S402")
        if output is not None and len(plan.paths) != 1:
            raise PartError("output= picks a tensor of one submodule's output, not of a "
                            "slice of layers", option="output", code="S402",
                            hint="take the slice, then its last layer's output")
        return HFModulesPlan(source, describe=plan.describe, paths=plan.paths, output=output)
    for key in options:
        if key in CUT_OPTIONS:
            raise PartError(f"'{source}' is a Hugging Face model, which torch.fx cannot cut "
                            f"at a node: it takes no {key}=", option=key, code="S402",
                            hint=f"take a submodule ({source}.encoder(x)) or a hidden state "
                                 f"({source}(x, hidden_state=1))")
        if key not in OUTPUT_OPTIONS:
            raise PartError(f"part '{node['label']}' has no option '{key}'", option=key,
                            hint=did_you_mean(key, OUTPUT_OPTIONS)
                            or "a whole hf source takes output=, hidden_state= or "
                               "hidden_states=")
    if len(options) > 1:
        raise PartError("give one of output=, hidden_state= or hidden_states=",
                        option=list(options)[1], code="S402")
    known = model_outputs(model)
    names, count = known if known is not None else (None, None)
    if "hidden_state" in options:
        return HFOutputPlan(source, describe=f"hidden state {options['hidden_state']}",
                            hidden_states=_index(options["hidden_state"], "hidden_state", count))
    if "hidden_states" in options:
        value = options["hidden_states"]
        values = list(value) if isinstance(value, tuple) else [value]
        if not values:
            raise PartError("hidden_states= needs at least one index", option="hidden_states",
                            code="S402")
        picked = tuple(_index(v, "hidden_states", count) for v in values)
        return HFOutputPlan(source, outputs=len(picked), hidden_states=picked,
                            describe="hidden states " + ", ".join(map(str, picked)))
    output = options.get("output", "last_hidden_state")
    if not isinstance(output, str):
        raise PartError(f"output= takes the name of an output, found {output!r}",
                        option="output", code="S402")
    if names is not None and output not in names:
        meant = did_you_mean(output, names)
        raise PartError(f"'{source}' has no output '{output}'; its outputs are "
                        + ", ".join(f"'{n}'" for n in names), option="output", code="S402",
                        hint=meant or "hidden_state=k takes the hidden state of a layer")
    return HFOutputPlan(source, describe="" if output == "last_hidden_state" else output,
                        output=output)
