"""SynthModule: an ordinary `nn.Module` that also knows its spec, graph and training sets.

Its children are the compiled fx `GraphModule`'s children, so ``state_dict()``
keys read exactly as the spec names things (``vgg.features.0.weight``,
``head.0.weight``), and its forward is the GraphModule's generated code.

Its ``forward`` takes the spec's inputs by name: ``inspect.signature(model.forward)`` reads
``(image)`` or ``(tokens, mask)``, so a call may pass them by position or by keyword, and
``torch.export`` (``dynamic_shapes`` keyed by input name) and ONNX see named inputs. Each
module is of a subclass made for its input names (:func:`signed_class`); it pickles and
copies as a plain ``SynthModule`` and is made signed again when loaded.

Frozen means frozen: a frozen tensor has ``requires_grad=False``, is not in
:meth:`trainable_parameters` or :meth:`param_groups`, and every normalisation
layer whose tensors are all frozen stays in eval mode (its running statistics
unchanged) when the module is put in ``train()`` mode.
"""

from __future__ import annotations

from pathlib import Path

import functools
import inspect
import keyword
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from synthdsl.graph import SynthGraph
from synthdsl.library.layers import NORM_WITH_STATS


@dataclass(frozen=True)
class ParamRow:
    """One line of the parameter report."""

    node: str
    kind: str
    label: str
    params: int
    trainable: int
    frozen: int

    @property
    def state(self) -> str:
        if self.params == 0:
            return "-"
        if self.frozen == 0:
            return "trainable"
        return "frozen" if self.trainable == 0 else "partial"


