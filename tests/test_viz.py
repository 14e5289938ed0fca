"""synth viz: one view model, every format, deterministic, escaped, with counts that add up.

Graphviz's `dot` renders SVG/PNG; tests that need it are skipped (with the reason)
where it is missing, and the error saying how to install it is tested everywhere.
The HTML page in a real browser is tests/test_viz_browser.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from synthdsl.checks import check_graph
from synthdsl.cli import run
from synthdsl.graph import build_graph
from synthdsl.lang.parse import parse_spec
from synthdsl.pipeline import check_spec
from synthdsl.viz import (FORMATS, GraphvizNotFound, VizError, build_view, format_for,
                          render_dot, render_graph, write_graph)
from synthdsl.viz.expand import expand_source, trace_groups
from synthdsl.viz.html import embed_json
from synthdsl.viz.layout import layered_order
from synthdsl.viz.view import LOCK, Counts, clean

ROOT = Path(__file__).resolve().parent.parent
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed "
                               "(`make test` installs it: apt-get install -y graphviz)")
SVG = "{http://www.w3.org/2000/svg}"

SPEC = """\
synth Probe
input image: [B, 3, 32, 32]
source net = timm("test_resnet", num_classes=10)
stem   = net.conv1(image)
feats  = net.layer1(stem) |> net.layer2
pooled = GlobalAvgPool(feats)
hidden = Linear(pooled, out=16) |> ReLU
both   = concat(hidden, pooled, dim=1)
logits = Linear(both, out=10)
freeze net
train  net.layer2
output logits
"""

EVIL = '<img src=x onerror="window.__pwned=1">'
EVIL_LABEL = '</script><script>alert("x")</script>\u2028\u2029 & "quotes" \\ back\\slash'


@pytest.fixture(scope="module")
def probe():
    return check_graph(build_graph(parse_spec(SPEC)))


@pytest.fixture(scope="module")
def transfer():
    return check_spec(ROOT / "models" / "transfer_resnet18.synth")


@pytest.fixture(scope="module")
def evil(probe):
    """A checked graph plus what a spec cannot spell: names and labels full of markup."""
    g = check_graph(build_graph(parse_spec(SPEC)))
    g.graph["name"] = "</title><script>alert(1)</script>"
    g.add_node(EVIL, kind="op", name=EVIL, label=EVIL_LABEL, inputs=("logits",),
               options={"s": EVIL_LABEL}, shape=("B", EVIL_LABEL))
    g.add_edge("logits", EVIL, kind="data", shape=("B", EVIL_LABEL))
    g.add_edge("net", "hidden.0", kind="inherit", tensors=2, params=1040, mode=EVIL_LABEL)
    return g


def dot_counts(text: str) -> tuple[set[str], int]:
    """Node names and edge count of DOT text, read back by pydot (subgraphs included)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyparsing's deprecations, inside pydot
        import pydot

        (graph,) = pydot.graph_from_dot_data(text)
    names: set[str] = set()
    edges = 0

    def walk(g):
        nonlocal edges
        for n in g.get_nodes():
            if n.get_name() not in ("node", "edge", "graph", '"\\n"'):
                names.add(n.get_name())
        edges += len(g.get_edges())
        for e in g.get_edges():
            names.update((e.get_source(), e.get_destination()))
        for s in g.get_subgraphs():
            walk(s)

    walk(graph)
    return names, edges


def unquote(name: str) -> str:
    return re.sub(r'\\(["\\])', r"\1", name[1:-1]) if name.startswith('"') else name


# ---- the view model -------------------------------------------------------------------


