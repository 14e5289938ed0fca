"""The typed IR: every graph the builder and the check write fits its records.

``SynthGraph.validate()`` compares each node's attribute dict with the record
of its kind (``synthdsl.graph.ir.NODE_RECORDS``), each edge with its edge
record and ``graph.graph`` with ``GraphRecord``: no unknown keys, no missing
required ones, every value of its declared type.
"""

import random
from pathlib import Path

import networkx as nx
import pytest

from synthdsl.checks import check_graph
from synthdsl.graph import SynthGraph, build_graph
from synthdsl.graph.ir import NODE_RECORDS, NodeRecord
from synthdsl.lang.ast import Span
from synthdsl.lang.parse import parse_file, parse_spec
from tests.conftest import spec_params

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.synth"))
#: Golden specs that get past the parser: broken graphs must fit the records too.
BROKEN = [p for p in sorted((ROOT / "tests" / "golden").glob("*.synth"))
          if not p.name.startswith("syntax_")]

#: Training statements, a re-applied layer, an unpacked call, a loss, a checkpoint donor.
RICH = """
synth Rich
input x: [B, 8]
lin = Linear(x, out=8)
h = ReLU(lin)
again = lin(h)
z = add(h, again)
logits = Linear(z, out=4)
inherit logits from checkpoint("nowhere.safetensors")
freeze lin
train logits.* with lr_mult=0.1
adapt logits with lora(rank=2, alpha=2)
policy norm = "frozen"
recipe epochs=2, lr=0.01
loss ce(logits)
output logits
"""


def test_models_exist():
    assert len(MODELS) >= 10


@pytest.mark.parametrize("path", spec_params(MODELS))
def test_model_graphs_fit_their_records(path):
    g = build_graph(parse_file(path))
    assert g.validate() == []
    check_graph(g)
    assert g.graph["checked"] is True
    assert g.validate() == []
    # the check wrote what the records promise
    for n in g.nodes:
        node = g.nodes[n]
        if node["kind"] in ("layer", "part", "op", "input", "output"):
            assert "shape" in node or "shapes" in node, n
        if node["kind"] == "layer":
            assert isinstance(node["build"], dict)
            assert "params" in node or "shares" in node, n


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_graphs_fit_their_records(path):
    g = build_graph(parse_file(path))
    assert g.validate() == []
    check_graph(g, raise_errors=False, weights=False)
    assert g.validate() == []


def test_rich_graph_fits_its_records():
    g = build_graph(parse_spec(RICH))
    assert g.validate() == []
    kinds = {g.nodes[n]["kind"] for n in g.nodes}
    assert {"input", "layer", "op", "checkpoint", "loss", "output"} <= kinds
    check_graph(g, raise_errors=False, weights=False)
    assert g.validate() == []
    assert g.nodes["again"]["shares"] == "lin"
    assert [str(e) for e in g.graph["errors"]] == []
    assert [r["action"] for r in g.graph["rules"]] == ["freeze", "train", "adapt"]


def test_validate_names_each_problem():
    g = build_graph(parse_spec("synth A input x: [B, 8] y = Linear(x, out=4) output y"))
    g.nodes["y"]["bogus"] = 1
    g.nodes["y"]["params"] = "many"
    del g.nodes["x"]["dims"]
    g.nodes["output:y"]["kind"] = "mystery"
    g.edges["x", "y"]["positions"] = (0,)
    g.graph["inputs"] = "x"
    problems = g.validate()
    assert "node 'y' (layer): unknown key 'bogus'" in problems
    assert any(p.startswith("node 'y' (layer): 'params' is str") for p in problems)
    assert "node 'x' (input): missing key 'dims'" in problems
    assert "node 'output:y': unknown kind 'mystery'" in problems
    assert any(p.startswith("edge 'x' -> 'y': 'positions' is tuple") for p in problems)
    assert any(p.startswith("graph: 'inputs' is str") for p in problems)
    assert len(problems) == 6


