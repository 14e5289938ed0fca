"""The one intermediate form: :class:`SynthGraph` and the typed records of its nodes.

A ``SynthGraph`` is a ``networkx.DiGraph``. Its node attribute dicts, edge
attribute dicts and ``graph.graph`` stay plain dicts, so every reader keeps
``g.nodes[n]["shape"]``; what each may hold is written down here, one
``TypedDict`` per node kind (:data:`NODE_RECORDS`), per edge kind
(:data:`EDGE_RECORDS`) and one for the graph (:class:`GraphRecord`), each field
with its type and meaning. Fields marked ``NotRequired`` appear only in some
nodes, or only once a later stage has written them: the builder
(:mod:`synthdsl.graph.build`) writes the required ones, the check adds
``shape``, ``params``, ``build``, ``used`` and the rest.
:meth:`SynthGraph.validate` checks a graph against these records.

>>> from synthdsl.lang.parse import parse_spec
>>> from synthdsl.graph import build_graph
>>> g = build_graph(parse_spec("synth A input x: [B, 8] y = Linear(x, out=4) output y"))
>>> sorted(NODE_RECORDS), g.validate()
(['apply', 'checkpoint', 'input', 'item', 'layer', 'loss', 'op', 'output', 'part', 'source'], [])
>>> g.nodes["y"]["bogus"] = 1
>>> g.validate()
["node 'y' (layer): unknown key 'bogus'"]
"""

# no `from __future__ import annotations`: TypedDict reads NotRequired[...] only when it
# is a real object, not a string

import heapq
from typing import Any, Iterator, Literal, NotRequired, TypedDict, Union

import networkx as nx

from synthdsl.lang.ast import Span
from synthdsl.lang.errors import SynthError

#: A dimension: a size, or the name of a symbolic dimension (``B``).
Dim = Union[int, str]
#: A shape as the check writes it: symbolic dimensions keep their names.
Shape = tuple[Dim, ...]


# ---- nodes -------------------------------------------------------------------


class NodeRecord(TypedDict):
    """What every node holds, whatever its kind."""

    kind: str                          #: the node kind, a key of NODE_RECORDS
    name: str                          #: what the spec calls it (the value, source, file)
    label: str                         #: a short description for tables and pictures
    span: Span                         #: where the spec says it
    inputs: tuple[str | None, ...]     #: ids of its data inputs in order; None: unresolved
    options: dict[str, Any]            #: keyword arguments, as literals
    option_spans: dict[str, Span]      #: where each option is written
    invalid: NotRequired[bool]         #: the node itself is already reported (builder)
    broken: NotRequired[bool]          #: the check could not run it (it, or an input, failed)
    shape: NotRequired[Shape]          #: the check: its output's shape
    shapes: NotRequired[tuple[Shape, ...]]  #: the check: shapes of a call giving several values
    dtype: NotRequired[str]            #: the check: its output's dtype (``float32``)
    dtypes: NotRequired[tuple[str, ...]]  #: the check: dtypes of a call giving several values
    params: NotRequired[int]           #: the check: parameters it installs (a source: has)


class InputNode(NodeRecord):
    """``input x: [B, 3, 224, 224]``."""

    dims: tuple[Dim, ...]              #: the declared shape; names are symbolic dimensions
    input_dtype: str                   #: the declared element type (``float32``, ``int64``)


class SourceNode(NodeRecord):
    """``source r = timm("resnet18", ...)`` or ``source s = spec("other.synth")``."""

    constructor: str                   #: timm, spec (anything else is reported)
    target: str                        #: the architecture name, or the spec path as written
    target_span: Span                  #: where the target string is
    weights: str | None                #: the checkpoint path, resolved from the spec folder
    weights_span: Span | None          #: where weights= is written
    weights_text: NotRequired[str]     #: the checkpoint path as written
    pretrained: bool                   #: pretrained=true: hub weights
    create_kwargs: dict[str, Any]      #: keyword arguments passed to the constructor
    path_resolved: NotRequired[str]    #: spec(...): the absolute path of the .synth file
    graph: NotRequired[Union["SynthGraph", None]]  #: spec(...): its graph; None if unreadable
    outputs: NotRequired[list[str]]    #: spec(...): the names of its outputs
    files: NotRequired[list[dict[str, Any]]]  #: merge(...), hf(...): the files its options
    #: or its folder name (option, index, text, path, span; hf's config: what)
    folder: NotRequired[str]           #: hf(...): its folder, resolved from the spec folder
    hub: NotRequired[str]              #: hf(...): the hub name, when no folder is there
    weights_view: NotRequired[dict[str, Any]]  #: the check: the model's tensors in the file


