"""Attention, cross-attention, Upsample, GatedFusion, split and cls_token: their shapes,
their diagnostics, and their numbers against the torch code they stand for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import synthdsl
from synthdsl.library.fusion import CrossAttention, GatedFusion, SelfAttention
from synthdsl.viz.describe import node_what
from synthdsl.viz.summary import totals as graph_totals


def _check(text: str):
    return synthdsl.check_spec(text, raise_errors=False)


def _errors(text: str):
    return _check(text).graph["errors"]


def _compiled(text: str):
    graph = synthdsl.check_spec(text)
    return graph, synthdsl.compile_graph(graph, seed=0).eval()


def _torch_mha(ours, dim, heads, kdim):
    """nn.MultiheadAttention with our layer's weights."""
    ref = nn.MultiheadAttention(dim, heads, batch_first=True, kdim=kdim, vdim=kdim)
    with torch.no_grad():
        if kdim == dim:
            ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        else:
            ref.q_proj_weight.copy_(ours.q.weight)
            ref.k_proj_weight.copy_(ours.k.weight)
            ref.v_proj_weight.copy_(ours.v.weight)
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    return ref.eval()


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("masked", [False, True])
def test_self_attention_is_torch_multihead_attention(masked):
    torch.manual_seed(0)
    ours = SelfAttention(16, 4).eval()
    _randomise(ours)
    x = torch.randn(3, 7, 16)
    mask = torch.rand(3, 7) > 0.4
    mask[:, 0] = True
    ref = _torch_mha(ours, 16, 4, 16)
    want = ref(x, x, x, key_padding_mask=~mask if masked else None, need_weights=False)[0]
    got = ours(x, mask) if masked else ours(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cross_attention_is_torch_multihead_attention_with_kdim():
    torch.manual_seed(1)
    ours = CrossAttention(8, 2, kdim=12).eval()
    _randomise(ours)
    q, ctx = torch.randn(2, 5, 8), torch.randn(2, 9, 12)
    mask = torch.rand(2, 9) > 0.5
    mask[:, -1] = True
    ref = _torch_mha(ours, 8, 2, 12)
    want = ref(q, ctx, ctx, key_padding_mask=~mask, need_weights=False)[0]
    torch.testing.assert_close(ours(q, ctx, mask), want, atol=1e-5, rtol=1e-5)


def test_a_row_that_keeps_no_key_gives_zeros_and_finite_gradients():
    ours = CrossAttention(8, 2, kdim=8)
    q, ctx = torch.randn(2, 3, 8, requires_grad=True), torch.randn(2, 4, 8)
    mask = torch.tensor([[True, False, True, False], [False] * 4])
    y = ours(q, ctx, mask)
    assert torch.equal(y[1], torch.zeros(3, 8)) and torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(q.grad).all()


SPEC = """synth Fuse
input x: [B, 6, 16]
input c: [B, 9, 24]
input m: [B, 9] bool
input img: [B, 3, 8, 8]
s = MultiheadAttention(x, heads=4)
q = CrossAttention(s, c, m, heads=2, dropout=0.1)
a, b = split(q, sizes=[10, 6], dim=2)
g = GatedFusion(cls_token(a), select(a, index=1))
u = Upsample(img, scale=2, mode="bilinear")
output g, b, u
"""


def test_the_layers_check_compile_and_match_torch_in_a_spec():
    graph, model = _compiled(SPEC)
    assert graph.validate() == []  # an operation unpacked into names keeps to the records
    nodes = graph.nodes
    assert nodes["s"]["shape"] == ("B", 6, 16) and nodes["q"]["shape"] == ("B", 6, 16)
    assert nodes["q"]["build"] == {"dim": 16, "kdim": 24, "heads": 2, "dropout": 0.1,
                                   "bias": True}
    assert nodes["a_b"]["shapes"] == (("B", 6, 10), ("B", 6, 6))
    assert nodes["g.2"]["shape"] == ("B", 10) and nodes["u"]["shape"] == ("B", 3, 16, 16)
    torch.manual_seed(2)
    x, c, img = torch.randn(2, 6, 16), torch.randn(2, 9, 24), torch.randn(2, 3, 8, 8)
    m = torch.rand(2, 9) > 0.3
    m[:, 0] = True
    with torch.no_grad():
        out = model(x, c, m, img)
        s = _torch_mha(model.s, 16, 4, 16)(x, x, x, need_weights=False)[0]
        q = _torch_mha(model.q, 16, 2, 24)(s, c, c, key_padding_mask=~m, need_weights=False)[0]
        a, b = torch.split(q, [10, 6], dim=2)
        gate = torch.sigmoid(model.get_submodule("g.2").gate(torch.cat([a[:, 0], a[:, 1]], dim=-1)))
        torch.testing.assert_close(out["b"], b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["g"], gate * a[:, 0] + (1 - gate) * a[:, 1],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["u"], F.interpolate(img, scale_factor=2.0,
                                                           mode="bilinear", align_corners=False))
    # the summary counts exactly what compile built
    assert graph_totals(graph) == model.parameter_totals()
    assert graph.nodes["s"]["params"] == sum(p.numel() for p in model.s.parameters()) \
        == 4 * (16 * 16 + 16)
    assert node_what(graph.nodes["q"]) == (
        "CrossAttention", "CrossAttention(dim=16, kdim=24, heads=2, dropout=0.1, bias=true)")


def test_gated_fusion_of_three_is_a_softmax_over_the_inputs():
    torch.manual_seed(3)
    fuse = GatedFusion(3, 4)
    xs = [torch.randn(2, 4) for _ in range(3)]
    logits = fuse.gate(torch.cat(xs, dim=-1)).view(2, 3, 4)
    w = logits.softmax(dim=1)
    want = sum(w[:, i] * xs[i] for i in range(3))
    torch.testing.assert_close(fuse(*xs), want)
    assert fuse.gate.weight.shape == (12, 12)


def test_upsample_matches_torch_by_size_and_on_sequences():
    _, model = _compiled("synth U\ninput x: [B, 3, 8, 8]\ninput s: [B, 4, 10]\n"
                         "a = Upsample(x, size=[5, 12], mode=\"bicubic\")\n"
                         "b = Upsample(s, scale=3, mode=\"linear\")\n"
                         "c = Upsample(x, size=4)\noutput a, b, c\n")
    x, s = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 10)
    out = model(x, s)
    torch.testing.assert_close(out["a"], F.interpolate(x, size=(5, 12), mode="bicubic",
                                                       align_corners=False))
    torch.testing.assert_close(out["b"], F.interpolate(s, scale_factor=3.0, mode="linear",
                                                       align_corners=False))
    torch.testing.assert_close(out["c"], F.interpolate(x, size=4, mode="nearest"))


