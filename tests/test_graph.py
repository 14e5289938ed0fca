"""`build_graph` alone: the AST resolved into the SynthGraph, before any check.

Node ids follow the spec's names (`h.0`, `h.1` where one assignment makes several nodes);
edges say how values flow (data, with argument positions), which source a part belongs to
(member), which node applies a module again (share) and where tensors come from (inherit);
names may be used before they are defined; mistakes in names are recorded on the graph as
diagnostics rather than raised; the topological order is the same on every run.

Attributes are read through `tests.dumps` (records opened into their fields, spans and empty
values left out), so these tests say what the graph holds, not how it stores it.
"""

from __future__ import annotations

import pytest

from synthdsl.graph import build_graph, spec_texts
from synthdsl.lang.parse import parse_file, parse_spec
from tests.dumps import dump_graph, edge_attributes, node_attributes


def graph_of(text: str):
    return build_graph(parse_spec(text))


def kinds(g) -> list[tuple[str, str]]:
    return [(n, node_attributes(g, n)["kind"]) for n in g.topological_order()]


def edges(g, kind: str) -> set[tuple[str, str]]:
    return {(u, v) for u, v in g.edges if edge_attributes(g, u, v)["kind"] == kind}


def codes(g) -> list[tuple[str, str, int, int]]:
    return [(d.code, d.message, d.span.line, d.span.column) for d in g.diagnostics]


SPEC = """synth G
input x: [B, 4]
input x2: [B, 4]
source r = timm("test_resnet", num_classes=0)
h = add(Linear(x, out=4) |> ReLU, x2)
y = Linear(h, out=2)
f = r.layer1(x)
g = r.layer1(f)
f2 = f(g)
inherit y from r.fc
inherit h.0 from checkpoint("c.pth")
output y, f2
"""


@pytest.fixture(scope="module")
def g():
    return graph_of(SPEC)


def test_node_ids_and_kinds(g):
    assert kinds(g) == [
        ("x", "input"), ("x2", "input"), ("r", "source"), ("f", "part"), ("g", "part"),
        ("f2", "part"), ("checkpoint:c.pth", "checkpoint"), ("h.0", "layer"), ("h.1", "layer"),
        ("h.2", "op"), ("y", "layer"), ("output:y", "output"), ("output:f2", "output")]
    assert g.name == "G" and g.inputs == ["x", "x2"]
    assert g.outputs == ["output:y", "output:f2"]
    assert g.diagnostics == []


def test_an_assignment_of_several_nodes_numbers_them_in_the_order_they_run(g):
    # `h = add(Linear(x) |> ReLU, x2)`: arguments run before the call that uses them
    assert [node_attributes(g, n)["label"] for n in ("h.0", "h.1", "h.2")] == \
        ["Linear", "ReLU", "add"]
    assert {node_attributes(g, n)["name"] for n in ("h.0", "h.1", "h.2")} == {"h"}
    assert node_attributes(g, "h.0")["options"] == {"out": 4}
    # `h` names the last of them
    assert node_attributes(g, "y")["inputs"] == ["h.2"]
    assert "h" not in g


def test_nodes_say_what_they_are(g):
    assert node_attributes(g, "x") == {"kind": "input", "name": "x", "label": "input",
                                       "dims": ["B", 4], "input_dtype": "float32"}
    src = node_attributes(g, "r")
    assert (src["constructor"], src["target"], src["label"]) == ("timm", "test_resnet",
                                                                 "timm:test_resnet")
    assert src["create_kwargs"] == {"num_classes": 0} and src["pretrained"] is False
    part = node_attributes(g, "f")
    assert (part["source"], part["path"], part["module"]) == ("r", ["layer1"], "r.layer1")
    assert node_attributes(g, "h.0")["layer"] == "Linear"
    assert node_attributes(g, "h.0")["module"] == "h.0"
    assert node_attributes(g, "h.2")["op"] == "add"
    assert node_attributes(g, "output:f2")["of"] == "f2"


def test_data_edges_carry_argument_positions(g):
    assert edges(g, "data") == {
        ("x", "h.0"), ("h.0", "h.1"), ("h.1", "h.2"), ("x2", "h.2"), ("h.2", "y"),
        ("x", "f"), ("f", "g"), ("g", "f2"), ("y", "output:y"), ("f2", "output:f2")}
    assert edge_attributes(g, "h.1", "h.2")["positions"] == [0]
    assert edge_attributes(g, "x2", "h.2")["positions"] == [1]
    assert node_attributes(g, "h.2")["inputs"] == ["h.1", "x2"]
    assert set(g.data_edges()) == edges(g, "data")


def test_one_value_used_twice_by_a_call_is_one_edge_with_both_positions():
    g = graph_of("synth A input x: [B, 4] y = concat(x, x, x) output y")
    assert edge_attributes(g, "x", "y") == {"kind": "data", "positions": [0, 1, 2]}


