"""Keyword data inputs: `h = t(tokens, attention_mask=mask)` gives a part a second value by
keyword, through every stage.

The graph has a data edge from the named value that records the keyword; the check runs
the part on meta with the keyword tensor (of its declared type) and reads the callee's
forward to refuse a keyword it does not take; the compiled fx graph calls the part with
the value as a keyword argument, and equals calling the module directly. A user's own
module (a plugin source kind whose forward is `(x, mask=None)`) and timm's ViT (whose
`forward` and `forward_features` take `attn_mask=`) are the callees.
"""

from __future__ import annotations

import itertools
import os
import sys
import textwrap

import pytest
import timm
import torch

from synthdsl.graph import build_graph
from synthdsl.lang.errors import SynthError, SynthErrors
from synthdsl.lang.parse import parse_spec
from synthdsl.pipeline import check_spec, compile_spec
from synthdsl import plugins

PLUGIN = '''
import torch
from torch import nn
from synthdsl import plugins


class MaskedPool(nn.Module):
    """A projection of each position, then the mean over the positions the mask keeps."""

    def __init__(self, inp, out):
        super().__init__()
        self.proj = nn.Linear(inp, out)

    def forward(self, x, mask=None):
        h = torch.tanh(self.proj(x))
        if mask is None:
            return h.mean(1)
        keep = mask.unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)


class PoolKind(plugins.SourceKind):
    name = "masked_pool"

    def build(self, node, device="cpu", load_weights=True):
        o = node["create_kwargs"]
        with torch.device(device):
            return MaskedPool(o["inp"], o["out"]).eval()


plugins.register_source_kind(PoolKind())
'''

SPEC = """synth MaskedText
input x: [B, T, 4]
input mask: [B, T] bool
source t = masked_pool("tiny", inp=4, out=6)
h = t(x, mask=mask)
logits = Linear(h, out=2)
output logits
"""

_count = itertools.count()


@pytest.fixture
def plugin(tmp_path, restore):
    """The test plugin loaded (every registry restored afterwards: `restore`)."""
    name = f"plug_kw_{os.getpid()}_{next(_count)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    sys.path.insert(0, str(tmp_path))
    plugins.load_plugin(name)
    return sys.modules[name]


def _errors(text: str) -> list[SynthError]:
    with pytest.raises(SynthErrors) as info:
        check_spec(text)
    return list(info.value.errors)


def _at(text: str, err: SynthError) -> str:
    return text[err.span.start:err.span.end]


# ---- the graph --------------------------------------------------------------------------


def test_the_graph_has_a_data_edge_that_records_the_keyword():
    g = build_graph(parse_spec(SPEC.replace("masked_pool", "timm")))
    assert g.nodes["h"]["inputs"] == ("x",)
    assert g.nodes["h"]["keywords"] == {"mask": "mask"}
    assert "mask" not in g.nodes["h"]["options"]
    assert g.edges["mask", "h"] == {"kind": "data", "positions": [], "keywords": ["mask"]}
    assert g.edges["x", "h"]["positions"] == [0]
    assert g.validate() == []


def test_a_value_given_both_ways_is_one_edge_with_both():
    g = build_graph(parse_spec("synth A input x: [B, 4]\nsource t = timm(\"m\")\n"
                               "h = t(x, mask=x)\noutput h"))
    assert g.edges["x", "h"] == {"kind": "data", "positions": [0], "keywords": ["mask"]}


def test_a_pipe_stage_takes_keyword_inputs_after_the_piped_value():
    g = build_graph(parse_spec("synth A input x: [B, 4]\ninput m: [B] bool\n"
                               "source t = timm(\"m\")\nh = x |> t(mask=m)\noutput h"))
    assert g.nodes["h"]["inputs"] == ("x",) and g.nodes["h"]["keywords"] == {"mask": "m"}


def test_an_unknown_name_as_a_keyword_value_is_s101_at_the_name():
    text = "synth A input x: [B, 4]\ninput mask: [B] bool\nsource t = timm(\"m\")\n" \
           "h = t(x, attention_mask=maks)\noutput h"
    (err,) = build_graph(parse_spec(text)).diagnostics
    assert err.code == "S101" and "unknown name 'maks'" in err.message
    assert err.hint == "did you mean 'mask'?"
    assert _at(text, err) == "maks"


# ---- check and compile: a user's own module -----------------------------------------------


def test_the_check_runs_the_part_with_the_keyword_tensor(plugin):
    g = check_spec(SPEC)
    assert g.nodes["h"]["shape"] == ("B", 6)
    assert g.edges["mask", "h"]["shape"] == ("B", "T")
    assert g.validate() == []