def test_view_has_a_node_per_graph_node_and_an_edge_per_graph_edge(probe):
    view = build_view(probe)
    assert [n.id for n in view.nodes] == probe.topological_order()
    assert len(view.edges) == probe.number_of_edges()
    kinds = {n.id: n.kind for n in view.nodes}
    assert kinds["image"] == "input" and kinds["net"] == "source" and kinds["stem"] == "part"
    assert kinds["both"] == "op" and kinds["output:logits"] == "output"
    labels = {(e.src, e.dst): e.label for e in view.edges}
    assert labels[("image", "stem")] == "[B, 3, 32, 32]"
    assert labels[("net", "stem")] == ""                      # member edges carry no shape
    n = view.node("logits")
    assert n.shape == "[B, 10]" and n.location == "<spec>:9"
    assert n.source_line == "logits = Linear(both, out=10)"
    assert n.detail == "Linear(in_features=" + str(probe.nodes["logits"]["build"]["in_features"]) \
        + ", out_features=10, bias=true)"
    assert view.node("net").what == "timm:test_resnet"
    assert [c.id for c in view.clusters] == ["net"]
    assert view.clusters[0].members == ["net", "stem", "feats.0", "feats.1"]


def test_states_frozen_partial_trainable(probe):
    view = build_view(probe)
    assert view.node("stem").state == "frozen"
    assert view.node("feats.1").state == "trainable"          # `train net.layer2` wins
    assert view.node("net").state == "partial"
    assert view.node("hidden.0").state == "trainable"
    assert view.node("hidden.1").state == "none"              # ReLU: no parameters
    assert view.node("net").counts.unused > 0                 # the classifier: no part uses it
    t = view.totals
    assert t.params == t.trainable + t.frozen and t.frozen > 0


def test_source_counts_add_up(probe):
    view = build_view(probe)
    net = view.node("net").counts
    assert net.params == sum(p.numel() for p in __import__("timm").create_model(
        "test_resnet", num_classes=10).parameters())
    parts = [view.node(i).counts for i in ("stem", "feats.0", "feats.1")]
    assert net.trainable + net.frozen == sum(c.params for c in parts)
    assert net.trainable + net.frozen + net.unused == net.params


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_expanded_groups_add_up_to_the_collapsed_source(probe, depth):
    view = build_view(probe, expand=["net"], depth=depth)
    cluster = view.clusters[0]
    groups = [n for n in view.nodes if n.kind == "group"]
    assert groups and cluster.expanded and cluster.depth == depth
    total = sum((g.counts for g in groups), Counts())
    assert total == cluster.counts == view.node("net").counts
    assert all(g.cluster == "net" for g in groups)
    assert all(len(g.name.split(".")) <= depth + 1 for g in groups)
    # states follow the training rules: layer2 trains, the stem is frozen, fc is unused
    if depth == 1:
        by_name = {g.name: g for g in groups}
        assert by_name["net.layer2"].state == "trainable"
        assert by_name["net.conv1"].state == "frozen"
        assert by_name["net.fc"].state == "unused"
    flows = [e for e in view.edges if e.kind == "flow"]
    assert flows and all(e.src in {g.id for g in groups} for e in flows)
    # the graph's own nodes and edges are all still there
    assert {n.id for n in view.nodes} >= set(probe.nodes)


def test_expanding_a_real_timm_model(transfer):
    view = build_view(transfer, expand=["all"], depth=1)
    groups = [n for n in view.nodes if n.kind == "group"]
    assert [g.name for g in groups][:4] == ["r18.conv1", "r18.bn1", "r18.act1", "r18.maxpool"]
    assert sum((g.counts for g in groups), Counts()) == view.clusters[0].counts
    assert view.node("r18::layer4").state == "trainable"      # train r18.layer4
    assert view.node("r18::layer3").state == "frozen"


def test_a_model_that_cannot_be_traced_is_grouped_by_its_module_tree():
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Sequential(nn.Linear(4, 3), nn.ReLU())

        def forward(self, x):
            if x.sum() > 0:                     # data-dependent control flow: fx refuses
                return self.b(self.a(x))
            return self.b(x)

    groups, edges, note = trace_groups(Branchy(), depth=1, prefix="m")
    assert note and "could not trace" in note and edges == []
    assert {g.path: sum(g.parameters.values()) for g in groups} == {"a": 20, "b": 15}
    assert set(groups[0].parameters) == {"m.a.weight", "m.a.bias"}