def test_member_share_and_inherit_edges(g):
    assert edges(g, "member") == {("r", "f"), ("r", "g"), ("r", "f2")}
    # `f2 = f(g)` applies the module that made `f` again, sharing its parameters
    assert edges(g, "share") == {("f", "f2")}
    f2 = node_attributes(g, "f2")
    assert (f2["shares"], f2["module"]) == ("f", "r.layer1")
    assert f2["label"] == "r.layer1 (shared with 'f')"
    assert edges(g, "inherit") == {("r", "y"), ("checkpoint:c.pth", "h.0")}
    assert edge_attributes(g, "r", "y")["statements"] == [0]
    assert edge_attributes(g, "checkpoint:c.pth", "h.0")["statements"] == [1]
    inherits = g.graph["inherits"]
    assert [(i["donor"], tuple(i["donor_path"]), i["target"]) for i in inherits] == [
        ("r", ("fc",), "y"), ("checkpoint:c.pth", (), "h.0")]
    ckpt = node_attributes(g, "checkpoint:c.pth")
    assert ckpt["weights_text"] == "c.pth" and ckpt["weights"].endswith("c.pth")


def test_layers_applied_again_share_with_the_first():
    g = graph_of("synth S input a: [B, 4] input b: [B, 4] "
                 "p = Linear(a, out=3) q = p(b) output p, q")
    assert edges(g, "share") == {("p", "q")}
    assert node_attributes(g, "q")["kind"] == "layer"
    assert node_attributes(g, "q")["shares"] == "p"


def test_unpacking_makes_one_item_node_per_name():
    g = graph_of('synth U input x: [B, 3, 32, 32] source r = timm("test_resnet") '
                 "a, b = r(x) output a, b")
    assert kinds(g)[2:5] == [("a_b", "part"), ("a", "item"), ("b", "item")]
    assert node_attributes(g, "a_b")["unpack"] == 2
    assert [node_attributes(g, n).get("item", 0) for n in ("a", "b")] == [0, 1]
    assert edges(g, "data") >= {("a_b", "a"), ("a_b", "b")}


def test_names_may_be_used_before_they_are_defined():
    late = graph_of("synth L output y y = Linear(h, out=2) h = Linear(x, out=3) "
                    "input x: [B, 4]")
    early = graph_of("synth L input x: [B, 4] h = Linear(x, out=3) y = Linear(h, out=2) "
                     "output y")
    assert late.diagnostics == [] and early.diagnostics == []
    assert kinds(late) == kinds(early) == [("x", "input"), ("h", "layer"), ("y", "layer"),
                                           ("output:y", "output")]
    assert dump_graph(late) == dump_graph(early)


def test_an_alias_is_the_value_it_names():
    g = graph_of("synth A input x: [B, 4] h = Linear(x, out=3) y = h output y")
    assert node_attributes(g, "output:y")["of"] == "h" and "y" not in g


def test_losses_recipe_rules_and_policies_are_recorded():
    g = graph_of("synth T input x: [B, 4] y = Linear(x, out=2) loss ce(y, smoothing=0.1) "
                 'recipe epochs=2 freeze y train y.bias with lr_mult=0.5 policy norm = "frozen" '
                 "output y")
    assert node_attributes(g, "loss:0") == {"kind": "loss", "name": "ce", "label": "loss ce",
                                            "inputs": ["y"], "options": {"smoothing": 0.1}}
    assert ("y", "loss:0") in edges(g, "data")
    assert g.graph["recipe"] == {"epochs": 2}
    assert [(r["action"], [p for p, _ in r["patterns"]], r["options"])
            for r in g.graph["rules"]] == [("freeze", ["y"], {}),
                                           ("train", ["y.bias"], {"lr_mult": 0.5})]
    assert g.graph["policies"]["norm"]["value"] == "frozen"


# ---- mistakes are recorded, not raised -------------------------------------------------------


def test_unknown_and_duplicate_names_are_diagnostics_on_the_graph():
    g = graph_of("synth Bad\ninput x: [B, 4]\ninput x: [B, 5]\n"
                 "y = Linear(z, out=2) |> Foo\nw = r.layer(x)\noutput y, nope\n")
    assert codes(g) == [
        ("S102", "'x' is defined twice", 3, 7),
        ("S101", "unknown name 'z'", 4, 12),
        ("S101", "unknown layer or operation 'Foo'", 4, 25),
        ("S101", "unknown source 'r'", 5, 5),
        ("S105", "output 'nope' is not defined", 6, 11)]
    assert g.diagnostics[0].notes == ("first defined at <spec>:2:7",)
    # the graph is still whole enough to draw: the unknown input is None, the bad call a node
    assert node_attributes(g, "y.0")["inputs"] == [None]
    assert node_attributes(g, "y.1")["invalid"] is True
    assert kinds(g) == [("x", "input"), ("y.0", "layer"), ("y.1", "op"), ("w", "op"),
                        ("output:y", "output")]


