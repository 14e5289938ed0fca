"""`synth diff`: differences by meaning — values, shapes, sources, freeze sets, counts."""

from __future__ import annotations

import json
from pathlib import Path

import synthdsl
from synthdsl.cli.app import run
from synthdsl.graph.counts import all_parameters
from synthdsl.viz.diff import collapse, spec_diff

ROOT = Path(__file__).resolve().parent.parent
BASE = """synth Net
input image: [B, 3, 32, 32]
source r = timm("test_resnet", num_classes=0)
feats = r(image)
logits = Dropout(feats, p=0.1) |> Linear(out=10)
freeze r
train r.layer4 with lr_mult=0.1
output logits
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def diff(tmp_path: Path, before: str, after: str):
    a, b = write(tmp_path, "a.synth", before), write(tmp_path, "b.synth", after)
    return spec_diff(synthdsl.check_spec(a), synthdsl.check_spec(b))


def test_layout_comments_and_statement_order_are_no_difference(tmp_path):
    moved = """# the same model, written differently
synth Net

input image: [B, 3, 32, 32]   # an image
source r = timm("test_resnet",
                num_classes=0)
logits = Linear(Dropout(r(image), p=0.1), out=10)
freeze r
train r.layer4 with lr_mult=0.1
output logits
"""
    d = diff(tmp_path, BASE, BASE.replace("feats = r(image)\n", "feats = r(image)  # pooled\n"))
    assert d.same and d.changes == []
    # the chain written inline: other names for the same values, the same model
    d = diff(tmp_path, BASE, moved)
    assert d.same and d.totals[0] == d.totals[1]
    # ... until one of them computes something else
    d = diff(tmp_path, BASE, moved.replace("p=0.1", "p=0.2"))
    assert [(c.name, c.fields) for c in d.changes] == \
        [("logits.0 -> logits.1", {"options": ({"p": 0.1}, {"p": 0.2})})]


def test_a_changed_layer_reports_its_option_shape_and_parameters(tmp_path):
    d = diff(tmp_path, BASE, BASE.replace("out=10", "out=5"))
    width = synthdsl.check_spec(tmp_path / "a.synth").nodes["feats"]["shape"][1]
    by = {(c.section, c.name): c for c in d.changes}
    assert set(by) == {("values", "logits.1"), ("outputs", "logits")}
    head = by[("values", "logits.1")]
    assert head.change == "changed"
    assert head.fields == {"options": ({"out": 10}, {"out": 5}),
                           "shape": ("[B, 10]", "[B, 5]"),
                           "params": ((width + 1) * 10, (width + 1) * 5)}
    assert by[("outputs", "logits")].fields == {"shape": ("[B, 10]", "[B, 5]")}
    assert d.totals[1]["params"] - d.totals[0]["params"] == -(width + 1) * 5


def test_a_thawed_stage_is_one_line_with_its_element_count(tmp_path):
    after = BASE.replace("train r.layer4", "train r.layer3\ntrain r.layer4")
    a, b = write(tmp_path, "a.synth", BASE), write(tmp_path, "b.synth", after)
    ga, gb = synthdsl.check_spec(a), synthdsl.check_spec(b)
    d = spec_diff(ga, gb)
    [change] = d.changes
    assert (change.section, change.name, change.fields) == \
        ("training", "r.layer3", {"state": ("frozen", "trainable")})
    layer3 = sum(n for k, n in all_parameters(ga).items() if k.startswith("r.layer3."))
    assert change.facts == {"elements": layer3} and layer3 > 0
    assert d.totals[1]["trainable"] - d.totals[0]["trainable"] == layer3
    # a learning-rate multiplier that changes is a training change too, not a new state
    d = diff(tmp_path, BASE, BASE.replace("lr_mult=0.1", "lr_mult=0.5"))
    [change] = d.changes
    assert change.name == "r.layer4" and \
        change.fields == {"options": ({"lr_mult": 0.1}, {"lr_mult": 0.5})}


def test_sources_added_removed_and_changed(tmp_path):
    after = BASE.replace('timm("test_resnet", num_classes=0)',
                         'timm("resnet10t", num_classes=0)')
    after = after.replace("output logits", 'source v = timm("test_vit", num_classes=0)\n'
                          "f2 = v(image)\noutput logits, f2")
    d = diff(tmp_path, BASE, after)
    by = {(c.section, c.name): c for c in d.changes}
    assert by[("sources", "r")].fields["what"] == ("timm:test_resnet", "timm:resnet10t")
    assert by[("sources", "v")].change == "added"
    assert by[("values", "f2")].change == "added"
    assert by[("outputs", "f2")].change == "added"
    removed = diff(tmp_path, after, BASE)
    assert {(c.section, c.name) for c in removed.changes if c.change == "removed"} == \
        {("sources", "v"), ("values", "f2"), ("outputs", "f2")}


def test_collapse_keeps_a_module_whole_only_when_all_of_it_changed():
    sizes = {"a.0.w": 4, "a.0.b": 1, "a.1.w": 4, "a.1.b": 1, "b.w": 2}
    assert collapse(["a.0.w", "a.0.b", "a.1.w", "a.1.b"], sizes) == [("a", 10)]
    assert collapse(["a.0.w", "a.1.b"], sizes) == [("a.0.w", 4), ("a.1.b", 1)]
    assert collapse([], sizes) == []


def test_the_command_prints_text_and_json_and_exit_code(tmp_path, capsys):
    a = write(tmp_path, "a.synth", BASE)
    b = write(tmp_path, "b.synth", BASE.replace("p=0.1", "p=0.3"))
    assert run(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "~ logits.0  options (p=0.1) -> (p=0.3)" in out and "totals" in out
    assert run(["diff", str(a), str(b), "--exit-code"]) == 4
    capsys.readouterr()
    assert run(["diff", str(a), str(a), "--exit-code"]) == 0
    assert "describe the same model" in capsys.readouterr().out
    assert run(["diff", str(a), str(b), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["same"] is False
    assert data["changes"] == [{"section": "values", "name": "logits.0", "change": "changed",
                                "fields": {"options": {"before": {"p": 0.1},
                                                       "after": {"p": 0.3}}}}]


def test_a_spec_with_an_error_is_reported_at_its_line(tmp_path, capsys):
    a = write(tmp_path, "a.synth", BASE)
    b = write(tmp_path, "b.synth", BASE.replace("Linear(out=10)", "Linaer(out=10)"))
    assert run(["diff", str(a), str(b)]) == 1
    err = capsys.readouterr().err
    assert "b.synth:5:" in err and "Traceback" not in err


def test_every_example_against_itself_is_the_same():
    for path in sorted((ROOT / "models").glob("*.synth")):
        g = synthdsl.check_spec(path)
        assert spec_diff(g, g).same, path.name


def test_a_keyword_input_given_another_value_is_a_change(tmp_path):
    spec = """synth Vit
input image: [B, 3, 16, 16]
input bias: [B, 1, 5, 5] bool
input other: [B, 1, 5, 5] bool
source vit = timm("test_vit", num_classes=0, img_size=16, patch_size=8)
h = vit.forward_features(image, attn_mask=bias)
output h
"""
    same = diff(tmp_path, spec, spec.replace("output h", "# a comment\noutput h"))
    assert same.same
    d = diff(tmp_path, spec, spec.replace("attn_mask=bias", "attn_mask=other"))
    assert [(c.name, c.fields) for c in d.changes] == \
        [("h", {"inputs": (("image", "attn_mask=bias"), ("image", "attn_mask=other"))})]