def test_expand_and_collapse_refuse_unknown_sources(probe):
    with pytest.raises(VizError, match="no source named 'nope'.*'net'"):
        render_graph(probe, "dot", expand=["nope"])
    with pytest.raises(VizError, match="depth"):
        render_graph(probe, "dot", expand=["net"], depth=0)
    with pytest.raises(VizError, match="unknown format"):
        render_graph(probe, "gif")
    with pytest.raises(Exception, match="no source named"):
        expand_source(probe, "image")


def test_collapsed_source_is_one_node_with_the_same_total(probe):
    full = build_view(probe)
    view = build_view(probe, collapse=["all"])
    ids = {n.id for n in view.nodes}
    assert "net" in ids and not ids & {"stem", "feats.0", "feats.1"}
    assert view.node("net").counts == full.node("net").counts
    assert view.node("net").extra["collapsed"] == "3 members hidden"
    assert ("image", "net") in {(e.src, e.dst) for e in view.edges}     # redirected
    assert all(e.src != e.dst for e in view.edges)
    names, n_edges = dot_counts(render_dot(view))
    assert {unquote(n) for n in names} == ids and n_edges == len(view.edges)


def test_inherit_edges_are_drawn_dashed_with_tensors_params_and_mode(probe):
    g = check_graph(build_graph(parse_spec(SPEC)))
    g.add_edge("net", "logits", kind="inherit", tensors=2, params=1_040, mode="strict")
    view = build_view(g)
    (edge,) = [e for e in view.edges if e.kind == "inherit"]
    assert edge.label == "inherits 2 tensors · 1,040 params · strict"
    assert edge.attrs == {"mode": '"strict"', "params": "1040", "tensors": "2"}
    dot = render_dot(view)
    line = next(s for s in dot.splitlines() if '"net" -> "logits"' in s)
    assert "style=dashed" in line and 'label="inherits 2 tensors · 1,040 params · strict"' in line
    mmd = render_graph(g, "mmd")
    assert '-.->|"inherits 2 tensors · 1,040 params · strict"|' in mmd
    data = json.loads(render_graph(g, "json"))
    assert {"source": "net", "target": "logits", "kind": "inherit"}.items() <= \
        next(e for e in data["edges"] if e["kind"] == "inherit").items()


def test_layout_ranks_follow_edges_and_keep_sources_together(probe):
    view = build_view(probe, expand=["net"])
    order = layered_order(view)
    position = {n.id: i for i, n in enumerate(view.nodes)}
    for e in view.edges:
        if position[e.src] < position[e.dst]:
            assert order[e.src][0] < order[e.dst][0], e
    for rank in {r for r, _ in order.values()}:
        row = sorted((x, n.cluster or "") for n in view.nodes
                     for r, x in [order[n.id]] if r == rank)
        clusters = [c for _, c in row if c]
        # the members of one source sit next to each other in every row
        assert clusters == sorted(clusters, key=lambda c: clusters.index(c))


# ---- errors still draw ------------------------------------------------------------------


def test_a_broken_spec_draws_with_the_failing_nodes_marked():
    path = ROOT / "tests" / "golden" / "concat_mismatch.synth"
    g = check_graph(build_graph(__import__("synthdsl").parse_file(path)), raise_errors=False)
    view = build_view(g)
    failing = {n.id: n for n in view.nodes if n.status == "error"}
    assert set(failing) == {"both.1", "extra"}
    assert failing["both.1"].messages[0].code == "S301"
    assert "concat along dim 1" in failing["both.1"].messages[0].message
    assert view.node("output:both").status == "skipped"
    dot = render_dot(view)
    assert dot.count('color="#c62828", penwidth="2.5"') + dot.count(
        'color="#c62828", penwidth=2.5') == 2
    assert "error[S301]: concat along dim 1" in dot
    text = render_graph(g, "text")
    assert "error[S402]: Conv2d has no option 'kernal'" in text
    assert "2 errors" in text
    html = render_graph(g, "html")
    assert "S301" in html and "S402" in html


def test_problems_that_belong_to_no_node_are_listed_on_the_drawing():
    g = check_graph(build_graph(parse_spec(
        "synth A input x: [B, 4] y = Linear(x, out=2) freeze nothing_here output y")),
        raise_errors=False)
    view = build_view(g)
    assert [m.code for m in view.messages] == ["S401"]
    assert "S401" in render_dot(view) and "S401" in render_graph(g, "text")


