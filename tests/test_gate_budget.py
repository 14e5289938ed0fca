"""A budget the check enforces: parameters and one sample's activations over their limits
are S305 at the statement or option that makes them big, before anything real is built;
the limits are raised with ``--budget``, ``SYNTH_BUDGET`` or `budget_limits`."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from pathlib import Path

import pytest

import synthdsl
from synthdsl.checks.budget import (Budget, activation_bytes, batch_problem, budget_limits,
                                    current_budget, fmt_bytes, parse_budget, parse_size)
from synthdsl.cli import run

MODELS = sorted((Path(__file__).resolve().parent.parent / "models").glob("*.synth"))


def cli(tmp_path: Path, text: str, *args: str) -> tuple[int, str, str]:
    (tmp_path / "spec.synth").write_text(text)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run([args[0], "spec.synth", *args[1:]])
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


def spec(*lines: str) -> str:
    return "synth A\n" + "\n".join(lines) + "\n"


RESNET = 'source s = timm("test_resnet", num_classes=5)'

#: (spec lines, where the first S305 points: line, the text under the caret (its last
#: occurrence on the line), words)
TOO_BIG = [
    (["input x: [B, 8]", "y = Linear(x, out=1000000000000)", "output y"],
     3, "out=1000000000000", "of parameters, over the budget of 8 GiB"),
    (["input x: [B, 3, 32, 32]", "y = Conv2d(x, out=4, padding=100000)", "output y"],
     3, "padding=100000", "for one sample's activations"),
    (["input x: [B, 3, 32, 32]", "y = resize(x, size=[100000, 100000])", "output y"],
     3, "size=[100000, 100000]", "for one sample's activations"),
    (["input x: [B, 3, 100000, 100000]", "y = ReLU(x)", "output y"],
     2, "100000", "one sample of input 'x' takes 112 GiB"),
    (["input x: [B, 3, 32, 32]", RESNET, "y = s(x)",
      "adapt s.fc with lora(rank=1000000000, alpha=16)", "output y"],
     5, "1000000000", "the LoRA adapters of this statement"),
    (["input x: [B, 3, 32, 32]", 'source s = timm("test_resnet", num_classes=100000000000)',
      "y = s(x)", "output y"],
     3, "100000000000", "source 's' (test_resnet) has"),
]


@pytest.mark.parametrize("lines, line, under, words", TOO_BIG, ids=[c[0][1] for c in TOO_BIG])
def test_too_big_is_s305_at_its_cause_and_nothing_is_written(tmp_path, lines, line, under,
                                                               words):
    text = spec(*lines)
    code, out, err = cli(tmp_path, text, "check")
    assert code == 1 and "Traceback" not in err and "internal error" not in err, err
    first = err[err.index("error[S305]"):]
    src = text.splitlines()[line - 1]
    col = src.rindex(under) + 1
    assert f"spec.synth:{line}:{col}" in first.splitlines()[1], first
    assert words in first.splitlines()[0], first
    assert "--budget" in first and "SYNTH_BUDGET" in first
    code, out, err = cli(tmp_path, text, "compile", "-o", "out.safetensors")
    assert code == 1 and "error[S305]" in err and "internal error" not in err
    assert not (tmp_path / "out.safetensors").exists()


def test_the_message_says_the_size_the_budget_and_how_to_raise_it():
    g = synthdsl.check_spec(spec("input x: [B, 8]", "y = Linear(x, out=1000000000000)",
                                 "output y"), raise_errors=False)
    params = next(e for e in g.graph["errors"] if "parameters" in e.message)
    assert params.code == "S305"
    assert "32.7 TiB" in params.message and "8 GiB" in params.message
    assert "--budget params=64TiB" in params.hint


def test_the_activations_of_a_part_are_measured_inside_it():
    """A timm model's input fits, but a tensor inside it does not."""
    errors = synthdsl.check_spec(spec("input x: [B, 3, 16000, 16000]", RESNET, "y = s(x)",
                                      "output y"), raise_errors=False).graph["errors"]
    assert [e.code for e in errors] == ["S305"], [str(e) for e in errors]
    assert "'y' (s) makes a tensor of" in errors[0].message


