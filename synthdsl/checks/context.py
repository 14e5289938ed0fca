"""What every pass of the check shares: the graph, the diagnostics, and what earlier passes found.

A pass is a function ``pass_(ctx: CheckContext) -> None``. It reads the graph and
what earlier passes left on the context (the meta models of the sources, the part
plans, the meta value of each node, the broken set), adds diagnostics with
``ctx.err`` or ``ctx.warn``, and writes its findings on the graph. `run_check`
runs a list of passes and writes the summary keys every later stage reads.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Sequence

import torch
from torch import nn

from synthdsl.graph import SynthGraph
from synthdsl.lang.errors import Collector, SynthError, SynthErrors, fmt_shape
from synthdsl.library.parts import PartPlan

#: Probe sizes for symbolic dimensions: large primes no real layer size is likely to equal.
PROBES = (9973, 9967, 9949, 9941, 9931, 9929, 9923, 9907)


class Broken(Exception):
    """A node that cannot be checked because something it needs is already reported."""


class CheckContext:
    """The state one check of one graph builds up, pass after pass."""

    def __init__(self, g: SynthGraph, weights: bool = True,
                 passes: Sequence[Callable[["CheckContext"], None]] = ()) -> None:
        self.g = g
        self.weights = weights  # False: a compiled artifact carries the tensors
        self.passes = tuple(passes)  # a spec source is checked with the same passes
        self.errors = Collector()
        self.warnings: list[SynthError] = []
        for d in g.diagnostics:
            self.errors.add(d)
        symbols = sorted({d for n in g.of_kind("input") for d in g.nodes[n]["dims"]
                          if isinstance(d, str)})
        self.probes = dict(zip(symbols, PROBES))
        self.symbol_of = {v: k for k, v in self.probes.items()}
        self.models: dict[str, nn.Module] = {}      # timm source -> its model (on meta)
        self.children: dict[str, SynthGraph] = {}   # spec sources, checked
        self.plans: dict[str, PartPlan] = {}        # part node -> its plan (on meta)
        self.layers: dict[str, nn.Module] = {}      # layer node -> its module (on meta)
        self.meta_layers: dict[tuple, nn.Module] = {}   # distinct layer -> its meta module
        self.meta_outputs: dict[tuple, tuple] = {}      # distinct run -> (shape, dtype)
        self.used_by: dict[str, str] = {}           # parameter name -> first part using it
        self.values: dict[str, Any] = {}            # node -> its meta tensor(s)
        self.broken: set[str] = set()
        self.names: dict[str, int] | None = None    # tensor name -> numel (see tensor_names)
        self.prefixes: list[str] = []               # module prefixes of those names
        self.adapted: dict[int, dict[str, bool]] = {}   # adapt rule id -> tensor -> frozen

    # -- diagnostics -------------------------------------------------------------

    def err(self, code: str, message: str, span, hint=None, notes=()) -> None:
        self.errors.add(SynthError(code, message, span, hint, notes))

    def warn(self, code: str, message: str, span, hint=None, notes=()) -> None:
        self.warnings.append(SynthError(code, message, span, hint, notes, severity="warning"))

    # -- values ------------------------------------------------------------------

    def shape_of(self, t: torch.Tensor) -> tuple:
        """A meta tensor's shape, with probe sizes spelled as their symbols again."""
        return tuple(self.symbol_of.get(int(d), int(d)) for d in t.shape)

    def describe(self, n: str) -> str:
        """How the spec spells a value: its name, or the call that makes it if it has none."""
        node = self.g.nodes[n]
        if n == node["name"] or node["kind"] == "input":
            return f"'{node['name']}'"
        return f"{node['label']}(...)"

    def described_inputs(self, node) -> list[str]:
        return [f"input {i + 1} {self.describe(src)} has shape "
                f"{fmt_shape(self.g.nodes[src]['shape'])}" for i, src in enumerate(node["inputs"])]

    # -- modules and tensors -----------------------------------------------------

    def installed(self) -> dict[str, nn.Module]:
        """The root modules the spec installs (on meta): part modules and new layers."""
        roots = {p: m for plan in self.plans.values() for p, m in plan.modules.items()}
        roots.update({self.g.nodes[n]["module"]: m for n, m in self.layers.items()})
        return roots

    def all_modules(self) -> dict[str, nn.Module]:
        """Every installed module (on meta), by qualified name."""
        out = {}
        for path, module in self.installed().items():
            for name, m in module.named_modules():
                out[f"{path}.{name}" if name else path] = m
        return out

    def tensor_names(self) -> dict[str, int]:
        """Every parameter and buffer the nodes install, by qualified name (numel), found
        once; adapters add theirs to this same table. `prefixes` are the module names
        above them, as they were before any adapter."""
        if self.names is None:
            names: dict[str, int] = {}
            for n in self.g.nodes:
                node = self.g.nodes[n]
                names.update(node.get("parameters", {}))
                names.update(node.get("buffers", {}))
            self.names = names
            self.prefixes = sorted({".".join(k.split(".")[:i]) for k in names
                                    for i in range(1, k.count(".") + 1)})
        return self.names

    def may_name_broken(self, pattern: str) -> bool:
        """Whether a pattern could name tensors of a node the check could not build."""
        heads = set()
        for n in self.broken:
            node = self.g.nodes[n]
            if node["kind"] == "source":
                heads.add(n)
            elif node["kind"] in ("part", "layer", "apply") or node.get("invalid"):
                heads.add(node.get("source") or node.get("module") or n)
        head = pattern.split("@")[0]
        return any(fnmatch.fnmatchcase(h, head.split(".")[0]) or h.startswith(head)
                   for h in {h.split(".")[0] for h in heads})


def pattern_matches(name: str, pattern: str) -> bool:
    """A glob over qualified names; a pattern naming a module covers everything below it."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def torch_reason(e: Exception) -> str:
    """The first line of what torch said, as a diagnostic's note."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:400] if text else ''}"


def run_check(graph: SynthGraph, passes: Sequence[Callable[[CheckContext], None]],
              raise_errors: bool = True, weights: bool = True) -> SynthGraph:
    """Run `passes` in order on one context, then write what the check found on the graph."""
    ctx = CheckContext(graph, weights, passes)
    for pass_ in passes:
        pass_(ctx)
    graph.graph["errors"] = SynthErrors(ctx.errors.errors).errors if ctx.errors.errors else []
    graph.graph["warnings"] = ctx.warnings
    graph.graph["symbols"] = dict(ctx.probes)
    graph.graph["checked"] = True
    for n in ctx.broken:
        graph.nodes[n]["broken"] = True
    if raise_errors and ctx.errors.errors:
        raise SynthErrors(ctx.errors.errors)
    return graph