class SynthModule(nn.Module):
    """The compiled spec. Call it like any module; ask it what it is made of."""

    def __init__(self, graph_module: fx.GraphModule, graph: SynthGraph,
                 train_graph_module: fx.GraphModule | None = None,
                 provenance: dict[str, dict] | None = None) -> None:
        super().__init__()
        # Share the GraphModule's children: one set of modules, readable names. The
        # training graph (outputs plus what the losses read) holds the same modules.
        root = train_graph_module if train_graph_module is not None else graph_module
        self._modules = root._modules
        graph_module._modules = root._modules
        object.__setattr__(self, "_graph_module", graph_module)
        object.__setattr__(self, "_train_graph_module", train_graph_module)
        object.__setattr__(self, "_synth_graph", graph)
        #: Where every parameter and buffer came from, by qualified name: a checkpoint
        #: (file, sha256, key, transform), an inheritance edge, timm's or torch's
        #: initialiser ("init"/"new"), or the hub.
        self.provenance: dict[str, dict] = dict(provenance or {})
        #: The shape of every tensor structured pruning changed, by qualified name
        #: (:func:`synthdsl.build.compress.prune_compiled`); artifacts record it.
        self.pruned: dict[str, list[int]] = {}
        self.input_names: tuple[str, ...] = tuple(graph.inputs)
        self.output_names: tuple[str, ...] = tuple(graph.graph["output_names"])
        self._apply_training_sets()
        self.__class__ = signed_class(type(self), self.input_names)

    # -- pickling and copying: as the plain class, signed again when loaded -----

    def __reduce_ex__(self, protocol):
        _, _, *rest = super().__reduce_ex__(max(protocol, 2))
        return (_new_module, (unsigned_class(type(self)),), *rest)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__class__ = signed_class(type(self), self.input_names)

    # -- what it is ------------------------------------------------------------

    @property
    def graph(self) -> SynthGraph:
        """The checked networkx graph this module was compiled from."""
        return self._synth_graph

    @property
    def graph_module(self) -> fx.GraphModule:
        return self._graph_module

    @property
    def spec(self) -> str:
        """The spec's text."""
        return self.graph.graph.get("text", "")

    @property
    def code(self) -> str:
        """The generated Python code of the forward pass."""
        return self.graph_module.code

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return type(self._graph_module).forward(self, *args, **kwargs)
        except Exception as e:
            _note_spec_node(self._graph_module, e)
            raise

    def forward_train(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Every declared output and every value a `loss` reads, by name (a teacher's
        outputs included, which `forward` does not compute)."""
        gm = self._train_graph_module
        if gm is None:
            out = self.forward(*args, **kwargs)
            return out if isinstance(out, dict) else {self.output_names[0]: out}
        try:
            return type(gm).forward(self, *args, **kwargs)
        except Exception as e:
            _note_spec_node(gm, e)
            raise

    @property
    def losses(self) -> list[dict]:
        """The spec's `loss` statements: kind, the names of the values read, options."""
        return [dict(loss) for loss in self.graph.graph.get("losses", [])]

    @property
    def recipe(self) -> dict[str, Any]:
        """The spec's `recipe` options (how `synth train` trains by default)."""
        return dict(self.graph.graph.get("recipe", {}))

    def save_adapters(self, path, names=None) -> Path:
        """Write the LoRA adapters alone, or those `names` names
        (:mod:`synthdsl.build.adapters_io`)."""
        from synthdsl.build.adapters_io import save_adapters

        return save_adapters(self, path, names)

    def load_adapters(self, path) -> list[str]:
        """Load adapters saved by :meth:`save_adapters` into this module's adapters of the
        same names; the keys loaded (``layer``, or ``layer:name`` for a named adapter)."""
        from synthdsl.build.adapters_io import load_adapters

        return load_adapters(self, path)

    @property
    def adapters(self) -> dict[str, list[str]]:
        """Each LoRA adapter's name and the layers it is on (``default`` for the unnamed)."""
        from synthdsl.build.adapters import adapter_layers

        return adapter_layers(self)

    @property
    def adapter_weights(self) -> dict[str, float]:
        """Each adapter's weight: 1 when compiled, 0 for an inactive one."""
        from synthdsl.build.adapters import active_weights

        return active_weights(self)

    def set_adapters(self, active=None) -> dict[str, float]:
        """Choose the adapters this module adds: a list of names, names with weights
        (``{"sketch": 0.7, "photo": 0.3}``), or None for all; the others are inactive and
        frozen (:func:`synthdsl.build.adapters.set_active`)."""
        from synthdsl.build.adapters import set_active

        return set_active(self, active)

    def merge_adapters(self, names=None) -> list[str]:
        """Fold LoRA adapters into their layers' weights at their weights (by default the
        active ones, or those `names` names) and remove them; the keys merged."""
        from synthdsl.build.adapters import merge

        return merge(self, names)

    def example_inputs(self, batch_size: int = 2, seed: int = 0,
                       **dims: int) -> tuple[torch.Tensor, ...]:
        """Random tensors of the declared input shapes. A symbolic dim that is only a batch
        size takes `batch_size`; one that is more (``H``, ``T``) the size the check ran the
        whole graph with (:func:`synthdsl.build.compile.example_dims`); either unless given
        by name (``example_inputs(2, T=16)``)."""
        from synthdsl.checks.probes import probed

        dims = {**probed(self.graph).example_dims, **dims}
        gen = torch.Generator().manual_seed(seed)
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        out = []
        for n in self.input_names:
            shape = [d if isinstance(d, int) else dims.get(d, batch_size)
                     for d in self.graph.nodes[n]["dims"]]
            dtype = getattr(torch, self.graph.nodes[n].get("input_dtype", "float32"))
            if dtype.is_floating_point:
                x = torch.randn(shape, generator=gen).to(dtype)
            else:
                x = torch.randint(0, self._index_bound(n) if dtype != torch.bool else 2,
                                  shape, generator=gen).to(dtype)
            out.append(x.to(device))
        return tuple(out)

    def _index_bound(self, n: str) -> int:
        """How many ids an integer input may take: the smallest `num` of the Embedding
        layers it reaches (every id then indexes each of them), else 2 (0 and 1)."""
        return min(embedding_sizes(self.graph, n), default=2)

    # -- training sets -----------------------------------------------------------

    def _apply_training_sets(self) -> None:
        from synthdsl.build.adapters import inactive_tensors

        frozen = set(self.graph.graph.get("frozen", ())) | inactive_tensors(self)
        for name, p in self.named_parameters():
            p.requires_grad_(name not in frozen)
        self.norm_policy: str = self.graph.graph.get("norm_policy", "follow")
        self._frozen_norms: tuple[str, ...] = () if self.norm_policy == "train" else tuple(
            name for name, m in self.named_modules()
            if isinstance(m, NORM_WITH_STATS) and self._all_frozen(name, m, frozen))

    @staticmethod
    def _all_frozen(prefix: str, module: nn.Module, frozen: set[str]) -> bool:
        names = [f"{prefix}.{k}" for k, _ in module.named_parameters(recurse=False)]
        names += [f"{prefix}.{k}" for k, _ in module.named_buffers(recurse=False)]
        return bool(names) and all(n in frozen for n in names)

    def train(self, mode: bool = True) -> "SynthModule":
        super().train(mode)
        if mode:
            for name in self._frozen_norms:
                self.get_submodule(name).eval()
        return self

    @property
    def frozen_norm_layers(self) -> tuple[str, ...]:
        """Normalisation layers kept in eval mode because all their tensors are frozen."""
        return self._frozen_norms

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What an optimizer should get."""
        return [p for _, p in self.named_trainable_parameters()]

    def frozen_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if not p.requires_grad]

    def param_groups(self, base_lr: float, weight_decay: float = 0.0, *,
                     lr_scales: Mapping[str, float] | None = None,
                     decay_norm_bias: bool = True) -> list[dict]:
        """Parameter groups for `torch.optim`: one per (lr multiplier, weight decay) pair.

        A parameter's multiplier is its ``lr_mult`` times its entry of `lr_scales` (layer
        decay; 1 when absent). With ``decay_norm_bias=False`` every 1-D parameter and every
        bias gets weight decay 0, as timm's ``create_optimizer`` does, unless an
        ``optimize``/``train ... with weight_decay=`` of the spec says otherwise."""
        options = self.graph.graph.get("param_options", {})
        scales = lr_scales or {}
        groups: dict[tuple[float, float], dict] = {}
        for name, p in self.named_trainable_parameters():
            opt = options.get(name, {})
            default = weight_decay
            if not decay_norm_bias and (p.ndim <= 1 or name.endswith(".bias")):
                default = 0.0
            key = (float(opt.get("lr_mult", 1.0)) * float(scales.get(name, 1.0)),
                   float(opt.get("weight_decay", default)))
            group = groups.setdefault(key, {"params": [], "names": [], "lr": base_lr * key[0],
                                            "lr_mult": key[0], "weight_decay": key[1]})
            group["params"].append(p)
            group["names"].append(name)
        return list(groups.values())

    # -- the parameter report ------------------------------------------------------

    def parameter_report(self) -> list[ParamRow]:
        """Per part and layer: parameters, trainable, frozen (as the module is now)."""
        params = dict(self.named_parameters())
        rows = []
        for n in self.graph.topological_order():
            node = self.graph.nodes[n]
            if node["kind"] not in ("part", "layer"):
                continue
            names = [k for k in node.get("parameters", {}) if k in params]
            total = sum(params[k].numel() for k in names)
            trainable = sum(params[k].numel() for k in names if params[k].requires_grad)
            rows.append(ParamRow(n, node["kind"], node["label"], total, trainable,
                                 total - trainable))
        return rows

    def parameter_totals(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.trainable_parameters())
        return {"params": total, "trainable": trainable, "frozen": total - trainable}


@functools.lru_cache(maxsize=None)
def signed_class(cls: type, names: tuple[str, ...]) -> type:
    """The subclass of `cls` whose ``forward`` has the signature ``(self, *names)`` (one made
    per class and tuple of names). `cls` itself where a name cannot be a Python parameter.

    >>> import inspect
    >>> from synthdsl.pipeline import compile_spec
    >>> model = compile_spec("synth A input tokens: [B, 4] int64 input mask: [B, 4] bool "
    ...                      "y = masked_mean(Embedding(tokens, num=9, dim=2), mask) output y")
    >>> inspect.signature(model.forward)
    <Signature (tokens, mask)>
    """
    cls = unsigned_class(cls)
    if not all(n.isidentifier() and not keyword.iskeyword(n) and n != "self" for n in names):
        return cls
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
              for n in ("self", *names)]
    plain = cls.forward

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return plain(self, *args, **kwargs)

    forward.__signature__ = inspect.Signature(params)
    forward.__doc__ = f"The spec's outputs for its inputs {', '.join(names) or '(none)'}."
    forward.__qualname__ = f"{cls.__qualname__}.forward"
    return type(cls.__name__, (cls,), {"forward": forward, "_unsigned": cls,
                                       "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


def unsigned_class(cls: type) -> type:
    """The class a signed class (:func:`signed_class`) was made from; `cls` if it is none."""
    return cls.__dict__.get("_unsigned", cls)


def _new_module(cls: type) -> "SynthModule":
    """An empty module of class `cls`, which unpickling then fills (its ``__setstate__``)."""
    return cls.__new__(cls)


def spec_node_of(gm: fx.GraphModule, error: BaseException) -> dict | None:
    """The ``meta["synth"]`` (spec node, name, kind, span, shape) of the fx node whose line
    of `gm`'s generated forward raised `error`, or None when it was not raised there."""
    code = type(gm).forward.__code__
    lineno, tb = None, error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return spec_node_at(gm, lineno) if lineno is not None else None


