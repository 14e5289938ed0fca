"""What every pass of the check shares: the graph, the diagnostics, and what earlier passes found.

A pass is a function ``pass_(ctx: CheckContext) -> None``. It reads the graph and
what earlier passes left on the context (the meta models of the sources, the part
plans, the meta value of each node, the broken set), adds diagnostics with
``ctx.err`` or ``ctx.warn``, and writes its findings on the graph. `run_check`
runs a list of passes and writes the summary keys every later stage reads.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable, Sequence

import torch
from torch import nn

from synthdsl.graph import SynthGraph
from synthdsl.lang.ast import Span
from synthdsl.lang.errors import Collector, SynthError, SynthErrors, fmt_shape
from synthdsl.library.parts import PartPlan

#: Where probe sizes start: symbolic dimensions get distinct primes just below this one
#: (9973, 9967, ...), lower when an input has so many symbolic dimensions that their
#: product would not fit a tensor's size, and never a number the spec writes.
PROBE_TOP = 9973

#: The product of an input's sizes, probes included, stays below this many values.
PROBE_ROOM = 2 ** 50

#: The smallest probe size.
PROBE_FLOOR = 17


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def literal_numbers(g: SynthGraph) -> set[int]:
    """Every whole number the spec writes: input sizes, options, source keywords."""
    found: set[int] = set()

    def walk(v: Any) -> None:
        if isinstance(v, bool):
            return
        if isinstance(v, int):
            found.add(v)
        elif isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 63:
            found.add(int(v))
        elif isinstance(v, (tuple, list)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    for n in g.nodes:
        node = g.nodes[n]
        for key in ("dims", "options", "create_kwargs"):
            walk(node.get(key))
    return found


def choose_probes(g: SynthGraph, symbols: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Two assignments of probe sizes to `symbols`: distinct primes, no two alike across
    both, none a number the spec writes. The check runs every node under both: a size
    that is the same in both is fixed, one that moves follows from a symbol."""
    if not symbols:
        return {}, {}
    avoid = literal_numbers(g)
    most, fixed = 1, 1
    for n in g.of_kind("input"):
        dims = g.nodes[n]["dims"]
        count = sum(isinstance(d, str) for d in dims)
        most = max(most, count)
        product = 1
        for d in dims:
            if isinstance(d, int) and d > 0:
                product *= d
        fixed = max(fixed, product)
        oversized = any(isinstance(d, int) and d > 2 ** 48 for d in dims)  # S007 at the dim
        if not oversized and PROBE_FLOOR ** count * product > 2 ** 62:  # no probe sizes fit
            raise SynthError("S007", f"input '{g.nodes[n]['name']}' has {count} symbolic "
                             "dimensions" + (f" beside fixed ones of {product:,} elements"
                                             if product > 1 else "")
                             + "; the check cannot give them sizes a tensor can have",
                             g.nodes[n]["span"], hint="fix some dimensions to a size, or "
                             "split the input")
    top = min(PROBE_TOP, int((PROBE_ROOM / fixed) ** (1 / most))) if fixed < PROBE_ROOM \
        else PROBE_FLOOR
    top = max(top, PROBE_FLOOR)
    bounds = g.graph.get("dim_bounds", {})
    free = [s for s in symbols if s not in bounds]
    # the tightest bounds first: they have the fewest sizes to choose from
    bounded = sorted((s for s in symbols if s in bounds), key=lambda s: bounds[s])
    taken: set[int] = set()
    first: dict[str, int] = {}
    second: dict[str, int] = {}
    for s in bounded:
        found = _bounded_probes(min(top, bounds[s]), avoid, taken)
        if found is None:
            raise SynthError("S007", f"'{s}<={bounds[s]}' and the other bounds leave the "
                             f"check too few sizes to run each symbol at two of its own",
                             g.graph.get("dim_bound_spans", {}).get(s),
                             hint="raise a bound, or fix a dimension to its size")
        first[s], second[s] = found
        taken |= set(found)
    want = 2 * len(free)
    primes = [p for p in range(top, PROBE_FLOOR - 1, -1)
              if p not in avoid and p not in taken and _is_prime(p)]
    p = top + 1
    while len(primes) < want:  # too few below the top: continue above it
        if p not in avoid and p not in taken and _is_prime(p):
            primes.append(p)
        p += 1
    first.update(zip(free, primes[:len(free)]))
    second.update(zip(free, primes[len(free):want]))
    return ({s: first[s] for s in symbols}, {s: second[s] for s in symbols})


def _bounded_probes(top: int, avoid: set[int], taken: set[int]) -> tuple[int, int] | None:
    """Two sizes of at most `top` for a bounded symbol: the largest primes the spec writes
    no literal of and no other symbol has, else the largest such numbers, else any two the
    other symbols do not have (a probe may then equal a literal: a size equal in both runs
    still reads as fixed); None when fewer than two are left."""
    sizes = range(top, 1, -1)
    for fits in (lambda n: n not in avoid and _is_prime(n), lambda n: n not in avoid,
                 lambda n: True):
        found = [n for n in sizes if n not in taken and fits(n)][:2]
        if len(found) == 2:
            return found[0], found[1]
    return None


