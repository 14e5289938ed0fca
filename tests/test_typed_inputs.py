"""Inputs with element types (int64 token ids, bool masks), and the layers a sequence
model needs: Embedding, Conv1d, GroupNorm, Permute and masked_mean."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import synthdsl
from synthdsl.lang.errors import SynthError
from synthdsl.lang.parse import parse_spec
from synthdsl.lang.printer import format_spec

SEQ = """synth Seq
input tokens: [B, 6] int64
input mask: [B, 6] bool
emb = Embedding(tokens, num=11, dim=8)
h = emb |> Permute(dims=[0, 2, 1]) |> Conv1d(out=6, kernel=3, padding=1, dilation=1)
    |> GroupNorm(groups=3) |> Permute(dims=[0, 2, 1])
pooled = masked_mean(h, mask)
logits = Linear(pooled, out=3)
output logits
"""


def _errors(text: str):
    return synthdsl.check_spec(text, raise_errors=False).graph["errors"]


def _one(body: str, decls: str = "input x: [B, 6] int64"):
    text = f"synth A\n{decls}\n{body}\n"
    errors = _errors(text)
    assert len(errors) == 1, [str(e) for e in errors]
    return text, errors[0]


def test_a_dtype_parses_prints_and_round_trips():
    spec = parse_spec("synth A input t: [B, 4] int64 input m: [B,4] bool input f: [B, 2] "
                      "input h: [B, 2] bfloat16 y = Linear(f, out=2) output y")
    assert [s.dtype for s in spec.statements[:4]] == ["int64", "bool", "float32", "bfloat16"]
    text = format_spec(spec)
    assert "input t: [B, 4] int64\ninput m: [B, 4] bool\ninput f: [B, 2]\n" in text
    assert parse_spec(text) == spec


def test_an_unknown_dtype_or_a_dtype_as_a_name_is_a_synth_error():
    with pytest.raises(SynthError) as e:
        parse_spec("synth A input t: [B, 4] int8 output t")
    assert e.value.code.startswith("S0") and e.value.span.line == 1
    with pytest.raises(SynthError) as e:
        parse_spec("synth A input bool: [B, 4] output bool")
    assert e.value.code == "S006"


def test_the_check_runs_inputs_at_their_dtype():
    g = synthdsl.check_spec(SEQ)
    assert g.nodes["tokens"]["input_dtype"] == "int64" and g.nodes["tokens"]["dtype"] == "int64"
    assert g.nodes["mask"]["dtype"] == "bool"
    assert g.nodes["emb"]["shape"] == ("B", 6, 8) and g.nodes["emb"]["dtype"] == "float32"
    assert g.nodes["h.0"]["shape"] == ("B", 8, 6)
    assert g.nodes["pooled"]["shape"] == ("B", 6)
    g.validate()


def test_a_float_layer_on_int_ids_is_s301_at_the_layer_naming_both_types():
    text, e = _one("y = Linear(x, out=2)\noutput y")
    assert e.code == "S301" and "float32" in e.message and "int64" in e.message, str(e)
    assert text[e.span.start:e.span.end] == "Linear(x, out=2)"
    assert any("'x' is int64" in n for n in e.notes)


def test_embedding_takes_integers_only():
    _, e = _one("y = Embedding(x, num=4, dim=2)\noutput y", "input x: [B, 6]")
    assert e.code == "S301" and "int64" in e.message and "found float32" in e.message
    _, e = _one("y = Embedding(x, num=4, dim=2)\noutput y", "input x: [B, 6] bool")
    assert e.code == "S301" and "found bool" in e.message


def test_masked_mean_wants_a_float_sequence_and_a_bool_mask_of_its_first_sizes():
    seq = "input x: [B, 6, 4]\ninput m: [B, 6] bool"
    _, e = _one("y = masked_mean(x, m)\noutput y", "input x: [B, 6, 4]\ninput m: [B, 6] int64")
    assert e.code == "S301" and "bool mask" in e.message and "int64" in e.message
    _, e = _one("y = masked_mean(x, m)\noutput y", "input x: [B, 5, 4]\ninput m: [B, 6] bool")
    assert e.code == "S301" and "[B, 5, 4]" in e.message and "[B, 6]" in e.message
    _, e = _one("y = masked_mean(x, m)\noutput y", "input x: [B, 6]\ninput m: [B, 6] bool")
    assert e.code == "S301" and "[B, T, C]" in e.message
    assert _errors(f"synth A\n{seq}\ny = masked_mean(x, m)\noutput y\n") == []


def test_group_norm_s_default_groups_must_divide_the_channels():
    _, e = _one("y = GroupNorm(x)\noutput y", "input x: [B, 4, 5]")
    assert e.code == "S402" and "divisor of the input's 4 channels" in e.message
    assert "found 8 (its default)" in e.message


def test_the_layers_compute_what_plain_torch_computes():
    model = synthdsl.compile_spec(SEQ, seed=0).eval()
    tokens, mask = model.example_inputs(batch_size=3)
    mask[0] = False  # a row that keeps nothing gives zeros
    mask[1, :2] = True
    emb, conv, norm, lin = (nn.Embedding(11, 8), nn.Conv1d(8, 6, 3, padding=1),
                            nn.GroupNorm(3, 6), nn.Linear(6, 3))
    for ref, name in ((emb, "emb"), (conv, "h.1"), (norm, "h.2"), (lin, "logits")):
        ref.load_state_dict(model.get_submodule(name).state_dict())
    with torch.no_grad():
        h = norm(conv(emb(tokens).permute(0, 2, 1))).permute(0, 2, 1)
        keep = mask.float().unsqueeze(-1)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp(min=1)
        torch.testing.assert_close(model(tokens, mask), lin(pooled))
        rows = [h[b][mask[b]].mean(0) if mask[b].any() else torch.zeros(6) for b in range(3)]
        torch.testing.assert_close(pooled, torch.stack(rows))


def test_example_inputs_index_every_embedding_they_feed():
    text = """synth A
