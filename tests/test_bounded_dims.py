"""Symbolic dimensions with a largest size (`T<=64`): written, printed, checked at sizes
under the bound, and a text model of fixed positions used with a sequence of any length."""

from __future__ import annotations

import pytest
import torch

import synthdsl
from synthdsl.lang.errors import SynthError, SynthErrors
from synthdsl.lang.parse import parse_spec
from synthdsl.lang.printer import format_spec

transformers = pytest.importorskip("transformers")

from tests.hf_models import write_folder  # noqa: E402

TEXT = """synth Text
input tokens: [B, T<=64] int64
input mask: [B, T] bool
source bert = hf("bert")
h = bert(tokens, attention_mask=mask)
logits = cls_token(h) |> Linear(out=3)
output logits
"""


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounded")
    write_folder("bert", root / "bert", max_position_embeddings=64)
    return root


def test_a_bound_is_written_printed_and_kept_by_the_graph():
    spec = parse_spec("synth A input x: [B, T <= 512] int64 input m: [B, T] bool "
                      "h = Embedding(x, num=9, dim=4) output h")
    dim = spec.statements[0].shape[1]
    assert type(dim).__name__ == "BoundedDim" and (dim.name, dim.max) == ("T", 512)
    assert "input x: [B, T<=512] int64" in format_spec(spec)
    graph = synthdsl.check_spec(format_spec(spec))
    assert graph.graph["dim_bounds"] == {"T": 512}
    assert graph.nodes["x"]["dims"] == ("B", "T")  # the symbol is the same everywhere
    assert graph.graph["symbols"]["T"] <= 512


def test_the_check_runs_a_bounded_symbol_under_its_bound_and_others_apart():
    text = ("synth A input x: [B, C<=5, H, W<=40] input y: [B, 3] "
            "h = Flatten(x) output h, y")
    from synthdsl.checks.context import CheckContext
    ctx = CheckContext(synthdsl.build_graph(parse_spec(text)))
    first, second = ctx.probes, ctx.probes2
    assert first["C"] <= 5 and second["C"] <= 5 and first["W"] <= 40 and second["W"] <= 40
    sizes = [*first.values(), *second.values()]
    assert len(set(sizes)) == len(sizes)  # every symbol at sizes of its own in both runs
    assert 3 not in (first["C"], second["C"])  # a literal of the spec is avoided while it can be


def test_bounds_that_cannot_be_are_errors_at_the_bound():
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec("synth A input x: [B, T<=2] output x")
    [err] = e.value.errors
    assert err.code == "S007" and "T<=2 is too small a bound" in err.message
    assert err.span.column == 22
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec("synth A input x: [B, T<=8] input m: [B, T<=9] output x, m")
    [err] = e.value.errors
    assert err.code == "S102" and "bounded twice, <=8 and <=9" in err.message
    assert "first bounded at <spec>:1:22" in err.notes[0]
    synthdsl.check_spec("synth A input x: [B, T<=8] input m: [B, T<=8] output x, m")
    with pytest.raises(SynthError) as e:  # two symbols cannot each have two sizes in 2..3
        synthdsl.check_spec("synth A input x: [B, S<=3, T<=3] output x")
    assert e.value.code == "S007" and "too few sizes" in e.value.message
    assert e.value.span.column == 28


def test_a_bert_of_64_positions_takes_any_length_up_to_its_bound(bert, one_thread):
    spec = bert / "text.synth"
    spec.write_text(TEXT)
    model = synthdsl.compile_spec(spec).eval()
    ref = transformers.AutoModel.from_pretrained(str(bert / "bert")).eval()
    for t in (7, 64):  # any length, the largest included
        tokens = torch.randint(3, 100, (2, t), generator=torch.Generator().manual_seed(t))
        mask = torch.ones(2, t, dtype=torch.bool)
        mask[1, t // 2:] = False
        with torch.no_grad():
            want = ref(input_ids=tokens, attention_mask=mask).last_hidden_state[:, 0]
            got = model(tokens, mask)
            head = model.get_submodule("logits.1")
            assert torch.allclose(got, head(want), atol=1e-5)
    inputs = model.example_inputs()
    assert inputs[0].shape[1] <= 64


def test_without_the_bound_the_error_says_how_to_give_it(bert):
    spec = bert / "unbounded.synth"
    spec.write_text(TEXT.replace("T<=64", "T"))
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec(spec)
    [err] = e.value.errors
    assert err.code == "S301" and "it has 64 positions" in err.hint
    assert "[..., T<=64]" in err.hint


def test_an_exported_program_keeps_the_bound(bert, tmp_path, one_thread):
    spec = bert / "export.synth"
    spec.write_text(TEXT)
    model = synthdsl.compile_spec(spec, seed=0)  # as synth export compiles it
    from synthdsl.build.export import check_sizes, dynamic_shapes
    shapes = dynamic_shapes(model)
    assert shapes["tokens"][1].max == 64 and shapes["tokens"][1].__name__ == "T"
    assert all(s["T"] <= 64 for s in check_sizes(model))
    from synthdsl.cli.app import run
    assert run(["export", str(spec), "-o", str(tmp_path / "t.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "t.pt2")).module()
    tokens = torch.randint(3, 100, (3, 50))
    mask = torch.ones(3, 50, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(program(tokens, mask), model.eval()(tokens, mask), atol=1e-5)


def test_a_diff_names_a_bound_given(tmp_path):
    from synthdsl.viz.diff import render_diff, spec_diff
    a = "synth A\ninput t: [B, T] int64\nh = Embedding(t, num=9, dim=4)\noutput h\n"
    b = a.replace("[B, T]", "[B, T<=64]")
    diff = spec_diff(*(synthdsl.build_graph(parse_spec(t)) for t in (a, b)))
    assert [(c.section, c.name) for c in diff.changes] == [("inputs", "t")]
    assert "~ t  bounds none -> T<=64" in render_diff(diff)