def test_split_and_cls_token_are_torch_split_and_select():
    _, model = _compiled("synth S\ninput x: [B, 5, 8]\na, b, c = split(x, sizes=[2, 2, 4], "
                         "dim=-1)\nt = cls_token(x)\noutput a, b, c, t\n")
    x = torch.randn(2, 5, 8)
    out = model(x)
    for got, want in zip((out["a"], out["b"], out["c"]), torch.split(x, [2, 2, 4], dim=-1)):
        assert torch.equal(got, want)
    assert torch.equal(out["t"], x[:, 0])


HEAD = "synth A\ninput x: [B, 6, 16]\ninput v: [B, 512]\ninput m: [B, 6] bool\n" \
       "input f: [B, 6] float32\ninput c: [3, 4, 16]\ninput mm: [B, 6, 2] bool\n"


@pytest.mark.parametrize("call, code, words", [
    ("CrossAttention(x, v, heads=4)", "S301", "CrossAttention's context expects rank 3, "
     "found [B, 512]"),
    ("MultiheadAttention(v, heads=4)", "S301", "sequence expects rank 3, found [B, 512]"),
    ("CrossAttention(x, heads=4)", "S301", "takes 2 or 3 inputs (query, context[, mask]), "
     "found 1"),
    ("MultiheadAttention(x, m, m, heads=4)", "S301", "takes 1 or 2 inputs"),
    ("MultiheadAttention(x, f, heads=4)", "S301", "bool mask"),
    ("CrossAttention(x, x, mm, heads=4)", "S301", "mask expects rank 2, found [B, 6, 2]"),
    ("CrossAttention(x, c, heads=4)", "S301", "one batch: the query is [B, 6, 16], "
     "the context [3, 4, 16]"),
    ("MultiheadAttention(x, heads=5)", "S402", "divisor of the input's 16 features"),
    ("GatedFusion(x, v)", "S301", "same shape"),
    ("GatedFusion(x)", "S301", "two or more inputs"),
    ("Upsample(x)", "S402", "scale= or size=, one of them"),
    ("Upsample(x, scale=2, size=[4])", "S402", "scale= or size=, one of them"),
    ("Upsample(v, scale=2)", "S301", "rank 3 or 4"),
    ("Upsample(x, scale=2, mode=\"bilinear\")", "S402", "\"linear\" for an input of rank 3"),
    ("cls_token(v)", "S301", "cls_token takes a sequence [B, T, D]; 'v' is [B, 512]"),
    ("split(x, sizes=[4, 4], dim=2)", "S402", "adding up to 16"),
])
def test_a_wrong_input_or_option_is_reported_at_the_call(call, code, words):
    errors = _errors(f"{HEAD}y = {call}\noutput y\n")
    assert [e.code for e in errors] == [code], [str(e) for e in errors]
    assert words in errors[0].message, errors[0].message
    assert errors[0].span.line == 8


