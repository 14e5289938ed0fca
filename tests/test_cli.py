"""The `synth` command line, run in-process and as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from synthdsl.cli.app import run

ROOT = Path(__file__).resolve().parent.parent


def test_check_ok(capsys):
    assert run(["check", str(ROOT / "models/transfer_resnet18.synth")]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_summary_table(capsys):
    assert run(["summary", str(ROOT / "models/transfer_resnet18.synth")]) == 0
    out = capsys.readouterr().out
    assert "[B, 512]" in out and "partial" in out
    assert "total: 11,181,642 parameters, 8,398,858 trainable, 2,782,784 frozen" in out


def test_compile_prints_shapes_and_code(capsys):
    assert run(["compile", str(ROOT / "models/whole_resnet18.synth"), "--code"]) == 0
    out = capsys.readouterr().out
    assert "def forward(self, image):" in out
    assert "output logits: [2, 10]" in out
    assert "11,181,642 parameters" in out


def test_spec_error_exits_1_without_traceback(tmp_path, capsys):
    spec = tmp_path / "bad.synth"
    spec.write_text("synth Bad\ninput x: [B, 4]\ny = Linaer(x, out=2)\noutput y\n")
    for cmd in ("check", "summary", "compile"):
        assert run([cmd, str(spec)]) == 1, cmd
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert f"{spec}:3:5" in err and "did you mean 'Linear'?" in err
    # and as a real process, through the installed console script
    exe = Path(sys.executable).parent / "synth"
    p = subprocess.run([str(exe), "check", str(spec)], capture_output=True, text=True)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and "error[S101]" in p.stderr


def test_missing_spec_file(capsys):
    assert run(["check", "no/such/file.synth"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_internal_errors_are_reported_briefly(monkeypatch, capsys):
    import synthdsl.cli.app as cli

    def boom(args):
        raise ValueError("kaboom")

    monkeypatch.setattr(cli, "cmd_check", boom)
    monkeypatch.delenv("SYNTH_TRACEBACK", raising=False)
    assert cli.run(["check", "x.synth"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error: ValueError: kaboom" in err and "Traceback" not in err


def test_version_and_python_dash_m():
    from synthdsl.cli.app import version

    for cmd in (["synth"], [sys.executable, "-m", "synthdsl"]):
        exe = [str(Path(sys.executable).parent / "synth")] if cmd == ["synth"] else cmd
        out = subprocess.run([*exe, "--version"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == f"synthdsl {version()}"
    assert version() != "unknown"


def test_every_command_help_shows_examples_that_name_real_files():
    import re

    from synthdsl.cli.app import EXAMPLES, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(EXAMPLES)
    for name, parser in sub.choices.items():
        text = parser.format_help()
        assert "examples:" in text and f"synth {name}" in text, name
        for path in re.findall(r"models/\w+\.synth", text):
            assert (ROOT / path).exists(), (name, path)


def test_summary_and_nodes_print_json(capsys):
    import json

    assert run(["summary", str(ROOT / "models/transfer_resnet18.synth"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"] == {"params": 11181642, "trainable": 8398858, "frozen": 2782784}
    assert [r["node"] for r in data["nodes"]][:2] == ["image", "r18"]
    assert run(["nodes", "test_resnet", "--input", "3", "32", "32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [n["name"] for n in data["nodes"]]
    assert "layer1" in " ".join(names) and data["input"] == [None, 3, 32, 32]
    assert any(n["stage_end"] for n in data["nodes"])


def test_compile_prints_json(capsys):
    import json

    assert run(["compile", str(ROOT / "models/transfer_resnet18.synth"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["outputs"] == {"logits": [2, 10]}
    assert data["inputs"]["image"] == {"shape": [2, 3, 64, 64], "dtype": "float32"}
    assert data["totals"]["params"] == 11181642