def spec_node_at(gm: fx.GraphModule, lineno: int) -> dict | None:
    """The ``meta["synth"]`` of the fx node at line `lineno` of `gm`'s generated forward (as
    a traceback or a stack trace counts it), or None where no node is."""
    code = type(gm).forward.__code__
    lines = getattr(gm, "_lineno_map", None)
    if not lines:
        return None
    index = lines.get(lineno - code.co_firstlineno)
    if index is None:
        return None
    node = next((n for i, n in enumerate(gm.graph.nodes) if i == index), None)
    return node.meta.get("synth") if node is not None else None


def _note_spec_node(gm: fx.GraphModule, error: BaseException) -> None:
    """Say in the error which spec line's node failed (once, at the outermost module)."""
    synth = spec_node_of(gm, error)
    notes = getattr(error, "__notes__", [])
    if synth is not None and not any(n.startswith("in the spec:") for n in notes):
        error.add_note(f"in the spec: '{synth['name']}' ({synth['kind']}) at {synth['span']}")


def embedding_sizes(g, n: str) -> list[int]:
    """The `num` of every Embedding layer that value `n` of graph `g` reaches, in `g` and
    in the specs it uses as sources (through the inputs of theirs that `n` feeds)."""
    import networkx as nx

    reached = nx.descendants(g, n) | {n}
    nums = []
    for m in reached:
        node = g.nodes[m]
        if node["kind"] == "layer" and node.get("layer") == "Embedding" and "build" in node:
            nums.append(node["build"]["num_embeddings"])
        child = g.nodes[node["source"]].get("graph") if node["kind"] == "part" else None
        if child is not None:
            for name, src in [*zip(child.inputs, node["inputs"]),  # then its inputs by name
                              *(node.get("keywords") or {}).items()]:
                if src in reached:
                    nums += embedding_sizes(child, name)
    return nums