class CallNode(NodeRecord):
    """What every node made by a call or a pipe stage holds."""

    callee_span: Span                  #: where the callee's name is
    index: tuple[int | None, int | None, bool] | None  #: [start:stop] or [item] (start, -, True)
    index_span: NotRequired[Span]      #: where the item or slice is written, brackets included
    unpack: NotRequired[int]           #: `a, b = ...`: how many names receive its values
    keywords: NotRequired[dict[str, str | None]]  #: keyword data inputs: keyword -> node id
    keyword_spans: NotRequired[dict[str, Span]]   #: where each keyword input is written
    applies: NotRequired[str]          #: `b = a(y)`: the name applied again
    shares: NotRequired[str]           #: the node whose module this one applies again
    parameters: NotRequired[dict[str, int]]  #: the check: parameter name -> element count
    buffers: NotRequired[dict[str, int]]     #: the check: buffer name -> element count
    frozen_params: NotRequired[int]    #: the check: frozen elements of `parameters`
    trainable_params: NotRequired[int]  #: the check: trainable elements of `parameters`


class PartNode(CallNode):
    """``r.layer4(x)``, ``r.forward_features(x)``, ``vgg.features[0:10](x)``, ``s(x)``."""

    source: str                        #: the source node id
    path: tuple[str, ...]              #: the submodule's dotted path inside the source
    method: str | None                 #: forward_features / forward_head, else None
    module: str                        #: its qualified name in the compiled module
    used: NotRequired[list[str]]       #: the check: the source parameters it really uses


class LayerNode(CallNode):
    """``Linear(x, out=8)``: a new layer from the registry."""

    layer: str                         #: the registry name (synthdsl.library.layers)
    module: str                        #: its qualified name in the compiled module
    build: NotRequired[dict[str, Any]]  #: the check: constructor arguments, sizes inferred


class OpNode(CallNode):
    """``concat(a, b, dim=1)``: an operation from the registry."""

    op: str | None                     #: the registry name; None where it is unknown


class ApplyNode(CallNode):
    """``b = a(y)`` whose target could not be resolved (resolved ones become parts/layers)."""


class ItemNode(NodeRecord):
    """One value of a call unpacked into several names (``a, b = f(x)``)."""

    item: int                          #: its index among the call's values


class CheckpointNode(NodeRecord):
    """A file an ``inherit ... from checkpoint("f")`` statement reads."""

    weights: str                       #: the path, resolved from the spec folder
    weights_text: str                  #: the path as written
    weights_span: Span                 #: where it is written


class LossNode(NodeRecord):
    """``loss ce(logits)``: a sink only training reads; `name` is the loss kind."""

    kind_span: Span                    #: where the loss kind is written
    arg_spans: tuple                   #: where each value it reads is written (Spans)


class OutputNode(NodeRecord):
    """``output y``: one per declared output, id ``output:y``."""

    of: str | None                     #: the node id it returns; None if unresolved


#: The record of each node kind.
NODE_RECORDS: dict[str, type] = {
    "input": InputNode, "source": SourceNode, "part": PartNode, "layer": LayerNode,
    "op": OpNode, "apply": ApplyNode, "item": ItemNode, "checkpoint": CheckpointNode,
    "loss": LossNode, "output": OutputNode}


# ---- edges -------------------------------------------------------------------


class DataEdge(TypedDict):
    """A value flowing into a node."""

    kind: Literal["data"]
    positions: list[int]               #: the argument positions it feeds
    keywords: NotRequired[list[str]]   #: the keywords it feeds (`t(x, attention_mask=m)`)
    shape: NotRequired[Shape]          #: the check: the value's shape


class MemberEdge(TypedDict):
    """From a source to each part taken from it."""

    kind: Literal["member"]


class ShareEdge(TypedDict):
    """From a value to a node that applies its module again."""

    kind: Literal["share"]