def test_an_unchecked_graph_draws_too():
    g = build_graph(parse_spec("synth A input x: [B, 4] y = Linear(x, out=2) output y"))
    view = build_view(g)
    assert not view.checked and view.node("y").shape is None
    assert "not checked" in render_graph(g, "text")
    for fmt in ("dot", "html", "mmd", "json"):
        render_graph(g, fmt)


# ---- formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["dot", "html", "mmd", "json", "text"])
def test_every_format_is_deterministic(fmt):
    a = render_graph(check_graph(build_graph(parse_spec(SPEC))), fmt, expand=["net"])
    b = render_graph(check_graph(build_graph(parse_spec(SPEC))), fmt, expand=["net"])
    assert a == b and len(a) > 200


@needs_dot
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_graphviz_formats_are_deterministic(probe, fmt):
    a, b = render_graph(probe, fmt), render_graph(probe, fmt)
    assert a == b
    if fmt == "png":
        assert a[:8] == b"\x89PNG\r\n\x1a\n"


def test_dot_parses_back_to_the_graphs_node_and_edge_counts(probe, transfer):
    for g in (probe, transfer):
        names, edges = dot_counts(render_graph(g, "dot"))
        assert {unquote(n) for n in names} == set(g.nodes)
        assert edges == g.number_of_edges()


@needs_dot
def test_dot_read_by_graphviz_has_the_same_counts(probe):
    out = subprocess.run(["dot", "-Tjson"], input=render_graph(probe, "dot").encode(),
                         capture_output=True, check=True).stdout
    data = json.loads(out)
    nodes = [o for o in data["objects"] if "nodes" not in o and "subgraphs" not in o]
    assert sorted(o["name"] for o in nodes) == sorted(probe.nodes)
    assert len(data["edges"]) == probe.number_of_edges()


@needs_dot
def test_svg_is_well_formed_with_every_node(probe):
    svg = render_graph(probe, "svg", expand=["net"])
    root = ET.fromstring(svg)
    titles = [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g")
              if g.get("class") == "node"]
    view = build_view(probe, expand=["net"])
    assert sorted(titles) == sorted(n.id for n in view.nodes)
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == len(view.edges)
    assert LOCK in svg and "stroke-dasharray" in svg          # frozen: lock and dashes


def test_escaping_in_dot_mermaid_json_and_html(evil):
    view = build_view(evil)
    # DOT: the names come back intact, and nothing leaks out of a label
    dot = render_graph(evil, "dot")
    names, edges = dot_counts(dot)
    assert {unquote(n) for n in names} == set(evil.nodes) and edges == evil.number_of_edges()
    outside_quotes = re.sub(r'"(?:[^"\\]|\\.)*"', '""', dot)
    assert "<img" not in outside_quotes and "</script" not in outside_quotes
    assert "&lt;img src=x" in dot                 # the label: XML-escaped
    # Mermaid: ids are generated, labels are entity-escaped
    mmd = render_graph(evil, "mmd")
    assert "<img" not in mmd and "</script" not in mmd and "\u2028" not in mmd
    for line in mmd.splitlines():
        m = re.match(r'\s+n\d+\["(.*)"\]$', line)
        if m:
            assert '"' not in m.group(1)
    # JSON: the view, exactly
    assert json.loads(render_graph(evil, "json")) == json.loads(json.dumps(view.to_dict()))
    # HTML: two script elements, the data reads back unchanged, the title is text
    html = render_graph(evil, "html")
    assert html.count("<script") == 2 and html.count("</script>") == 2
    assert "\u2028" not in html and "\u2029" not in html
    assert "<title>synth &lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;</title>" in html
    raw = html.split('<script type="application/json" id="synth-data">', 1)[1].split(
        "</script>", 1)[0]
    assert "<" not in raw and ">" not in raw and "&" not in raw
    data = json.loads(raw)
    assert data["nodes"] == json.loads(json.dumps(view.to_dict()))["nodes"]
    assert any(n["name"] == EVIL for n in data["nodes"])
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html