def test_compiled_module_equals_calling_the_module_with_the_same_tensors(plugin):
    model = compile_spec(SPEC, seed=0).eval()
    pool = plugin.MaskedPool(4, 6)
    pool.load_state_dict(model.get_submodule("t").state_dict())
    head = model.get_submodule("logits")
    torch.manual_seed(1)
    x, mask = torch.randn(3, 5, 4), torch.rand(3, 5) > 0.5
    mask[:, 0] = True
    want = head(pool(x, mask=mask))
    torch.testing.assert_close(model(x, mask), want, rtol=0, atol=0)
    # the mask is used: another mask gives another result, no mask yet another
    assert not torch.allclose(model(x, ~mask | (torch.arange(5) == 0)), want)
    call = next(n for n in model._graph_module.graph.nodes if n.op == "call_module"
                and n.target == "t")
    assert [a.name for a in call.args] == ["x"] and list(call.kwargs) == ["mask"]


def test_an_int_mask_reaches_the_part_with_its_declared_type(plugin):
    text = SPEC.replace("[B, T] bool", "[B, T] int64")
    model = compile_spec(text, seed=0).eval()
    x, mask = torch.randn(2, 5, 4), torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 0, 1]])
    pool = model.get_submodule("t")
    torch.testing.assert_close(model(x, mask), model.logits(pool(x, mask=mask)))


def test_a_keyword_the_forward_does_not_take_is_s402_at_the_keyword(plugin):
    text = SPEC.replace("mask=mask", "maks=mask")
    (err,) = _errors(text)
    assert err.code == "S402"
    assert "part 't' takes no keyword input 'maks'" in err.message
    assert err.hint == "did you mean 'mask'?"
    assert _at(text, err) == "maks=mask"


def test_a_keyword_given_also_by_position_is_s402(plugin):
    text = SPEC.replace("mask=mask", "x=mask")
    (err,) = _errors(text)
    assert err.code == "S402" and "gets 'x' twice" in err.message
    assert _at(text, err) == "x=mask"


def test_a_submodule_part_reads_its_own_forward(plugin):
    text = SPEC.replace("h = t(x, mask=mask)", "h = t.proj(x, mask=mask)")
    (err,) = _errors(text)
    assert err.code == "S402" and "Linear.forward has no such argument" in err.message


def test_a_cut_takes_no_keyword_inputs():
    text = ("synth A input x: [B, 3, 32, 32]\ninput m: [B] bool\n"
            "source r = timm(\"resnet18\", num_classes=0)\n"
            "h = r(x, at=\"layer2\", mask=m)\noutput h")
    (err,) = _errors(text)
    assert err.code == "S402" and "a cut takes its data positionally" in err.message
    assert _at(text, err) == "mask=m"


def test_a_keyword_input_that_depends_on_its_call_is_a_cycle(plugin):
    text = SPEC.replace("h = t(x, mask=mask)", "h = t(x, mask=h)")
    errs = _errors(text)
    assert [e.code for e in errs] == ["S104"] and "'h' → 'h'" in errs[0].message


# ---- literals only: layers, operations, losses, statements ----------------------------------


@pytest.mark.parametrize("line, message, at", [
    ("y = Linear(x, out=m)", "Linear option 'out' expects a literal value", "m"),
    ("y = Linear(x, mask=m)", "Linear has no option 'mask'", "m"),
    ("y = x |> Dropout(p=m)", "Dropout option 'p' expects a literal value", "m"),
    ("y = concat(x, x, dim=m)", "concat option 'dim' expects a literal value", "m"),
])
def test_a_value_name_for_a_layer_or_operation_option_is_s402_at_the_value(line, message, at):
    text = f"synth A\ninput x: [B, 4]\ninput m: [B, 4]\n{line}\noutput y\n"
    (err,) = _errors(text)
    assert err.code == "S402" and err.message.startswith(message)
    assert "found the value name 'm'" in err.message
    assert _at(text, err) == at


def test_a_layer_applied_again_takes_no_keyword_inputs():
    text = ("synth A\ninput x: [B, 4]\ninput m: [B, 4]\np = Linear(x, out=4)\n"
            "q = p(x, mask=m)\noutput q\n")
    (err,) = _errors(text)
    assert err.code == "S402" and "takes its data positionally" in err.message
    assert _at(text, err) == "mask=m"


# ---- specs as sources: other inputs by name -------------------------------------------------


def test_a_spec_source_takes_its_inputs_by_name(plugin, tmp_path):
    (tmp_path / "enc.synth").write_text(SPEC)
    text = ("synth Outer\ninput a: [B, 7, 4]\ninput keep: [B, 7] bool\n"
            "source enc = spec(\"enc.synth\")\ny = enc(a, mask=keep)\noutput y\n")
    path = tmp_path / "outer.synth"
    path.write_text(text)
    model = compile_spec(path, seed=0).eval()
    a, keep = torch.randn(2, 7, 4), torch.rand(2, 7) > 0.5
    torch.testing.assert_close(model(a, keep), model.enc(a, keep))
    path.write_text(text.replace("mask=keep", "mask_=keep"))
    (err,) = _errors(path)
    assert err.code == "S402" and "spec 'MaskedText' has no input 'mask_'" in err.message
    assert err.hint == "did you mean 'mask'?"