class Derived(str):
    """A size that follows from symbolic ones but is none of them (``H-2``, ``?``): it
    reads as its expression, and equals only the same size."""

    key: tuple

    def __new__(cls, text: str, key: tuple) -> "Derived":
        s = super().__new__(cls, text)
        s.key = key
        return s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Derived) and other.key == self.key

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.key)


def spell_dim(d1: int, d2: int, probes: dict[str, int], probes2: dict[str, int]):
    """How a size reads, from its values under the two probe assignments: a number when
    both agree, the symbol both probes belong to, else the one expression ``a*S+b`` in a
    symbol that fits both (``H-2``, ``4*T``), else ``?``."""
    if d1 == d2:
        return d1
    fits = []
    for s, p in probes.items():
        q = probes2[s]
        if d1 == p and d2 == q:
            return s
        a, rest = divmod(d1 - d2, p - q)
        if rest or a < 1:
            continue
        b = d1 - a * p
        if d2 == a * q + b and abs(b) < min(p, q) // 2:
            fits.append((s, a, b))
    if len(fits) != 1:
        return Derived("?", (d1, d2))
    s, a, b = fits[0]
    text = (f"{a}*{s}" if a != 1 else s) + (f"+{b}" if b > 0 else f"{b}" if b < 0 else "")
    return Derived(text, (d1, d2))


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
        # every node runs twice on meta, once per assignment (see checks.probes)
        self.probes, self.probes2 = choose_probes(g, symbols)
        self.symbol_of = {v: k for k, v in self.probes.items()}
        self.spelled: dict[int, Any] = {}          # a size of the first run -> how it reads
        self.values2: dict[str, Any] = {}          # node -> its meta value(s), second run
        self.made: dict[str, list] = {}            # part node -> tensors made inside it
        self.exact: dict[str, tuple] = {}          # node -> its shape, derived sizes apart
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
        """A meta tensor's shape (of the first run), with probe sizes spelled as their
        symbols again and sizes that follow from them as their expressions."""
        return tuple(self.symbol_of.get(int(d)) or self.spelled.get(int(d), int(d))
                     for d in t.shape)

    def spell(self, t1: torch.Tensor, t2: torch.Tensor | None) -> tuple:
        """A value's shape from both runs: what is fixed, what is a symbol, what follows
        from one. Sizes that follow from symbols are remembered for `shape_of`."""
        if t2 is None or len(t1.shape) != len(t2.shape):
            return self.shape_of(t1)
        out = []
        for d1, d2 in zip(t1.shape, t2.shape):
            d = spell_dim(int(d1), int(d2), self.probes, self.probes2)
            if isinstance(d, Derived):
                self.spelled.setdefault(int(d1), d)
            out.append(d)
        return tuple(out)

    def reason(self, e: Exception) -> str:
        """What torch said, with probe sizes (and sizes that follow from them) spelled
        as the spec spells them: probe values never reach a message."""
        text = torch_reason(e)
        table = {**{str(v): s for s, v in self.probes.items()},
                 **{str(v): s for s, v in self.probes2.items()},
                 **{str(k): str(v) for k, v in self.spelled.items()}}
        return re.sub(r"\d+", lambda m: table.get(m.group(0), m.group(0)), text)

    def describe(self, n: str) -> str:
        """How the spec spells a value: its name, or the call that makes it if it has none."""
        node = self.g.nodes[n]
        if n == node["name"] or node["kind"] == "input":
            return f"'{node['name']}'"
        return f"{node['label']}(...)"

    @staticmethod
    def call_span(node):
        """A call's own text: a pipe's stage (``Linear(out=5)``) without what flows in."""
        span, callee = node.get("span"), node.get("callee_span")
        if span is None or callee is None or callee.start <= span.start:
            return span
        return Span(span.file, callee.line, callee.column, span.end_line, span.end_column,
                    callee.start, span.end)

    def dim_span(self, n: str, i: int):
        """Where dimension `i` of input `n` is written (the input's span if not found)."""
        span = self.g.nodes[n]["span"]
        text = str(self.g.graph.get("text") or "")
        part = text[span.start:span.end] if span is not None else ""
        open_ = part.find("[")
        if open_ < 0:
            return span
        at = span.start + open_ + 1
        for k, piece in enumerate(part[open_ + 1:].split(",")):
            body = piece.split("]")[0]
            if k == i:
                lead = len(body) - len(body.lstrip())
                start, end = at + lead, at + len(body.rstrip())
                line = text.count("\n", 0, start) + 1
                column = start - (text.rfind("\n", 0, start) + 1) + 1
                return Span(span.file, line, column, line, column + end - start, start, end)
            at += len(piece) + 1
        return span

    def described_inputs(self, node) -> list[str]:
        """A note per input of a node: its positional inputs, then its keyword data inputs."""
        return [f"input {i + 1} {self.describe(src)} has shape "
                f"{fmt_shape(self.g.nodes[src]['shape'])}" for i, src in enumerate(node["inputs"])
                ] + [f"keyword input {k}={self.describe(src)} has shape "
                     f"{fmt_shape(self.g.nodes[src]['shape'])}"
                     for k, src in (node.get("keywords") or {}).items()]

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