@needs_dot
def test_escaping_in_svg(evil):
    svg = render_graph(evil, "svg")
    root = ET.fromstring(svg)                     # well-formed despite the names
    assert not [e for e in root.iter() if e.tag.endswith(("img", "script"))]
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert EVIL in texts
    titles = [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g")
              if g.get("class") == "node"]
    assert EVIL in titles


def test_embedded_json_cannot_end_the_script_element():
    text = embed_json({"a": "</script><!-- \u2028\u2029 & <b>"})
    assert "</" not in text and "\u2028" not in text and "<!--" not in text
    assert json.loads(text) == {"a": "</script><!-- \u2028\u2029 & <b>"}


def test_clean_makes_control_characters_and_lone_surrogates_visible():
    assert clean("a\nb\tc\x00\ud800\u2028") == "a\\nb\\tc\\u0000\ufffd\\u2028"


def test_html_is_self_contained(probe):
    html = render_graph(probe, "html")
    assert "default-src 'none'" in html                     # the page may load nothing
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert not re.search(r"\b(fetch|XMLHttpRequest|WebSocket|EventSource|import)\s*\(", html)
    assert '<link rel="icon" href="data:,">' in html


def test_format_for_suffixes():
    assert [format_for(f"x{s}") for s in (".dot", ".svg", ".png", ".html", ".mmd", ".json")] \
        == ["dot", "svg", "png", "html", "mmd", "json"]
    with pytest.raises(VizError, match="suffix"):
        format_for("x.gif")
    assert set(FORMATS) == {"dot", "svg", "png", "html", "mmd", "json", "text"}


# ---- without Graphviz ---------------------------------------------------------------------


def test_without_graphviz_svg_says_how_to_install_and_the_rest_works(probe, monkeypatch,
                                                                      tmp_path):
    monkeypatch.setenv("SYNTH_DOT", str(tmp_path / "no-dot-here"))
    with pytest.raises(GraphvizNotFound, match="apt-get install graphviz"):
        render_graph(probe, "svg")
    with pytest.raises(GraphvizNotFound, match="brew install graphviz"):
        render_graph(probe, "png")
    for fmt in ("dot", "html", "mmd", "json", "text"):
        assert render_graph(probe, fmt)


# ---- the command line ---------------------------------------------------------------------


def test_cli_text_tree(capsys):
    assert run(["viz", str(ROOT / "models" / "transfer_resnet18.synth")]) == 0
    out = capsys.readouterr().out
    assert "synth TransferResNet18" in out and "└─ features" in out
    assert "[B, 512]" in out and "2,782,784 frozen" in out and LOCK in out


def test_cli_writes_each_format_atomically(tmp_path, capsys):
    spec = tmp_path / "probe.synth"
    spec.write_text(SPEC)
    for suffix in (".dot", ".html", ".mmd", ".json") + ((".svg", ".png") if HAS_DOT else ()):
        out = tmp_path / f"out{suffix}"
        assert run(["viz", str(spec), "-o", str(out), "--expand", "net", "--depth", "2"]) == 0
        assert out.stat().st_size > 100
        assert f"wrote {out}" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))
    assert run(["viz", str(spec), "--format", "mmd"]) == 0
    assert capsys.readouterr().out.startswith("%% synth Probe")


