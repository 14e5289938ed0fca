"""Check a SynthGraph before any weight is read: names, cycles, sources, shapes, training sets.

Shapes are found by running every node on the ``meta`` device: sources are
built there (no memory, no weights), symbolic dimensions get a probe size, and
each failure becomes a diagnostic at the spec line that caused it. Every
independent problem is collected and raised once.

>>> from synthdsl.parse import parse_spec
>>> from synthdsl.graph import build_graph
>>> g = check_graph(build_graph(parse_spec(
...     "synth A input x: [B, 8] h = Linear(x, out=4) |> ReLU output h")))
>>> g.nodes["h.0"]["shape"], g.nodes["h.0"]["params"]
(('B', 4), 36)
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable

import networkx as nx
import torch
from torch import nn

from synthdsl.errors import Collector, SynthError, SynthErrors, did_you_mean
from synthdsl.graph import SynthGraph
from synthdsl.layers import LAYERS, LayerArgError
from synthdsl.ops import OPS
from synthdsl.sources import check_arch, check_weights, create_timm

#: Probe sizes for symbolic dimensions: large primes no real layer size is likely to equal.
_PROBES = (9973, 9967, 9949, 9941, 9931, 9929, 9923, 9907)
#: Options a `train ... with` statement takes.
TRAIN_OPTIONS = {"lr_mult": "a learning-rate multiplier (≥ 0)",
                 "weight_decay": "a weight decay (≥ 0) for these parameters"}


def fmt_shape(shape: Iterable) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def pattern_matches(name: str, pattern: str) -> bool:
    """A glob over qualified names; a pattern naming a module covers everything below it."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


