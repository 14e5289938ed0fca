"""Sources built once per run: the cache the check fills and every later stage reads.

A run (one ``check_graph`` and what follows it on that graph: compile, pictures,
data, ``synth nodes``) keeps one :class:`Sources` on the graph
(``graph.graph["sources"]``, :func:`sources_of`). For each source it holds the
meta model, built on first use, and what is read from it once: feature stages,
cut points (the traces behind them), the data config; the parts the check bound
to the meta model; and the run's checkpoint readers (:class:`ReaderCache`), so a
file's header is read once for the check and its tensors from the same opening
by the compiler.

A compiler that installs the check's meta model (a source with a checkpoint:
"meta once, real once") takes it (:meth:`Sources.take`): the cache then no longer
hands it out, and a later use builds a fresh one. A stage cut may prune the meta
model it is bound to; whoever needs the model as timm built it
(:meth:`Sources.pristine`) then gets a fresh one too.

The cache is not copied or pickled with the graph: a copy starts empty.

>>> from synthdsl.lang.parse import parse_spec
>>> from synthdsl.graph import build_graph
>>> g = build_graph(parse_spec('synth A input x: [B, 3, 32, 32] '
...                            'source r = timm("test_resnet") y = r(x) output y'))
>>> s = sources_of(g)
>>> s.meta("r") is s.meta("r"), s.feature_info("r")[1]["module"]
(True, 'layer1')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from synthdsl.library.checkpoints import ReaderCache, TensorReader
from synthdsl.library.cuts import release_traces
from synthdsl.library.parts import Part, PartPlan
from synthdsl.library.sources import SourceKind, source_kind


@dataclass
class SourceEntry:
    """What the run knows of one source."""

    kind: SourceKind
    model: nn.Module | None = None       # on meta, as the check uses it
    changed: bool = False                # a stage cut pruned `model`
    pristine: nn.Module | None = None    # on meta, as timm built it (when `model` changed)
    facts: dict[str, Any] = field(default_factory=dict)   # feature_info, data_config
    parts: dict[str, Part] = field(default_factory=dict)  # part node -> bound to `model`


class Sources:
    """The per-run cache of a graph's sources (see the module's docstring)."""

    def __init__(self, graph) -> None:
        self._graph = graph
        self._entries: dict[str, SourceEntry] = {}
        self.readers = ReaderCache()

    # a copied or pickled graph starts with an empty cache of its own
    def __deepcopy__(self, memo):
        return Sources(memo.get(id(self._graph), self._graph))

    def __reduce__(self):
        return (_empty, ())

    def node(self, name: str) -> dict:
        return self._graph.nodes[name]

    def kind(self, name: str) -> SourceKind | None:
        return source_kind(self.node(name)["constructor"])

    def entry(self, name: str) -> SourceEntry:
        entry = self._entries.get(name)
        if entry is None:
            kind = self.kind(name)
            if kind is None:
                raise KeyError(f"'{name}' is not a source synthdsl can build")
            entry = self._entries[name] = SourceEntry(kind)
        return entry

    def _build(self, name: str, device: str, load_weights: bool = True) -> nn.Module:
        return self.entry(name).kind.build(self.node(name), device, load_weights)

    # -- models --------------------------------------------------------------------

    def meta(self, name: str) -> nn.Module:
        """The source's model on the meta device, built on first use (what the check runs)."""
        entry = self.entry(name)
        if entry.model is None:
            entry.model, entry.changed, entry.parts = self._build(name, "meta"), False, {}
        return entry.model

    def built(self, name: str) -> nn.Module | None:
        """The meta model if it was built this run, else None (nothing is built)."""
        entry = self._entries.get(name)
        return entry.model if entry is not None else None

    def pristine(self, name: str) -> nn.Module:
        """A meta model exactly as the kind builds it (not pruned by a part)."""
        entry = self.entry(name)
        if entry.model is not None and not entry.changed:
            return entry.model
        if entry.pristine is None:
            entry.pristine = self._build(name, "meta")
        return entry.pristine

    def real(self, name: str, device: str = "cpu", load_weights: bool = True) -> nn.Module:
        """The source built for real (its weights loaded); the caller owns it."""
        return self._build(name, device, load_weights)

    def take(self, name: str) -> tuple[nn.Module | None, dict[str, Part]]:
        """Hand the meta model over to a compiler that fills it with weights, with the
        parts the check bound to it; later uses of the cache build a fresh one."""
        entry = self._entries.get(name)
        if entry is None or entry.model is None:
            return None, {}
        model, parts = entry.model, entry.parts
        if not entry.changed and entry.pristine is None:
            entry.facts.setdefault("data_config", _data_config(entry.kind, model))
        entry.model, entry.parts, entry.changed = None, {}, False
        release_traces(model)  # its parts are bound: the traces are not needed again
        return model, parts

    # -- what the check learns ------------------------------------------------------

    def keep_part(self, name: str, part_node: str, part: Part) -> None:
        """Keep a part the check bound to the source's meta model, and its typed plan on
        the graph (``graph.graph["plans"]``, what the compiler executes)."""
        entry = self.entry(name)
        entry.parts[part_node] = part
        from synthdsl.library.parts import StagesPlan

        if isinstance(part.plan, StagesPlan) and part.plan.prune:
            entry.changed = True
        self._graph.graph.setdefault("plans", {})[part_node] = part.plan

    def settle(self) -> None:
        """The parts are planned: let the meta models' traces go (their memory is the
        bulk of what a check holds); the node names already read stay."""
        for entry in self._entries.values():
            for model in (entry.model, entry.pristine):
                if model is not None:
                    release_traces(model)

    def plan(self, part_node: str) -> PartPlan | None:
        """The typed plan the check made for a part node, if any."""
        return self._graph.graph.get("plans", {}).get(part_node)

    # -- facts, read once ---------------------------------------------------------------

    def feature_info(self, name: str) -> list[dict]:
        entry = self.entry(name)
        if "feature_info" not in entry.facts:
            entry.facts["feature_info"] = entry.kind.feature_info(self.pristine(name))
        return entry.facts["feature_info"]

    def node_names(self, name: str) -> list[str]:
        """The fx node names the source can be cut at (its meta model traced once)."""
        entry = self.entry(name)
        if "node_names" not in entry.facts:
            entry.facts["node_names"] = entry.kind.node_names(self.pristine(name))
        return entry.facts["node_names"]

    def data_config(self, name: str) -> dict | None:
        """The source's preprocessing (timm's data config: mean, std, interpolation)."""
        entry = self.entry(name)
        if "data_config" not in entry.facts:
            entry.facts["data_config"] = _data_config(entry.kind, self.pristine(name))
        return entry.facts["data_config"]

    def fact(self, name: str, key: Any, compute: Callable[[nn.Module], Any]) -> Any:
        """`compute(model)` on the source's model as its kind builds it, once per run and
        `key` (what a picture or a command reads from a model, kept like the rest)."""
        entry = self.entry(name)
        if key not in entry.facts:
            entry.facts[key] = compute(self.pristine(name))
        return entry.facts[key]

    # -- checkpoints -----------------------------------------------------------------

    def reader(self, path) -> TensorReader:
        """The run's reader of a checkpoint file (opened once)."""
        return self.readers.open(path)

    def shapes(self, path) -> dict[str, tuple[int, ...]]:
        """Tensor names and shapes of a checkpoint, from the run's reader."""
        return self.readers.shapes(path)

    def close(self) -> None:
        """Close the run's checkpoint readers (memory maps and file handles go)."""
        self.readers.close()


def _data_config(kind: SourceKind, model: nn.Module) -> dict | None:
    return kind.data_config(model)


def _empty() -> None:
    return None


def sources_of(graph) -> Sources:
    """The graph's per-run cache, made on first use."""
    sources = graph.graph.get("sources")
    if not isinstance(sources, Sources):
        sources = graph.graph["sources"] = Sources(graph)
    return sources