def test_cli_draws_a_broken_spec_and_exits_1(tmp_path, capsys):
    out = tmp_path / "broken.html"
    path = ROOT / "tests" / "golden" / "concat_mismatch.synth"
    assert run(["viz", str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error[S301]" in err and "drawn with 2 errors marked" in err
    assert out.exists() and "S301" in out.read_text()


def test_cli_usage_errors(tmp_path, capsys, monkeypatch):
    path = str(ROOT / "models" / "transfer_resnet18.synth")
    assert run(["viz", path, "--expand", "nope"]) == 2
    assert "no source named 'nope'" in capsys.readouterr().err
    assert run(["viz", path, "-o", str(tmp_path / "x.gif")]) == 2
    monkeypatch.setenv("SYNTH_DOT", str(tmp_path / "none"))
    assert run(["viz", path, "-o", str(tmp_path / "x.svg")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install graphviz" in err and not (tmp_path / "x.svg").exists()
    assert run(["viz", path, "-o", str(tmp_path / "x.html")]) == 0


def test_cli_syntax_error_is_a_diagnostic(tmp_path, capsys):
    bad = tmp_path / "bad.synth"
    bad.write_text("synth A\ninput x: [B, 4\n")
    assert run(["viz", str(bad)]) == 1
    assert "error[S00" in capsys.readouterr().err


# ---- scale and docs -----------------------------------------------------------------------


def generated_spec(n_values: int) -> str:
    """A deep, branching spec with one source; about 2 nodes per value."""
    lines = ["synth Big", "input x: [B, 3, 32, 32]", 'source net = timm("test_resnet")',
             "v0 = Linear(GlobalAvgPool(net.layer1(net.conv1(x))), out=32)"]
    for i in range(1, n_values):
        a, b = f"v{i - 1}", f"v{max(0, i - 5)}"
        lines.append([f"v{i} = Linear({a}, out=32) |> ReLU", f"v{i} = add({a}, {b})",
                      f"v{i} = concat({a}, {b}) |> Linear(out=32)"][i % 3])
    lines += ["freeze net", f"output v{n_values - 1}"]
    return "\n".join(lines)


def test_a_spec_of_a_thousand_nodes_renders_every_node():
    """How long this takes is measured by `bench/viz.py` (its "deep_chain" section)."""
    g = check_spec(generated_spec(620))
    assert g.number_of_nodes() >= 1000
    html = render_graph(g, "html")
    assert html.count('"kind":"layer"') > 500
    dot = render_graph(g, "dot")  # one statement a line (pydot parses the small ones)
    assert len(re.findall(r'(?m)^\s+"[^"]*" \[label=<', dot)) == g.number_of_nodes()
    assert len(re.findall(r'(?m)^\s+"[^"]*" -> "[^"]*"', dot)) == g.number_of_edges()
    if HAS_DOT:
        svg = render_graph(g, "svg", collapse=["all"])
        ET.fromstring(svg)


def test_every_example_has_its_svg_in_docs():
    missing = [p.stem for p in sorted((ROOT / "models").glob("*.synth"))
               if not (ROOT / "docs" / "models" / f"{p.stem}.svg").exists()]
    assert not missing, f"run `make docs` to draw {missing}"
    for svg in (ROOT / "docs" / "models").glob("*.svg"):
        root = ET.parse(svg).getroot()
        assert root.tag == f"{SVG}svg"
        assert any(g.get("class") == "node" for g in root.iter(f"{SVG}g"))


def test_wheel_ships_the_page_assets():
    from importlib import resources

    files = {p.name for p in resources.files("synthdsl.viz").iterdir()}
    assert {"template.html", "viz.js", "viz.css"} <= files
    text = (ROOT / "pyproject.toml").read_text()
    assert '"synthdsl.viz" = ["*.html", "*.js", "*.css"]' in text
    import tomllib

    packages = tomllib.loads(text)["tool"]["setuptools"]["packages"]
    assert "synthdsl.viz" in packages                            # in the package list


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_write_graph_replaces_the_file_whole(probe, tmp_path):
    out = tmp_path / "g.json"
    out.write_text("old")
    assert write_graph(probe, out) == "json"
    assert json.loads(out.read_text())["name"] == "Probe"


def test_a_real_inherit_statement_is_drawn_with_its_donor_and_line():
    path = ROOT / "models" / "head_from_classifier_rows.synth"
    if not path.exists():
        pytest.skip("the example with an inherit statement is not in models/")
    view = build_view(check_spec(path))
    (edge,) = [e for e in view.edges if e.kind == "inherit"]
    assert edge.label.startswith("inherits 2 tensors") and edge.label.endswith("strict")
    assert edge.attrs["at"].startswith(str(path.relative_to(ROOT)) + ":") or \
        edge.attrs["at"].endswith(tuple("0123456789"))
    assert "from 'old.fc'" in view.node(edge.dst).extra["weights inherited"]