class InheritEdge(TypedDict):
    """From a donor (a source or a checkpoint) to the node whose tensors it initialises."""

    kind: Literal["inherit"]
    statements: list[int]              #: indexes into graph["inherits"]
    tensors: NotRequired[int]          #: the check: tensors mapped
    params: NotRequired[int]           #: the check: elements mapped
    mode: NotRequired[str]             #: the check: strict or partial


EDGE_RECORDS: dict[str, type] = {"data": DataEdge, "member": MemberEdge, "share": ShareEdge,
                                 "inherit": InheritEdge}


# ---- graph-level records -------------------------------------------------------


class RuleRecord(TypedDict):
    """A ``freeze``, ``train``, ``optimize`` or ``adapt`` statement, in the order written."""

    action: str                        #: freeze, train, optimize or adapt
    patterns: list[tuple[str, Span]]   #: each pattern and where it is written
    options: dict[str, Any]            #: `with k=v` options
    option_spans: dict[str, Span]      #: where each option is written
    span: Span                         #: the statement
    method: NotRequired[str]           #: adapt: lora or bias
    method_span: NotRequired[Span]     #: adapt: where the method is written


class InheritRecord(TypedDict):
    """An ``inherit`` statement, resolved."""

    index: int                         #: its place in graph["inherits"]
    span: Span                         #: the statement
    target_span: Span                  #: where the target is written
    donor_span: Span                   #: where the donor is written
    sub: tuple[str, ...]               #: a path inside the target node's module
    options: dict[str, Any]            #: `with k=v` options
    option_spans: dict[str, Span]      #: where each option is written
    donor: str                         #: the donor node id (a source, or checkpoint:FILE)
    donor_path: tuple[str, ...]        #: the module path inside the donor source
    target: str                        #: the node id whose module inherits
    mapping: NotRequired[list[dict[str, Any]]]  #: the check: target, key, transform, numel
    skipped: NotRequired[list[str]]    #: the check: tensors not copied (strict=false)
    target_path: NotRequired[str]      #: the check: the qualified target module
    mode: NotRequired[str]             #: the check: strict or partial
    donor_label: NotRequired[str]      #: the check: how messages name the donor


class LossRecord(TypedDict):
    """A ``loss`` statement, as training reads it."""

    node: str                          #: its loss node id
    kind: str                          #: ce, distill, feature
    inputs: list[str]                  #: the value names it reads
    options: dict[str, Any]            #: its options


class PolicyRecord(TypedDict):
    """A ``policy NAME = value`` statement."""

    value: Any
    span: Span
    value_span: Span


class GraphRecord(TypedDict):
    """``graph.graph``: the spec as a whole."""

    name: str                          #: the spec's name
    file: str | None                   #: the spec's file, if it came from one
    text: str                          #: the spec's text (diagnostics point into it)
    base_dir: str                      #: where relative paths in the spec start
    inputs: list[str]                  #: input node ids, in declaration order
    outputs: list[str]                 #: output node ids, in declaration order
    output_names: list[str]            #: the declared output names
    rules: list[RuleRecord]            #: freeze / train / optimize / adapt statements
    diagnostics: list[SynthError]      #: the builder's findings, reported by the check
    inherits: NotRequired[list[InheritRecord]]      #: inherit statements
    losses: NotRequired[list[LossRecord]]           #: loss statements
    recipe: NotRequired[dict[str, Any]]             #: recipe options
    recipe_spans: NotRequired[dict[str, Span]]      #: where each recipe option is written
    dim_bounds: NotRequired[dict[str, int]]         #: symbolic dim -> its largest size (T<=512)
    dim_bound_spans: NotRequired[dict[str, Span]]   #: where each bound is written
    policies: NotRequired[dict[str, PolicyRecord]]  #: policy statements by name
    checked: NotRequired[bool]                      #: the check has run
    errors: NotRequired[list[SynthError]]           #: the check: every error, sorted
    warnings: NotRequired[list[SynthError]]         #: the check: warnings
    symbols: NotRequired[dict[str, int]]            #: the check: symbolic dim -> probe size
    frozen: NotRequired[list[str]]                  #: the check: frozen parameter names
    param_options: NotRequired[dict[str, dict[str, Any]]]  #: the check: per-parameter options
    adapters: NotRequired[list[dict[str, Any]]]     #: the check: module, method, rank, alpha
    compression: NotRequired[list[dict[str, Any]]]  #: the check: method, options, modules, line per prune / quantize
    norm_policy: NotRequired[str]                   #: the check: follow, frozen or train
    sources: NotRequired[Any]    #: the check: the run's library.cache.Sources (models once)
    plans: NotRequired[dict[str, Any]]  #: the check: part node -> its library.parts.PartPlan