class _Checker:
    def __init__(self, g: SynthGraph) -> None:
        self.g = g
        self.errors = Collector()
        self.warnings: list[SynthError] = []
        for d in g.diagnostics:
            self.errors.add(d)
        symbols = sorted({d for n in g.of_kind("input") for d in g.nodes[n]["dims"]
                          if isinstance(d, str)})
        self.probes = dict(zip(symbols, _PROBES))
        self.symbol_of = {v: k for k, v in self.probes.items()}
        self.models: dict[str, nn.Module] = {}
        self.values: dict[str, torch.Tensor] = {}
        self.broken: set[str] = set()

    def err(self, code: str, message: str, span, hint=None, notes=()) -> None:
        self.errors.add(SynthError(code, message, span, hint, notes))

    def shape_of(self, t: torch.Tensor) -> tuple:
        return tuple(self.symbol_of.get(int(d), int(d)) for d in t.shape)

    # -- structure ---------------------------------------------------------------

    def cycles(self) -> None:
        data = nx.DiGraph(self.g.data_edges())
        for cycle in sorted(nx.simple_cycles(data), key=sorted):
            # start at the value written first, so the message is the same on every run
            i = min(range(len(cycle)), key=lambda k: self.g.nodes[cycle[k]]["span"].start)
            cycle = cycle[i:] + cycle[:i]
            names = [self.g.nodes[n]["name"] for n in cycle]
            chain = " → ".join(f"'{n}'" for n in (*names, names[0]))
            first = cycle[0]
            self.err("S104", f"cycle: {chain}", self.g.nodes[first]["span"],
                     hint="a value cannot depend on itself; feed it from an earlier value")
            self.broken.update(cycle)

    def sources(self) -> None:
        for s in self.g.of_kind("source"):
            node = self.g.nodes[s]
            if node["constructor"] != "timm":
                self.broken.add(s)
                continue
            if e := check_arch(node):
                self.errors.add(e)
                self.broken.add(s)
                continue
            try:
                model = create_timm(node["target"], node["create_kwargs"], "meta")
            except Exception as e:  # noqa: BLE001 - timm rejects the user's options
                opts = ", ".join(f"{k}={v!r}" for k, v in node["create_kwargs"].items())
                self.err("S204", f"timm cannot build '{node['target']}'"
                         + (f" with {opts}" if opts else ""), node["span"],
                         notes=[f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"])
                self.broken.add(s)
                continue
            self.models[s] = model
            node["params"] = sum(p.numel() for p in model.parameters())
            if node.get("weights") and (e := check_weights(node, model)):
                self.errors.add(e)

    # -- shapes ------------------------------------------------------------------

    def run(self) -> None:
        for n in self.g.topological_order():
            node = self.g.nodes[n]
            kind = node["kind"]
            if kind == "source":
                continue
            if n in self.broken or node.get("invalid") or any(i is None or i not in self.values for i in node["inputs"]):
                self.broken.add(n)
                continue
            args = [self.values[i] for i in node["inputs"]]
            try:
                out = getattr(self, f"run_{kind}")(n, node, args)
            except SynthError as e:
                self.errors.add(e)
                self.broken.add(n)
                continue
            except _Broken:
                self.broken.add(n)
                continue
            self.values[n] = out
            node["shape"] = self.shape_of(out)
        for u, v in self.g.data_edges():
            if u in self.values:
                self.g.edges[u, v]["shape"] = self.g.nodes[u]["shape"]

    def describe(self, n: str) -> str:
        """How the spec spells a value: its name, or the call that makes it if it has none."""
        node = self.g.nodes[n]
        if n == node["name"] or node["kind"] == "input":
            return f"'{node['name']}'"
        return f"{node['label']}(...)"

    def described_inputs(self, node) -> list[str]:
        return [f"input {i + 1} {self.describe(src)} has shape "
                f"{fmt_shape(self.g.nodes[src]['shape'])}" for i, src in enumerate(node["inputs"])]

    def run_input(self, n, node, args) -> torch.Tensor:
        dims = [self.probes[d] if isinstance(d, str) else d for d in node["dims"]]
        return torch.empty(dims, device="meta")

    def run_output(self, n, node, args) -> torch.Tensor:
        return args[0]

    def run_part(self, n, node, args) -> torch.Tensor:
        if node["source"] not in self.models:
            raise _Broken  # the source's own problem is reported already
        model = self.models[node["source"]]
        module = model
        for i, step in enumerate(node["path"]):
            child = module._modules.get(step)
            if child is None:
                where = ".".join((node["source"], *node["path"][:i])) or node["source"]
                raise SynthError("S202", f"'{where}' has no submodule '{step}'",
                                 node["callee_span"],
                                 hint=did_you_mean(step, module._modules)
                                 or "its submodules: " + ", ".join(list(module._modules)[:12]))
            module = child
        self.record_params(n, node["module"], module)
        call = getattr(module, node["method"]) if node["method"] else module
        try:
            with torch.no_grad():
                out = call(*args, **node["options"])
        except Exception as e:  # noqa: BLE001 - the part rejects its input
            raise self.input_mismatch(node, module, args, e) from None
        if not isinstance(out, torch.Tensor):
            raise SynthError("S302", f"part '{node['label']}' returns {type(out).__name__}, "
                             "not a tensor", node["span"],
                             hint="take a part that returns one tensor")
        return out

    def input_mismatch(self, node, module: nn.Module, args, e: Exception) -> SynthError:
        """Name both sides: what the part's first layer expects, what flows in."""
        notes = self.described_inputs(node)
        first = next(((k, m) for k, m in module.named_modules()
                      if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        if first is not None and len(args) == 1:
            path, layer = first
            where = f"{node['module']}.{path}" if path else node["module"]
            shape, src = args[0].shape, self.describe(node["inputs"][0]).strip("'")
            if isinstance(layer, nn.Conv2d) and len(shape) == 4 \
                    and shape[1] != layer.in_channels:
                return SynthError(
                    "S301", f"part '{node['label']}' expects {layer.in_channels} input channels "
                    f"but '{src}' has {shape[1]}", node["span"],
                    notes=[*notes, f"its first layer '{where}' is {layer}"],
                    hint=f"declare '{src}' with {layer.in_channels} channels, or build the "
                    f"source with in_chans={shape[1]}")
            if isinstance(layer, nn.Linear) and shape[-1] != layer.in_features:
                return SynthError(
                    "S301", f"part '{node['label']}' expects {layer.in_features} input "
                    f"features but '{src}' has {shape[-1]}", node["span"],
                    notes=[*notes, f"its first layer '{where}' is {layer}"])
        return SynthError("S301", f"part '{node['label']}' cannot take its input",
                          node["span"], notes=[*notes, _torch_reason(e)])

    def run_layer(self, n, node, args) -> torch.Tensor:
        spec = LAYERS[node["layer"]]
        shapes = [tuple(a.shape) for a in args]
        try:
            build = spec.constructor_args(shapes, node["options"])
        except LayerArgError as e:
            span = node["option_spans"].get(e.option, node["span"]) if e.option else node["span"]
            code = "S402" if e.option or "option" in str(e) else "S301"
            raise SynthError(code, str(e), span, hint=e.hint,
                             notes=self.described_inputs(node) if code == "S301" else ()) from None
        node["build"] = build
        try:
            with torch.device("meta"):
                module = spec.build(**build)
        except Exception as e:  # noqa: BLE001
            raise SynthError("S402", f"{spec.name} cannot be built with these options",
                             node["span"], notes=[_torch_reason(e)]) from None
        self.record_params(n, node["module"], module)
        try:
            with torch.no_grad():
                return module(*args)
        except Exception as e:  # noqa: BLE001
            raise SynthError("S301", f"{spec.name} cannot take its input", node["span"],
                             notes=[*self.described_inputs(node), _torch_reason(e)]) from None

    def run_op(self, n, node, args) -> torch.Tensor:
        spec = OPS[node["op"]]
        if bad := spec.check_options(node["options"]):
            msg, option = bad
            raise SynthError("S402", msg, node["option_spans"][option])
        if msg := spec.check([self.shape_of(a) for a in args], node["options"],
                             [self.describe(i) for i in node["inputs"]]):
            raise SynthError("S301", msg, node["span"], notes=self.described_inputs(node))
        try:
            with torch.no_grad():
                return spec.fn(*args, **{**spec.defaults(), **node["options"]})
        except Exception as e:  # noqa: BLE001
            raise SynthError("S301", f"{spec.name} cannot take its inputs", node["span"],
                             notes=[*self.described_inputs(node), _torch_reason(e)]) from None

    def record_params(self, n: str, prefix: str, module: nn.Module) -> None:
        node = self.g.nodes[n]
        node["parameters"] = {f"{prefix}.{k}": p.numel() for k, p in module.named_parameters()}
        node["buffers"] = {f"{prefix}.{k}": b.numel() for k, b in module.named_buffers()}
        node["params"] = sum(node["parameters"].values())

    # -- training sets -----------------------------------------------------------

    def training(self) -> None:
        names: dict[str, int] = {}
        for n in self.g.nodes:
            node = self.g.nodes[n]
            names.update(node.get("parameters", {}))
            names.update(node.get("buffers", {}))
        frozen = dict.fromkeys(names, False)
        options: dict[str, dict[str, Any]] = {}
        prefixes = sorted({".".join(k.split(".")[:i]) for k in names
                           for i in range(1, k.count(".") + 1)})
        for rule in self.g.graph["rules"]:
            for key, value in rule["options"].items():
                span = rule["option_spans"][key]
                if key not in TRAIN_OPTIONS:
                    self.err("S402", f"train has no option '{key}'", span,
                             hint=did_you_mean(key, TRAIN_OPTIONS)
                             or "its options: " + ", ".join(TRAIN_OPTIONS))
                elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    self.err("S402", f"train option '{key}' expects {TRAIN_OPTIONS[key]}, "
                             f"found {value!r}", span)
            for pattern, span in rule["patterns"]:
                matched = [k for k in names if pattern_matches(k, pattern)]
                if not matched:
                    if self.broken & set(self.g.nodes):
                        continue  # names of a broken part are unknown; do not guess
                    hint = did_you_mean(pattern.rstrip(".*"), prefixes)
                    self.err("S401", f"{rule['action']} pattern '{pattern}' matches no "
                             "parameter", span,
                             hint=hint or "patterns match qualified names such as "
                             + ", ".join(f"'{p}'" for p in list(prefixes)[:3]))
                for k in matched:
                    frozen[k] = rule["action"] == "freeze"
                    if rule["action"] == "train" and rule["options"]:
                        options.setdefault(k, {}).update(rule["options"])
                    elif rule["action"] == "freeze":
                        options.pop(k, None)
        self.g.graph["frozen"] = sorted(k for k, v in frozen.items() if v)
        self.g.graph["param_options"] = {k: options[k] for k in sorted(options)}
        frozen_set = set(self.g.graph["frozen"])
        for n in self.g.nodes:
            node = self.g.nodes[n]
            if "parameters" in node:
                node["frozen_params"] = sum(v for k, v in node["parameters"].items()
                                            if k in frozen_set)
                node["trainable_params"] = node["params"] - node["frozen_params"]

    def unused(self) -> None:
        used = set()
        for o in self.g.outputs:
            used |= nx.ancestors(self.g, o) | {o}
        for n in self.g.topological_order():
            node = self.g.nodes[n]
            if n not in used and node["kind"] != "output":
                what = "source" if node["kind"] == "source" else "value"
                self.warnings.append(SynthError(
                    "W001", f"{what} '{node['name']}' does not reach any output", node["span"],
                    severity="warning", hint="remove it, or output it"))


class _Broken(Exception):
    """A node that cannot be checked because something it needs is already reported."""


def _torch_reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:400] if text else ''}"


def check_graph(graph: SynthGraph, raise_errors: bool = True) -> SynthGraph:
    """Annotate `graph` with shapes, parameter counts and the training set; raise on errors.

    With ``raise_errors=False`` the problems are left on ``graph.graph["errors"]``
    instead, so a broken spec can still be summarised and drawn.
    """
    c = _Checker(graph)
    c.cycles()
    c.sources()
    c.run()
    c.training()
    if not c.errors.errors:  # with errors, "unused" is mostly their echo
        c.unused()
    graph.graph["errors"] = SynthErrors(c.errors.errors).errors if c.errors.errors else []
    graph.graph["warnings"] = c.warnings
    graph.graph["symbols"] = dict(c.probes)
    graph.graph["checked"] = True
    for n in c.broken:
        graph.nodes[n]["broken"] = True
    if raise_errors and c.errors.errors:
        raise SynthErrors(c.errors.errors)
    return graph
