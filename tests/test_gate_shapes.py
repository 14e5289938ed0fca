"""Shapes that never lie: symbolic dimensions never collide with fixed sizes, any number of
them works, sizes beyond what a tensor can have are refused at their span, a layer whose
sizes would follow from a symbol is S304, compile runs symbolic spatial sizes the check
ran, and Linear on a 4-D map is a warning (W003)."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

import synthdsl
from synthdsl.build.compile import example_dims
from synthdsl.cli import run
from synthdsl.viz.summary import render_summary


def cli(tmp_path: Path, text: str, *args: str, name: str = "spec.synth") -> tuple[int, str, str]:
    """`synth ARGS... spec.synth` run in `tmp_path` (file names as the user types them)."""
    (tmp_path / name).write_text(text)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run([args[0], name, *args[1:]])
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


def spec(*lines: str) -> str:
    return "synth A\n" + "\n".join(lines) + "\n"


def errors_of(text: str):
    return synthdsl.check_spec(text, raise_errors=False).graph["errors"]


def no_probe_in(graph, *texts: str) -> None:
    """No probe size of either run appears in any of `texts`."""
    from synthdsl.checks.probes import probed

    rec = probed(graph)
    values = {*rec.probes.values(), *rec.probes2.values()}
    assert values
    for text in texts:
        found = {int(m) for m in re.findall(r"\d+", text)} & values
        assert not found, f"probe sizes {found} leak into:\n{text}"


# -- 1. symbols and fixed sizes ------------------------------------------------------------


def test_a_symbol_never_collides_with_a_fixed_size(tmp_path):
    text = spec("input x: [B, 9973]", "y = Linear(x, out=5)", "output y")
    g = synthdsl.check_spec(text)
    assert g.nodes["x"]["shape"] == ("B", 9973)
    assert g.nodes["y"]["build"]["in_features"] == 9973
    assert g.graph["symbols"]["B"] != 9973
    code, out, err = cli(tmp_path, text, "summary")
    assert code == 0, err
    assert "[B, 9973]" in out and "[B, B]" not in out


def test_a_symbol_avoids_every_number_the_spec_writes():
    g = synthdsl.check_spec(spec("input x: [B, 9967]", "y = Linear(x, out=9973)",
                                 "z = Linear(y, out=9949)", "output z"))
    assert g.nodes["z"]["shape"] == ("B", 9949)
    assert g.graph["symbols"]["B"] not in (9973, 9967, 9949)


def test_nine_symbols_check_summarise_and_compile(tmp_path):
    dims = ["A", "C", "D", "E", "F", "G", "H", "I", "J"]
    text = spec(f"input x: [{', '.join(dims)}]", "y = ReLU(x)", "output y")
    g = synthdsl.check_spec(text)
    assert g.nodes["y"]["shape"] == tuple(dims)
    assert len(set(g.graph["symbols"].values())) == 9
    code, out, err = cli(tmp_path, text, "compile")
    assert code == 0, err
    assert "output y: [2, " in out and "Traceback" not in err


def test_a_size_that_follows_from_a_symbol_reads_as_its_expression():
    g = synthdsl.check_spec(spec("input x: [B, 3, H, W]", "y = Conv2d(x, out=4, kernel=3)",
                                 "t = Flatten(y)", "output y, t"))
    assert g.nodes["y"]["shape"] == ("B", 4, "H-2", "W-2")
    assert g.nodes["t"]["shape"] == ("B", "?")
    no_probe_in(g, render_summary(g))


def test_probe_sizes_never_reach_messages_or_the_summary(tmp_path):
    text = spec("input x: [B, H]", "input v: [B, C, 32, 32]", "input z: [B, 5, 7]",
                "input m: [B, 3, H, W]", "y = Linear(x, out=4)",
                "source s = timm(\"test_resnet\", num_classes=5)", "e = s(v)",
                "a = Conv2d(m, out=4, kernel=3)", "c = concat(a, z, dim=1)",
                "r = reshape(a, shape=[4, -1])", "output y, e, c, r")
    g = synthdsl.check_spec(text, raise_errors=False)
    assert {e.code for e in g.graph["errors"]} == {"S301", "S304"}
    no_probe_in(g, *(str(e) + " ".join(map(str, e.notes)) + str(e.hint)
                     for e in g.graph["errors"]), render_summary(g))
    code, _, err = cli(tmp_path, text, "check")
    assert code == 1 and "Traceback" not in err
    no_probe_in(g, err)


# -- 2. sizes beyond what a tensor can have ---------------------------------------------


@pytest.mark.parametrize("dim", ["9223372036854775808", "281474976710657",
                                 "99999999999999999999999"])
def test_a_dimension_beyond_2_48_is_s007_at_the_dimension(tmp_path, dim):
    code, out, err = cli(tmp_path, spec(f"input x: [B, {dim}]", "y = ReLU(x)", "output y"),
                         "check")
    assert code == 1 and "Traceback" not in err
    assert "error[S007]" in err and "spec.synth:2:14" in err, err
    assert "^" * len(dim) in err


@pytest.mark.parametrize("decl, call, option", [
    ("input x: [B, 8]", "Linear(x, out=99999999999999999999999)", "out"),
    ("input x: [B, 8]", "Linear(x, out=9223372036854775808)", "out"),
    ("input x: [B, 3, 8, 8]", "Conv2d(x, out=4, kernel=1152921504606846976)", "kernel"),
    ("input x: [B, 3, 8, 8]", "Conv2d(x, out=4, padding=[1, 99999999999999999999])",
     "padding"),
    ("input x: [B, 3, 8, 8]", "Conv2d(x, out=4, groups=9223372036854775807)", "groups"),
    ("input x: [B, 3, 8, 8]", "MaxPool2d(x, stride=9223372036854775807)", "stride"),
    ("input x: [B, 3, 8, 8]", "resize(x, size=[9223372036854775807, 2])", "size"),
    ("input x: [B, 3, 8, 8]", "resize(x, scale=1e30)", "scale"),
    ("input x: [B, 8]", "reshape(x, shape=[99999999999999999999, -1])", "shape"),
])
def test_an_option_beyond_its_bound_is_s402_at_the_option(tmp_path, decl, call, option):
    text = spec(decl, f"y = {call}", "output y")
    code, out, err = cli(tmp_path, text, "check")
    assert code == 1 and "Traceback" not in err and "internal error" not in err
    col = text.splitlines()[2].index(f"{option}=") + 1
    assert "error[S402]" in err and f"spec.synth:3:{col}" in err, err
    assert f"option '{option}' expects" in err


# -- 3. layers sized by a symbol ----------------------------------------------------------


def test_a_layer_whose_size_follows_from_symbols_is_s304_naming_them(tmp_path):
    text = spec("input x: [B, 3, H, W]",
                "y = Conv2d(x, out=4, kernel=3) |> Flatten |> Linear(out=5)", "output y")
    code, out, err = cli(tmp_path, text, "check")
    assert code == 1 and "Traceback" not in err
    assert "error[S304]" in err and "spec.synth:3:46" in err, err
    assert "in_features would depend on H and W" in err
    assert "GlobalAvgPool" in err
    code, out, err = cli(tmp_path, text, "compile", "-o", "out.safetensors")
    assert code == 1 and "error[S304]" in err
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("decl, call, symbols", [
    ("input x: [B, H]", "Linear(x, out=4)", "H"),
    ("input x: [B, T, C]", "LayerNorm(x)", "C"),
    ("input x: [B, C, 8, 8]", "Conv2d(x, out=4)", "C"),
    ("input x: [B, C]", "BatchNorm1d(x)", "C"),
    ("input x: [B, 4]", "Linear(Flatten(stack(x, x, dim=0)), out=2)", "B"),
    ("input x: [B, 4, T]", "Flatten(x) |> Linear(out=2)", "T"),
    ("input x: [B, T, D]", "MultiheadAttention(x, heads=1)", "D"),
    ("input x: [B, T, 8]\ninput c: [B, S, K]", "CrossAttention(x, c, heads=2)", "K"),
    ("input x: [B, D]", "GatedFusion(x, x)", "D"),
])
def test_each_layer_sized_by_a_symbol_is_s304(decl, call, symbols):
    errors = errors_of(spec(decl, f"y = {call}", "output y"))
    assert [e.code for e in errors] == ["S304"], [str(e) for e in errors]
    assert f"depend on {symbols}:" in errors[0].message


def test_pooling_the_symbols_away_first_checks_and_compiles():
    model = synthdsl.compile_spec(spec(
        "input x: [B, 3, H, W]",
        "y = Conv2d(x, out=4, kernel=3) |> GlobalAvgPool |> Linear(out=5)", "output y"),
        seed=0)
    x = model.example_inputs(batch_size=2, H=9, W=11)
    assert model(*x).shape == (2, 5)


def test_a_node_that_runs_only_for_some_sizes_is_s304():
    """An index that fits one probe size of T and not the other (T's probes are 9967 and
    9941 here) runs under one assignment only: S304, not an accepted spec."""
    g = synthdsl.check_spec(spec("input x: [B, T]", "y = select(x, dim=1, index=9950)",
                                 "output y"), raise_errors=False)
    assert (g.graph["symbols"]["T"], [e.code for e in g.graph["errors"]]) == (9967, ["S304"])
    e = g.graph["errors"][0]
    assert "runs for some sizes of T but not for others" in e.message
    no_probe_in(g, e.message, *map(str, e.notes))
    g = synthdsl.check_spec(spec("input x: [B, 8, T]", "y = select(x, dim=2, index=0)",
                                 "output y"))
    assert g.nodes["y"]["shape"] == ("B", 8)


# -- 4. compile's example sizes --------------------------------------------------------------


def test_compile_runs_symbolic_spatial_sizes_the_check_ran(tmp_path):
    text = spec("input x: [B, 3, H, W]", "y = Conv2d(x, out=4, kernel=3)", "output y")
    g = synthdsl.check_spec(text)
    sizes = example_dims(g)
    assert set(sizes) == {"H", "W"} and all(s >= 3 for s in sizes.values())
    code, out, err = cli(tmp_path, text, "compile", "-o", "out.safetensors")
    assert code == 0, err
    h, w = sizes["H"], sizes["W"]
    assert f"input  x: [2, 3, {h}, {w}]" in out
    assert f"output y: [2, 4, {h - 2}, {w - 2}]" in out
    assert (tmp_path / "out.safetensors").exists()


def test_example_sizes_run_a_source_that_needs_a_large_input(tmp_path):
    text = spec("input x: [B, 3, H, W]", "source s = timm(\"test_resnet\", num_classes=5)",
                "y = s(x)", "output y")
    code, out, err = cli(tmp_path, text, "compile")
    assert code == 0, err
    assert "output y: [2, 5]" in out


def test_a_batch_only_spec_needs_no_example_sizes():
    assert example_dims(synthdsl.check_spec(spec("input x: [B, 8]", "y = Linear(x, out=2)",
                                                  "output y"))) == {}


# -- 6. Linear over a map ---------------------------------------------------------------------


def test_linear_on_a_4d_map_is_warning_w003(tmp_path):
    text = spec("input x: [B, 3, 32, 32]", "y = Linear(x, out=5)", "output y")
    code, out, err = cli(tmp_path, text, "check")
    assert code == 0, err
    assert "warning[W003]" in err and "spec.synth:3:5" in err
    assert "Flatten" in err and "GlobalAvgPool" in err
    g = synthdsl.check_spec(text)
    assert [w.code for w in g.graph["warnings"]] == ["W003"]


def test_linear_on_tokens_or_vectors_is_silent():
    for decl in ("input x: [B, 197, 64]", "input x: [B, 64]"):
        g = synthdsl.check_spec(spec(decl, "y = Linear(x, out=5)", "output y"))
        assert g.graph["warnings"] == [], decl


def test_w003_points_at_the_pipe_stage(tmp_path):
    text = spec("input x: [B, 3, 32, 32]", "y = ReLU(x) |> Linear(out=5)", "output y")
    code, out, err = cli(tmp_path, text, "check")
    assert code == 0 and "warning[W003]" in err and "spec.synth:3:16" in err, err