# ---- timm: ViT's attn_mask --------------------------------------------------------------------

VIT = ('source vit = timm("test_vit", img_size=32, num_classes=0)\n')


def _vit_like(model) -> torch.nn.Module:
    """timm's own test_vit with the compiled module's weights."""
    vit = timm.create_model("test_vit", img_size=32, num_classes=0).eval()
    state = {k.removeprefix("vit."): v for k, v in model.state_dict().items()
             if k.startswith("vit.")}
    missing, unexpected = vit.load_state_dict(state, strict=False)
    assert not unexpected
    return vit


def _mask() -> torch.Tensor:
    torch.manual_seed(3)
    mask = torch.rand(2, 1, 5, 5) > 0.4  # 4 patches and the class token
    mask[..., 0] = True                  # every query keeps at least the class token
    return mask


@pytest.mark.parametrize("call", ["vit(image, attn_mask=m)",
                                  "vit.forward_features(image, attn_mask=m)",
                                  "image |> vit.forward_features(attn_mask=m)"])
def test_vit_attn_mask_by_keyword_equals_timm(call):
    text = ("synth V\ninput image: [B, 3, 32, 32]\ninput m: [B, 1, 5, 5] bool\n" + VIT
            + f"f = {call}\noutput f\n")
    model = compile_spec(text, seed=0).eval()
    vit = _vit_like(model)
    x, mask = torch.randn(2, 3, 32, 32), _mask()
    method = vit if call.startswith("vit(") else vit.forward_features
    with torch.no_grad():
        want = method(x, attn_mask=mask)
        got = model(x, mask)
        torch.testing.assert_close(got, want)
        assert not torch.allclose(got, method(x))  # the mask changes the result


def test_vit_method_takes_no_unknown_keyword():
    text = ("synth V\ninput image: [B, 3, 32, 32]\ninput m: [B, 1, 5, 5] bool\n" + VIT
            + "f = vit.forward_features(image, mask=m)\noutput f\n")
    (err,) = _errors(text)
    assert err.code == "S402" and "forward_features has no such argument" in err.message
    assert err.hint == "did you mean 'attn_mask'?"


# ---- pictures and the summary -------------------------------------------------------------


def test_pictures_and_summary_name_the_keyword(plugin):
    from synthdsl.viz.dot import render_dot
    from synthdsl.viz.mermaid import render_mermaid
    from synthdsl.viz.summary import render_summary
    from synthdsl.viz.text import render_text
    from synthdsl.viz.view import build_view

    graph = check_spec(SPEC)
    view = build_view(graph)
    (edge,) = [e for e in view.edges if (e.src, e.dst) == ("mask", "h")]
    assert edge.label == "mask=[B, T]"
    assert next(n for n in view.nodes if n.id == "h").inputs == ["x", "mask=mask"]
    assert '"mask" -> "h" [label="mask=[B, T]"]' in render_dot(view)
    assert '-->|"mask=#91;B, T#93;"|' in render_mermaid(view)
    assert "← x, mask=mask" in render_text(view)
    row = next(line for line in render_summary(graph).splitlines() if line.startswith("h "))
    assert "t(mask=mask)" in row


def test_an_item_of_a_sequential_part_takes_keyword_inputs_of_its_forward():
    text = ("synth B\ninput tokens: [B, 5, 64]\ninput m: [B, 1, 5, 5] bool\n" + VIT
            + "h = vit.blocks[0](tokens, attn_mask=m)\noutput h\n")
    model = compile_spec(text, seed=0).eval()
    block = model.get_submodule("vit.blocks.0")
    x, mask = torch.randn(2, 5, 64), _mask()
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), block(x, attn_mask=mask), rtol=0, atol=0)
        assert not torch.allclose(model(x, mask), block(x))
    (err,) = _errors(text.replace("blocks[0]", "blocks[0:2]"))
    assert err.code == "S402" and "a slice that runs its layers in a row" in err.message


def test_a_part_applied_again_takes_keyword_inputs_of_its_forward(plugin):
    text = SPEC.replace("h = t(x, mask=mask)", "h = t(x, mask=mask)\nh2 = h(x, mask=mask)\n"
                        "h3 = h(x, maks=mask)").replace("output logits", "output logits, h2, h3")
    (err,) = _errors(text)
    assert err.code == "S402" and "takes no keyword input 'maks'" in err.message
    model = compile_spec(text.replace("h3 = h(x, maks=mask)\n", "")
                         .replace(", h3", ""), seed=0).eval()
    x, mask = torch.randn(2, 5, 4), torch.rand(2, 5) > 0.5
    out = model(x, mask)
    torch.testing.assert_close(out["h2"], model.get_submodule("t")(x, mask=mask))