def test_the_sum_of_activations_is_bounded_too():
    lines = ["input x: [B, 100000000]"] + [f"h{i} = ReLU({'x' if i == 0 else f'h{i - 1}'})"
                                          for i in range(12)] + ["output h11"]
    errors = synthdsl.check_spec(spec(*lines), raise_errors=False).graph["errors"]
    assert [e.code for e in errors] == ["S305"]
    assert "one sample's activations come to" in errors[0].message


# -- the defaults, and raising them ----------------------------------------------------------


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_the_defaults_accept_every_example_model(path):
    g = synthdsl.check_spec(path, raise_errors=False)
    assert [e for e in g.graph["errors"] if e.code == "S305"] == []
    assert 0 < activation_bytes(g) < Budget().activations


def test_the_environment_raises_the_budget(tmp_path, monkeypatch):
    text = spec("input x: [B, 8]", "y = Linear(x, out=1000000000)", "output y")
    assert cli(tmp_path, text, "check")[0] == 1
    monkeypatch.setenv("SYNTH_BUDGET", "params=64GiB, activations=8GiB")
    code, out, err = cli(tmp_path, text, "check")
    assert code == 0, err


def test_a_bad_environment_budget_is_an_error_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_BUDGET", "params=lots")
    code, out, err = cli(tmp_path, spec("input x: [B, 8]", "y = ReLU(x)", "output y"), "check")
    assert code == 1 and "SYNTH_BUDGET" in err and "Traceback" not in err


def test_budget_limits_for_library_callers():
    text = spec("input x: [B, 8]", "y = Linear(x, out=1000000000)", "output y")
    with budget_limits("params=64GiB,activations=8GiB") as b:
        assert current_budget() == b and b.params == 64 * 2 ** 30
        assert synthdsl.check_spec(text, raise_errors=False).graph["errors"] == []
    assert current_budget() == Budget()
    with budget_limits(params=1000):
        errors = synthdsl.check_spec(spec("input x: [B, 8]", "y = Linear(x, out=64)",
                                          "output y"), raise_errors=False).graph["errors"]
    assert [e.code for e in errors] == ["S305"] and "budget of 1000 bytes" in errors[0].message


def test_the_budget_flag_of_the_commands(tmp_path):
    """`--budget` reaches the check through the commands (the flag's value, as parsed)."""
    from synthdsl.cli.check import cmd_check
    from synthdsl.cli.spec import cmd_summary

    (tmp_path / "spec.synth").write_text(spec("input x: [B, 8]",
                                              "y = Linear(x, out=1000000000)", "output y"))
    path = str(tmp_path / "spec.synth")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert cmd_check(argparse.Namespace(file=path, json=False, budget=None)) == 1
        assert cmd_check(argparse.Namespace(file=path, json=False,
                                            budget="params=64GiB,activations=8GiB")) == 0
        assert cmd_summary(argparse.Namespace(file=path, inheritance=False,
                                              budget="params=64GiB,activations=8GiB")) == 0
    assert "S305" in err.getvalue()


@pytest.mark.parametrize("text, value", [("16GiB", 16 * 2 ** 30), ("500MB", 500 * 10 ** 6),
                                         ("1000", 1000), ("1.5 KiB", 1536), ("2tib", 2 ** 41)])
def test_sizes_parse(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["lots", "params", "params=", "weights=1GiB", "params=0",
                                  "params=1GiB,params=2GiB", "params=-1GiB"])
def test_bad_budgets_are_refused(text):
    with pytest.raises(ValueError):
        parse_budget(text)


def test_sizes_read_as_people_read_them():
    assert [fmt_bytes(n) for n in (512, 1536, 3 * 2 ** 30, 35 * 2 ** 40)] == [
        "512 bytes", "1.5 KiB", "3 GiB", "35 TiB"]


# -- a batch -------------------------------------------------------------------------------


def test_activation_bytes_of_one_sample():
    g = synthdsl.check_spec(spec("input x: [B, 8]", "y = Linear(x, out=4)", "output y"))
    assert activation_bytes(g) == (8 + 4) * 4


def test_a_batch_too_big_for_any_machine_is_s305():
    g = synthdsl.check_spec(spec("input x: [B, 3, 32, 32]", RESNET, "y = s(x)", "output y"))
    e = batch_problem(g, 10_000_000_000)
    assert e is not None and e.code == "S305" and "10,000,000,000 samples" in e.message
    assert "--batch-size" in e.hint
    assert batch_problem(g, 64) is None