def test_close_names_are_suggested():
    g = graph_of("synth A input image: [B, 4] y = Linear(imagee, out=2) |> RelU output y")
    assert [d.hint for d in g.diagnostics] == ["did you mean 'image'?", "did you mean 'ReLU'?"]


def test_more_resolution_mistakes():
    g = graph_of('synth M input x: [B, 4] source s = timm("test_resnet") '
                 "a = b b = a c = s output c, s")
    got = [(d.code, d.message) for d in g.diagnostics]
    assert ("S104", "'a' is defined in terms of itself: 'a' → 'b' → 'a'") in got
    assert ("S101", "'s' is a source, not a value") in got
    assert ("S105", "output 's' is a source, not a value") in got
    reserved = graph_of("synth R input for: [B, 4] output y")
    assert ("S103", "'for' cannot be used as a name: it is reserved") in \
        [(d.code, d.message) for d in reserved.diagnostics]
    none = graph_of("synth N input x: [B, 4]")
    assert [(d.code, d.message) for d in none.diagnostics] == [
        ("S106", "spec 'N' declares no output")]


def test_building_never_raises_for_a_broken_spec():
    g = graph_of('synth X source s = nope("a") input x: [B, 0] y = s.forward_features.q(x) '
                 "z = Linear[0:2](x) inherit y from t.fc output y, y")
    assert {d.code for d in g.diagnostics} == {"S201", "S107", "S402", "S101", "S102"}


# ---- a deterministic order -------------------------------------------------------------------


def test_the_topological_order_is_declaration_order_where_data_allows():
    g = graph_of("synth O input b: [B, 4] input a: [B, 4] z = Linear(b, out=2) "
                 "y = Linear(a, out=2) s = add(y, z) output s")
    assert g.topological_order() == ["b", "a", "z", "y", "s", "output:s"]
    assert g.of_kind("layer") == ["z", "y"]


def test_the_order_and_the_dump_are_the_same_on_every_build():
    first = graph_of(SPEC)
    order, text = first.topological_order(), dump_graph(first)
    for _ in range(3):
        again = graph_of(SPEC)
        assert again.topological_order() == order and dump_graph(again) == text
    assert order == first.topological_order()  # asking twice changes nothing


def test_a_cycle_still_has_an_order_of_every_node():
    g = graph_of("synth C input x: [B, 4] a = add(x, b) b = Linear(a, out=4) output b")
    assert sorted(g.topological_order()) == sorted(g.nodes)
    assert g.diagnostics == []  # a cycle is the check's to report


# ---- specs built from specs ------------------------------------------------------------------


def test_a_spec_source_is_built_too_and_an_import_cycle_is_recorded(tmp_path):
    (tmp_path / "enc.synth").write_text("synth Enc\ninput x: [B, 4]\na = Linear(x, out=3)\n"
                                        "b = Linear(a, out=2)\noutput a, b\n")
    (tmp_path / "top.synth").write_text('synth Top\ninput x: [B, 4]\nsource e = spec("enc.synth")\n'
                                        "p, q = e(x)\noutput q\n")
    g = build_graph(parse_file(tmp_path / "top.synth"))
    assert g.diagnostics == []
    enc = node_attributes(g, "e")
    assert (enc["constructor"], enc["target"], enc["outputs"]) == ("spec", "enc.synth",
                                                                   ["a", "b"])
    child = g.nodes["e"]["graph"]
    assert child.name == "Enc" and child.outputs == ["output:a", "output:b"]
    assert kinds(g)[2:5] == [("p_q", "part"), ("p", "item"), ("q", "item")]

    (tmp_path / "loop.synth").write_text('synth Loop\ninput x: [B, 4]\n'
                                         'source me = spec("loop.synth")\n'
                                         "y = me(x)\noutput y\n")
    loop = build_graph(parse_file(tmp_path / "loop.synth"))
    assert [(d.code, d.message, d.span.line) for d in loop.diagnostics] == [
        ("S110", "specs import each other in a cycle: 'loop.synth' → 'loop.synth'", 3)]
    missing = graph_of('synth M input x: [B, 4] source e = spec("nowhere.synth") output x')
    assert [(d.code, d.message) for d in missing.diagnostics] == [
        ("S203", "spec file 'nowhere.synth' does not exist")]


def test_spec_texts_stand_in_for_files(tmp_path):
    top = parse_spec('synth Top input x: [B, 4] source e = spec("enc.synth") y = e(x) output y',
                     str(tmp_path / "top.synth"))
    enc = "synth Enc input x: [B, 4] h = Linear(x, out=3) output h"
    with spec_texts({str((tmp_path / "enc.synth").resolve()): enc}):
        g = build_graph(top)
    assert g.diagnostics == [] and not (tmp_path / "enc.synth").exists()
    assert node_attributes(g, "e")["outputs"] == ["h"]
    assert [d.code for d in build_graph(top).diagnostics] == ["S203"]  # outside: the file
