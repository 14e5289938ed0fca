"""Golden diagnostics: every error class, rendered exactly as `synth check` prints it.

Each `tests/golden/NAME.synth` has its expected stderr in `NAME.txt`; run
`pytest tests/test_golden.py --update-goldens` to rewrite them after a deliberate change.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from synthdsl.cli import run

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
CASES = sorted(GOLDEN.glob("*.synth"))


def _check(path: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rel = os.path.relpath(path, HERE.parent)
    cwd = os.getcwd()
    os.chdir(HERE.parent)  # file names in diagnostics are as the user typed them
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(["check", rel, *extra])
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden_diagnostic(case: Path, update_goldens: bool) -> None:
    code, out, err = _check(case)
    assert code == 1, f"{case.name} should fail the check\n{out}{err}"
    assert "Traceback" not in err
    expected = case.with_suffix(".txt")
    if update_goldens or not expected.exists():
        expected.write_text(err)
    assert err == expected.read_text()


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_json_diagnostics_match_text(case: Path) -> None:
    code, out, _ = _check(case, "--json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    errors = [d for d in data["diagnostics"] if d["severity"] == "error"]
    assert errors
    text = case.read_text()
    for d in errors:
        assert d["code"].startswith("S")
        span = d["span"]
        assert span is not None and span["file"].endswith(case.name)
        assert 1 <= span["line"] <= text.count("\n") + 1


def test_every_documented_error_class_has_a_golden_file() -> None:
    codes = set()
    for case in CASES:
        codes |= {line.split("[")[1].split("]")[0] for line in
                  case.with_suffix(".txt").read_text().splitlines() if line.startswith("error[")}
    # syntax (S001-S003, S006), names (S101, S102, S103, S104), sources (S201, S202, S203),
    # shapes (S301), options (S402), patterns (S401), outputs (S105)
    for code in ["S001", "S002", "S003", "S006", "S101", "S102", "S103", "S104", "S105",
                 "S201", "S202", "S203", "S301", "S401", "S402"]:
        assert code in codes, f"no golden file shows {code}"


def test_many_errors_are_capped() -> None:
    _, _, err = _check(GOLDEN / "many_errors.synth")
    assert "... and 5 more" in err
    assert err.rstrip().endswith("25 errors found")