def test_a_bad_budget_flag_is_s010_naming_it(tmp_path):
    from synthdsl.cli.check import cmd_check

    (tmp_path / "spec.synth").write_text(spec("input x: [B, 8]", "y = ReLU(x)", "output y"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cmd_check(argparse.Namespace(file=str(tmp_path / "spec.synth"), json=False,
                                            budget="params=lots"))
    assert code == 1 and "S010" in err.getvalue() and "--budget" in err.getvalue()


def test_the_budget_parsing_loads_no_torch():
    import subprocess
    import sys

    code = ("import sys; from synthdsl.lang.budget import parse_budget; "
            "parse_budget('params=1GiB'); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the budget on the command line and in the library ---------------------------------------

def _write(tmp_path, text, name="b.synth"):
    p = tmp_path / name
    p.write_text(text)
    return p


SMALL = "synth B\ninput x: [B, 3, 32, 32]\ny = Conv2d(x, out=64) |> GlobalAvgPool\noutput y\n"


@pytest.mark.parametrize("command", ["check", "summary", "compile"])
def test_the_budget_flag_lowers_the_limits_of_every_checking_command(tmp_path, capsys,
                                                                     command):
    from synthdsl.cli.app import run

    spec = _write(tmp_path, SMALL)
    assert run([command, str(spec)]) == 0
    capsys.readouterr()
    assert run([command, str(spec), "--budget", "activations=1KiB"]) == 1
    err = capsys.readouterr().err
    assert "error[S305]" in err and "b.synth:" in err


@pytest.mark.parametrize("argv", [["compile", "{spec}", "--batch-size", "10000000000"],
                                  ["compile", "{spec}", "--batch-size", "1000",
                                   "--budget", "batch=1MiB"]])
def test_a_batch_over_the_budget_is_refused_before_compile_allocates_it(tmp_path, capsys,
                                                                        argv):
    from synthdsl.cli.app import run

    spec = _write(tmp_path, SMALL)
    out = tmp_path / "m.safetensors"
    assert run([a.replace("{spec}", str(spec)) for a in argv] + ["-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error[S305]" in err and "a batch of" in err and "--batch-size" in err
    assert not out.exists()


def test_train_refuses_a_batch_over_the_budget_before_it_starts(tmp_path, capsys):
    import numpy as np

    from synthdsl.cli.app import run

    spec = _write(tmp_path, "synth T\ninput x: [B, 1, 8, 8]\ny = Flatten(x) |> Linear(out=3)\n"
                            "output y\n")
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((9, 1, 8, 8), np.float32), y=np.arange(9) % 3)
    run_dir = tmp_path / "run"
    assert run(["train", str(spec), "--data", str(data), "-o", str(run_dir), "--epochs", "1",
                "--no-progress", "--batch-size", "10000000000"]) == 1
    err = capsys.readouterr().err
    assert "error[S305]" in err and "a batch of 10,000,000,000 samples" in err
    assert not run_dir.exists()


def test_the_library_takes_a_budget_too():
    from synthdsl.lang.errors import SynthErrors
    from synthdsl.pipeline import check_spec, compile_spec

    assert check_spec(SMALL).graph["errors"] == []
    with pytest.raises(SynthErrors, match="S305"):
        check_spec(SMALL, budget="params=1KiB")
    with pytest.raises(SynthErrors, match="S305"):
        compile_spec(SMALL, budget="activations=1KiB")


def test_an_allocation_the_machine_refuses_is_s305_not_an_internal_error(tmp_path, capsys,
                                                                         monkeypatch):
    import synthdsl.cli.spec as spec_cmd
    from synthdsl.cli.app import run

    spec = _write(tmp_path, SMALL)

    def refuse(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 240000000000 bytes.")

    monkeypatch.setattr(spec_cmd, "compile_locked", refuse)
    assert run(["compile", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "error[S305]" in err and "240,000,000,000 bytes asked" in err
    assert "internal error" not in err

    def bug(*a, **k):
        raise RuntimeError("shape '[2, 5]' is invalid for input of size 7")

    monkeypatch.setattr(spec_cmd, "compile_locked", bug)
    assert run(["compile", str(spec)]) == 3
    assert "internal error" in capsys.readouterr().err
