"""The command line loads only what a command uses: building the parser loads neither torch
nor the training stack, a syntax error is reported without torch, and nothing below the CLI
knows argparse or imports `synthdsl.cli`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "synthdsl"

REPORT = ("import json, sys; "
          "print(json.dumps({'torch': 'torch' in sys.modules, "
          "'train': sorted(m for m in sys.modules if m.startswith('synthdsl.train'))}))")


def _fresh(code: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run `code` in a fresh interpreter; what it loaded (the last line it prints)."""
    p = subprocess.run([sys.executable, "-c", code + "\n" + REPORT], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert p.stdout.strip(), p.stderr
    return p, json.loads(p.stdout.strip().splitlines()[-1])


def test_building_the_parser_loads_neither_torch_nor_training():
    p, loaded = _fresh("from synthdsl.cli.app import build_parser\n"
                       "parser = build_parser()\n"
                       "assert parser.parse_args(['train', 'a.synth', '--data', 'digits', "
                       "'-o', 'run']).epochs is None")
    assert p.returncode == 0, p.stderr
    assert loaded == {"torch": False, "train": []}


@pytest.mark.parametrize("command", ["train", "eval", "demo", "compile", "viz"])
def test_help_loads_no_torch(command):
    p, loaded = _fresh("from synthdsl.cli.app import run\n"
                       "try:\n"
                       f"    run([{command!r}, '--help'])\n"
                       "except SystemExit as e:\n"
                       "    assert e.code == 0\n")
    assert p.returncode == 0, p.stderr
    assert f"usage: synth {command}" in p.stdout
    assert loaded == {"torch": False, "train": []}


def test_a_syntax_error_is_checked_without_torch(tmp_path):
    spec = tmp_path / "bad.synth"
    spec.write_text("synth Bad\ninput x: [B, 4\ny = Linear(x, out=2)\noutput y\n")
    p, loaded = _fresh("from synthdsl.cli.app import run\n"
                       f"rc = run(['check', {str(spec)!r}])\n"
                       "assert rc == 1, rc\n")
    assert p.returncode == 0, p.stderr
    assert loaded == {"torch": False, "train": []}
    assert "error[S002]" in p.stderr and f"{spec}:3:1" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_sound_spec_is_checked_without_the_training_stack():
    p, loaded = _fresh("from synthdsl.cli.app import run\n"
                       "rc = run(['check', 'models/transfer_resnet18.synth'])\n"
                       "assert rc == 0, rc\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].endswith(": ok")
    assert loaded["torch"] and loaded["train"] == []


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_nothing_below_the_cli_knows_argparse_or_imports_it():
    core = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts
            and p != PACKAGE / "__main__.py"]  # `python -m synthdsl`: the command itself
    assert len(core) > 30
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p)
                                                  if n == "argparse" or
                                                  n.startswith("synthdsl.cli"))
                 for p in core}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_training_stack_reads_no_namespace():
    """No function under synthdsl/train takes `args` (an argparse namespace)."""
    found = []
    for path in (PACKAGE / "train").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(a.arg == "args" for a in node.args.args):
                    found.append(f"{path.name}:{node.name}")
    assert found == []