# ---- the graph -----------------------------------------------------------------


class SynthGraph(nx.DiGraph):
    """The resolved spec: a DiGraph plus the spec's name, text, outputs and training rules.

    The deterministic topological order is computed once and kept until the
    graph's structure changes (any node or edge added or removed).
    """

    def __init__(self, incoming_graph_data=None, **attr) -> None:
        self._order: tuple[list[str], bool] | None = None  # (topological order, acyclic)
        super().__init__(incoming_graph_data, **attr)

    # every structural change forgets the order (attribute changes keep it)
    def add_node(self, node_for_adding, **attr):
        if node_for_adding not in self._node:
            self._order = None
        super().add_node(node_for_adding, **attr)

    def add_edge(self, u_of_edge, v_of_edge, **attr):
        if v_of_edge not in self._succ.get(u_of_edge, ()):
            self._order = None
        super().add_edge(u_of_edge, v_of_edge, **attr)

    def _forgetting(name):  # noqa: N805 - builds the other mutators below
        def method(self, *args, **kwargs):
            self._order = None
            return getattr(nx.DiGraph, name)(self, *args, **kwargs)
        method.__name__ = name
        method.__doc__ = getattr(nx.DiGraph, name).__doc__
        return method

    for _name in ("add_nodes_from", "remove_node", "remove_nodes_from", "add_edges_from",
                  "add_weighted_edges_from", "remove_edge", "remove_edges_from", "update",
                  "clear", "clear_edges"):
        locals()[_name] = _forgetting(_name)
    del _name, _forgetting

    @property
    def name(self) -> str:
        return self.graph.get("name", "")

    @property
    def diagnostics(self) -> list[SynthError]:
        return self.graph.setdefault("diagnostics", [])

    @property
    def outputs(self) -> list[str]:
        """Output node ids, in the order the spec declares them."""
        return self.graph.get("outputs", [])

    @property
    def inputs(self) -> list[str]:
        return self.graph.get("inputs", [])

    def of_kind(self, *kinds: str) -> list[str]:
        nodes = self._node
        return [n for n in self._sorted()[0] if nodes[n]["kind"] in kinds]

    def data_edges(self) -> Iterator[tuple[str, str]]:
        return ((u, v) for u, v, k in self.edges(data="kind") if k == "data")

    def topological_order(self) -> list[str]:
        """A deterministic order (declaration order breaks ties); all nodes if cyclic.

        A new list each call (callers may change it); computed once per structure.
        """
        return list(self._sorted()[0])

    def is_acyclic(self) -> bool:
        """Whether no path, over edges of any kind, leads from a node back to itself."""
        return self._sorted()[1]

    def _sorted(self) -> tuple[list[str], bool]:
        """Kahn's algorithm, always taking the earliest-declared ready node: the order of
        ``nx.lexicographical_topological_sort(g, key=declaration index)``, in a third of
        its time (a heap of ints, no key calls)."""
        if self._order is None:
            nodes = list(self._node)
            rank = {n: i for i, n in enumerate(nodes)}
            waiting = {n: len(p) for n, p in self._pred.items()}
            ready = [rank[n] for n, k in waiting.items() if k == 0]
            heapq.heapify(ready)
            order = []
            succ = self._succ
            while ready:
                n = nodes[heapq.heappop(ready)]
                order.append(n)
                for m in succ[n]:
                    waiting[m] -= 1
                    if waiting[m] == 0:
                        heapq.heappush(ready, rank[m])
            acyclic = len(order) == len(nodes)
            self._order = (order if acyclic else nodes, acyclic)
        return self._order

    def reaching(self, targets) -> set[str]:
        """The targets and every node with a path to one of them (one walk for all)."""
        seen = set(targets)
        stack = list(seen)
        pred = self._pred
        while stack:
            for p in pred[stack.pop()]:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen

    def validate(self) -> list[str]:
        """Every problem of the graph against its records: unknown or missing keys, wrong
        types, on nodes, edges and ``graph.graph``; spec sources' graphs too. Empty: valid."""
        from synthdsl.graph.validate import graph_problems

        return graph_problems(self)
