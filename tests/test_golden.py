"""Golden files: every error class rendered exactly as `synth check` prints it, and the
AST and the graph (as built, before the check) of every spec that parses.

* Each `tests/golden/NAME.synth` has its expected stderr in `NAME.txt`.
* Every `models/*.synth` and `tests/golden/*.synth` that parses has its AST dump in
  `tests/golden/ast/NAME.txt` and its graph dump in `tests/golden/graph/NAME.txt`
  (`tests/dumps.py` writes both; spans and objects are left out).

A missing or different golden fails. Run `pytest tests/test_golden.py --update-goldens` to
rewrite them after a deliberate change, and read the diff before committing it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from synthdsl.cli import run
from synthdsl.graph import build_graph
from synthdsl.lang.errors import SynthError
from synthdsl.lang.parse import parse_file, parse_spec
from tests.conftest import compare_golden, spec_params
from tests.dumps import dump_ast, dump_graph

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
CASES = sorted(GOLDEN.glob("*.synth"))
MODELS = sorted((HERE.parent / "models").glob("*.synth"))


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


@pytest.mark.parametrize("case", spec_params(CASES))
def test_golden_diagnostic(case: Path, golden) -> None:
    code, out, err = _check(case)
    assert code == 1, f"{case.name} should fail the check\n{out}{err}"
    assert "Traceback" not in err
    golden(case.with_suffix(".txt"), err)


@pytest.mark.parametrize("case", spec_params(CASES))
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


# ---- the AST and the graph as built ------------------------------------------------------


def _parses(path: Path) -> bool:
    try:
        parse_file(path)
    except SynthError:
        return False
    return True


DUMPED = [p for p in MODELS + CASES if _parses(p)]


def _parsed(path: Path):
    """The spec parsed under the name a user types (relative to the repository root)."""
    cwd = os.getcwd()
    os.chdir(HERE.parent)
    try:
        return parse_file(os.path.relpath(path, HERE.parent))
    finally:
        os.chdir(cwd)


def test_dumped_specs_have_distinct_names_and_every_example_is_dumped() -> None:
    names = [p.stem for p in DUMPED]
    assert len(names) == len(set(names))
    assert set(MODELS) <= set(DUMPED), "every example in models/ parses"
    assert len(DUMPED) > len(MODELS) + len(CASES) // 2
    for kind in ("ast", "graph"):
        stale = {p.stem for p in (GOLDEN / kind).glob("*.txt")} - set(names)
        assert not stale, f"golden {kind} dumps without a spec: {sorted(stale)}"


@pytest.mark.parametrize("case", DUMPED, ids=[c.stem for c in DUMPED])
def test_ast_dump(case: Path, golden) -> None:
    golden(GOLDEN / "ast" / f"{case.stem}.txt", dump_ast(_parsed(case)))


@pytest.mark.parametrize("case", DUMPED, ids=[c.stem for c in DUMPED])
def test_graph_dump(case: Path, golden) -> None:
    cwd = os.getcwd()
    os.chdir(HERE.parent)  # spec("...") sources resolve as they do for the user
    try:
        graph = build_graph(_parsed(case))
    finally:
        os.chdir(cwd)
    golden(GOLDEN / "graph" / f"{case.stem}.txt", dump_graph(graph))


def test_dumps_leave_out_positions_only() -> None:
    a = parse_spec("synth A input x: [B, 4] y = Linear(x, out=2) |> ReLU freeze y output y")
    b = parse_spec("synth A\n\n  input x : [ B , 4 ]   # a comment\n"
                   "  y = Linear( x , out = 2 )\n   |> ReLU\nfreeze   y\noutput y\n", "b.synth")
    assert dump_ast(a) == dump_ast(b)
    assert dump_graph(build_graph(a)) == dump_graph(build_graph(b))
    c = parse_spec("synth A input x: [B, 4] y = Linear(x, out=3) |> ReLU freeze y output y")
    assert dump_ast(a) != dump_ast(c) and '"out"' in dump_ast(c)
    assert dump_graph(build_graph(a)) != dump_graph(build_graph(c))
    assert "line" not in dump_ast(b) and "span" not in dump_graph(build_graph(b))


def test_a_golden_never_writes_itself(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(pytest.fail.Exception, match="missing"):
        compare_golden(missing, "text\n", update=False)
    assert not missing.exists()
    other = tmp_path / "other.txt"
    other.write_text("old\n")
    with pytest.raises(pytest.fail.Exception, match="differs"):
        compare_golden(other, "new\n", update=False)
    assert other.read_text() == "old\n"
    compare_golden(other, "new\n", update=True)
    compare_golden(missing, "text\n", update=True)
    assert other.read_text() == "new\n" and missing.read_text() == "text\n"
    compare_golden(other, "new\n", update=False)
