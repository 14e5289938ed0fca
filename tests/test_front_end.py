"""An honest front end: reading, printing and reporting a spec loads no torch.

Each test runs a fresh interpreter (a module imported by another test would hide what an
import costs) and reads `sys.modules` there: `import synthdsl`, `import synthdsl.lang`,
`parse_spec`, `parse_file`, `format_spec` and rendering a syntax error leave torch (and the
model library, the graph, the check) unloaded; the package's names load on first use (PEP 562).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Modules the front end must not load.
HEAVY = ("torch", "timm", "torchvision", "synthdsl.graph",
         "synthdsl.checks", "synthdsl.library", "synthdsl.build", "synthdsl.train",
         "synthdsl.viz", "synthdsl.cli", "synthdsl.pipeline")

PRELUDE = f"""
import json, sys
HEAVY = {HEAVY!r}
steps = {{}}

def loaded(step):
    steps[step] = sorted(m for m in HEAVY if m in sys.modules)
"""


def run_fresh(body: str, tmp_path: Path) -> dict:
    script = PRELUDE + textwrap.dedent(body) + "\nprint('STEPS ' + json.dumps(steps))\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("STEPS ")][-1]
    return json.loads(line[len("STEPS "):])


def test_the_front_end_loads_no_torch(tmp_path):
    (tmp_path / "bad.synth").write_text("synth Bad\ninput x: [B, 4\n")
    (tmp_path / "good.synth").write_text("synth Good\ninput x: [B, 4]\n"
                                         "y = Linear(x, out=2) |> ReLU\noutput y\n")
    steps = run_fresh("""
        import synthdsl
        loaded("import synthdsl")
        import synthdsl.lang
        import synthdsl.lang.ast, synthdsl.lang.errors, synthdsl.lang.parse
        import synthdsl.lang.printer
        loaded("import synthdsl.lang")
        spec = synthdsl.parse_spec("synth A input x: [B, 4] y = Linear(x, out=2) output y")
        assert type(spec).__name__ == "Spec" and spec.name == "A"
        loaded("parse_spec")
        assert synthdsl.parse_file("good.synth").name == "Good"
        loaded("parse_file")
        text = synthdsl.format_spec(spec)
        assert synthdsl.parse_spec(text) == spec
        loaded("format_spec")
        from synthdsl.lang.errors import render, render_all
        try:
            synthdsl.parse_file("bad.synth")
        except synthdsl.SynthError as e:
            report = render_all(e, open("bad.synth").read())
            one = render(e, open("bad.synth").read())
        else:
            raise AssertionError("bad.synth parsed")
        assert report.startswith("error[S003]: unexpected end of input")
        assert "2 | input x: [B, 4" in report and one in report
        loaded("render a syntax error")
        assert isinstance(synthdsl.Span(), synthdsl.Span)
        assert issubclass(synthdsl.SynthErrors, synthdsl.SynthError)
        loaded("front-end names")
    """, tmp_path)
    assert list(steps) == ["import synthdsl", "import synthdsl.lang", "parse_spec", "parse_file",
                           "format_spec", "render a syntax error", "front-end names"]
    for step, heavy in steps.items():
        assert heavy == [], f"{step} loaded {heavy}"


def test_import_synthdsl_is_lazy(tmp_path):
    steps = run_fresh("""
        import synthdsl
        names = dir(synthdsl)
        assert {"compile_spec", "check_spec", "parse_spec", "SynthModule"} <= set(names)
        loaded("import and dir")
        try:
            synthdsl.no_such_name
        except AttributeError as e:
            assert "no_such_name" in str(e)
        else:
            raise AssertionError("an unknown name must be an AttributeError")
        loaded("an unknown name")
        compile_spec = synthdsl.compile_spec
        assert callable(compile_spec) and synthdsl.compile_spec is compile_spec
        assert compile_spec.__module__ == "synthdsl.pipeline"
        loaded("synthdsl.compile_spec")
    """, tmp_path)
    assert steps["import and dir"] == [] and steps["an unknown name"] == []
    assert {"torch", "synthdsl.pipeline", "synthdsl.build"} <= set(steps["synthdsl.compile_spec"])


def test_every_public_name_loads_from_where_it_says(tmp_path):
    steps = run_fresh("""
        import synthdsl
        for name in synthdsl.__all__:
            value = getattr(synthdsl, name)
            assert value is not None, name
        loaded("all")
        from synthdsl import _EXPORTS
        for name, module in _EXPORTS.items():
            assert getattr(sys.modules[module], name) is getattr(synthdsl, name), name
    """, tmp_path)
    assert "torch" in steps["all"]  # the names are real: compile_spec needs torch