def test_bool_is_not_an_int_and_spans_are_typed():
    g = build_graph(parse_spec("synth A input x: [B, 8] y = ReLU(x) output y"))
    g.nodes["y"]["params"] = True
    g.nodes["y"]["span"] = (1, 1)
    problems = g.validate()
    assert len(problems) == 2 and all(p.startswith("node 'y' (layer): '") for p in problems)


def test_every_kind_has_a_record_with_the_common_keys():
    common = set(NodeRecord.__required_keys__)
    assert common == {"kind", "name", "label", "span", "inputs", "options", "option_spans"}
    for kind, record in NODE_RECORDS.items():
        assert common <= record.__required_keys__, kind


def test_topological_order_follows_structural_changes():
    g = build_graph(parse_spec("synth A input x: [B, 8] y = ReLU(x) output y"))
    first = g.topological_order()
    assert first == ["x", "y", "output:y"]
    first.append("junk")                      # callers get their own list
    assert g.topological_order() == ["x", "y", "output:y"]
    g.nodes["y"]["label"] = "changed"         # attributes do not change the order
    assert g.topological_order() == ["x", "y", "output:y"]
    g.add_node("w", kind="input")             # a new node does
    assert g.topological_order() == ["x", "y", "output:y", "w"]
    g.add_edge("w", "x")
    assert g.topological_order() == ["w", "x", "y", "output:y"]
    g.remove_edge("w", "x")
    g.add_edges_from([("y", "w")])
    assert g.topological_order() == ["x", "y", "output:y", "w"]
    g.remove_node("w")
    assert g.topological_order() == ["x", "y", "output:y"]
    g.add_edge("output:y", "x")               # a cycle: all nodes, declaration order
    assert g.topological_order() == ["x", "y", "output:y"]
    h = g.copy()
    assert isinstance(h, SynthGraph) and h.topological_order() == ["x", "y", "output:y"]
    h.remove_edge("output:y", "x")
    h.add_node("v", kind="input")
    h.add_edge("v", "y")
    assert h.topological_order() == ["x", "v", "y", "output:y"]


@pytest.mark.parametrize("seed", range(30))
def test_topological_order_is_networkx_lexicographic_order(seed):
    rng = random.Random(seed)
    g = SynthGraph()
    names = [f"n{i}" for i in range(rng.randint(1, 40))]
    rng.shuffle(names)
    g.add_nodes_from(names)
    for _ in range(rng.randint(0, 80)):
        u, v = rng.sample(names, 2) if len(names) > 1 else (names[0], names[0])
        if names.index(u) < names.index(v) or rng.random() < 0.1:  # mostly forward edges
            g.add_edge(u, v)
    rank = {n: i for i, n in enumerate(g.nodes)}
    try:
        want = list(nx.lexicographical_topological_sort(g, key=rank.__getitem__))
    except nx.NetworkXUnfeasible:
        want = list(g.nodes)
    assert g.topological_order() == want
    assert g.is_acyclic() == nx.is_directed_acyclic_graph(g)
    target = names[-1]
    assert g.reaching([target]) == nx.ancestors(g, target) | {target}


def test_spans_compare_by_value_but_trees_ignore_them():
    a = Span(line=1, column=2, end_line=1, end_column=5, start=1, end=4)
    b = Span(line=1, column=2, end_line=1, end_column=5, start=1, end=4)
    c = Span(line=3, column=2, end_line=3, end_column=5, start=20, end=23)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    one = parse_spec("synth A input x: [B, 4] y = Linear(x, out=2) output y")
    two = parse_spec("synth A\n\n  input x : [ B , 4 ]\n  y = Linear( x , out = 2 )\noutput y")
    assert one == two and hash(one) == hash(two)
    assert one.statements[1].span != two.statements[1].span
    other = parse_spec("synth A input x: [B, 4] y = Linear(x, out=3) output y")
    assert one != other