input t: [B, 50] int64
input u: [B, 50] int32
input m: [B, 50] bool
input f: [B, 50] float16
a = Embedding(t, num=7, dim=2)
b = Embedding(t, num=5, dim=2)
c = add(a, b)
output c, u, m, f
"""
    model = synthdsl.compile_spec(text, seed=0)
    t, u, m, f = model.example_inputs(batch_size=4)
    assert t.dtype == torch.int64 and 0 <= int(t.min()) and int(t.max()) == 4  # min(num) - 1
    assert u.dtype == torch.int32 and set(u.unique().tolist()) == {0, 1}
    assert m.dtype == torch.bool and m.any() and not m.all()
    assert f.dtype == torch.float16 and f.shape == (4, 50)
    out = model(t, u, m, f)
    assert out["c"].shape == (4, 50, 2)


def test_summary_viz_and_compile_show_the_dtype(tmp_path, capsys):
    from synthdsl.cli.app import run
    path = tmp_path / "seq.synth"
    path.write_text(SEQ)
    assert run(["summary", str(path)]) == 0
    assert "input int64" in capsys.readouterr().out
    assert run(["viz", str(path)]) == 0
    out = capsys.readouterr().out
    assert "input (int64)" in out and "input (bool)" in out
    assert run(["compile", str(path), "-o", str(tmp_path / "m.pt")]) == 0
    assert "tokens: [2, 6] int64" in capsys.readouterr().out


def test_synth_train_of_typed_inputs_on_image_data_says_what_data_fits(tmp_path, capsys):
    from synthdsl.cli.app import run
    path = tmp_path / "seq.synth"
    path.write_text(SEQ)
    assert run(["train", str(path), "--data", "digits", "-o", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert "error[D001]: 'digits' holds one image per sample" in err
    assert "tokens: [B, 6] int64, mask: [B, 6] bool" in err
    assert "an .npz with one array per input (tokens, mask)" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_spec_source_s_typed_input_is_checked_and_runs(tmp_path):
    (tmp_path / "seq.synth").write_text(SEQ)
    parent = """synth P
input ids: [B, 6] {dtype}
input keep: [B, 6] bool
source s = spec("seq.synth")
y = s(ids, keep)
output y
"""
    bad = tmp_path / "bad.synth"
    bad.write_text(parent.format(dtype="int32"))
    errors = synthdsl.check_spec(bad, raise_errors=False).graph["errors"]
    assert [e.code for e in errors] == ["S301"], [str(e) for e in errors]
    assert "type int64, found int32" in errors[0].message
    good = tmp_path / "good.synth"
    good.write_text(parent.format(dtype="int64"))
    model = synthdsl.compile_spec(good, seed=0).eval()
    ids, keep = model.example_inputs(batch_size=2)
    assert 1 < int(ids.max()) <= 10  # ids up to 10: the child's Embedding (num=11) is reached
    assert model(ids, keep).shape == (2, 3)