def test_a_mask_that_does_not_fit_the_context_names_both():
    errors = _errors("synth A\ninput q: [B, 4, 8]\ninput c: [B, T, 8]\ninput m: [B, 5] bool\n"
                     "y = CrossAttention(q, c, m, heads=2)\noutput y\n")
    assert [e.code for e in errors] == ["S301"]
    assert "the context is [B, T, 8], the mask [B, 5]" in errors[0].message


def test_split_into_the_wrong_number_of_names_is_s108():
    text = "synth A\ninput x: [B, 8]\na, b, c = split(x, sizes=[4, 4])\noutput a\n"
    errors = _errors(text)
    assert [e.code for e in errors] == ["S108"]
    assert "gives 2 values, but 3 names receive them" in errors[0].message
    errors = _errors("synth A\ninput x: [B, 8]\na = split(x, sizes=[4, 4])\noutput a\n")
    assert [e.code for e in errors] == ["S108"] and errors[0].hint == "a0, a1 = ..."


def test_split_along_a_symbolic_dimension_is_s301():
    errors = _errors("synth A\ninput x: [B, T, 8]\na, b = split(x, sizes=[4, 4], dim=1)\n"
                     "output a\n")
    assert [e.code for e in errors] == ["S301"]
    assert "fixed size along dim 1; 'x' is [B, T, 8]" in errors[0].message


@pytest.mark.parametrize("written, meant", [("MultiHeadAttention", "MultiheadAttention"),
                                            ("UpSampling2D", "Upsample"),
                                            ("ClsToken", "cls_token")])
def test_other_frameworks_names_point_at_the_new_layers(written, meant):
    errors = _errors(f"synth A\ninput x: [B, 6, 16]\ny = {written}(x)\noutput y\n")
    assert [e.code for e in errors] == ["S101"] and f"did you mean '{meant}'" in errors[0].hint


def test_lora_adapts_the_attention_projections():
    _, model = _compiled("synth L\ninput x: [B, 6, 16]\ns = MultiheadAttention(x, heads=4)\n"
                         "adapt s.q, s.v with lora(rank=2, alpha=4)\noutput s\n")
    x = torch.randn(2, 6, 16)
    before = model(x)
    with torch.no_grad():
        model.get_submodule("s.q").lora_B.normal_()
    assert hasattr(model.get_submodule("s.v"), "lora_A")
    assert not torch.allclose(model(x), before)  # the adapter takes part in the forward


def test_attention_over_sequences_of_symbolic_lengths_checks_and_runs():
    graph, model = _compiled("synth V\ninput x: [B, T, 8]\ninput c: [B, S, 4]\n"
                             "input m: [B, S] bool\ny = CrossAttention(x, c, m, heads=2)\n"
                             "z = MultiheadAttention(y, heads=2)\noutput z\n")
    assert graph.nodes["z"]["shape"] == ("B", "T", 8)
    out = model(torch.randn(3, 5, 8), torch.randn(3, 7, 4), torch.rand(3, 7) > 0.5)
    assert out.shape == (3, 5, 8) and torch.isfinite(out).all()
