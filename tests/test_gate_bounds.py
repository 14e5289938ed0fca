"""The check's time and memory stay bounded on small adversarial specs, and
values that apply themselves are refused by the check, not by compile."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from synthdsl.checks import check_graph
from synthdsl.graph import build_graph
from synthdsl.lang.errors import SynthErrors, did_you_mean
from synthdsl.lang.parse import parse_spec

LIMIT_S = 60
LIMIT_BYTES = 2 * 1024 ** 3

CHECK_IN_A_CHILD = textwrap.dedent("""
    import resource, sys
    from synthdsl.checks import check_graph
    from synthdsl.graph import build_graph
    from synthdsl.lang.errors import SynthErrors
    from synthdsl.lang.parse import parse_spec
    # the imports map a lot of address space; the check itself may take LIMIT more
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    limit = mapped + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    text = sys.stdin.read()
    try:
        check_graph(build_graph(parse_spec(text)))
    except SynthErrors as e:
        for err in e.errors:
            print(err.code, err.message)
    else:
        print("ok")
""")


def check_bounded(text: str) -> list[str]:
    """Check ``text`` in a child with a memory and time limit; its diagnostics, one a line."""
    done = subprocess.run([sys.executable, "-c", CHECK_IN_A_CHILD, str(LIMIT_BYTES)],
                          input=text, text=True, capture_output=True, timeout=LIMIT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def errors(text: str) -> list[tuple[str, str, int]]:
    with pytest.raises(SynthErrors) as info:
        check_graph(build_graph(parse_spec(text)))
    return [(e.code, e.message, e.span.line if e.span else None) for e in info.value.errors]


# -- one cycle per strongly connected component -----------------------------------

def test_values_that_all_add_each_other_are_one_cycle_in_bounded_memory():
    names = [f"v{i}" for i in range(14)]
    body = "\n".join(f"{v} = add({', '.join(w for w in names if w != v)})" for v in names)
    out = check_bounded(f"synth Dense\ninput x: [B, 4]\n{body}\noutput v0\n")
    assert out == ["S104 cycle: 'v0' → 'v1' → 'v0'"]


def test_two_separate_loops_are_two_reports_and_a_loop_with_a_chord_is_one():
    text = ("synth L\ninput x: [B, 4]\n"
            "a = add(x, c)\nb = ReLU(a)\nc = add(b, a)\n"   # a → b → c → a, plus a → c
            "p = add(x, q)\nq = ReLU(p)\n"
            "output c, q\n")
    got = [(c, m) for c, m, _ in errors(text) if c == "S104"]
    assert got == [("S104", "cycle: 'a' → 'c' → 'a'"), ("S104", "cycle: 'p' → 'q' → 'p'")]


# -- applications that apply themselves ----------------------------------------------

@pytest.mark.parametrize("body, chain, line, column", [
    ("h = h(x)\noutput h", "'h' → 'h'", 3, 5),
    ("a = b(x)\nb = a(x)\noutput b", "'a' → 'b' → 'a'", 3, 5),
    ("h = g(x)\ng = h\noutput g", "'h' → 'g' → 'h'", 3, 5),            # through an alias
    ("z = a(x)\na = b(x)\nb = a(x)\noutput z", "'a' → 'b' → 'a'", 4, 5),  # z only uses it
])
def test_a_value_that_applies_itself_is_a_cycle_at_its_position(body, chain, line, column):
    text = f"synth H\ninput x: [B, 4]\n{body}\n"
    with pytest.raises(SynthErrors) as info:
        check_graph(build_graph(parse_spec(text)))
    got = [(e.code, e.message, e.span.line, e.span.column) for e in info.value.errors]
    name = chain.split(" ")[0]
    assert got == [("S104", f"{name} is defined in terms of itself: {chain}", line, column)]


@pytest.mark.parametrize("body", [
    "a = b(x)\nb = c(x)\nc = Linear(x, out=4)",   # applications of later applications
    "c = Linear(x, out=4)\nb = c(x)\na = b(x)",   # in order
])
def test_an_application_of_an_application_shares_the_first_layer_and_is_checked(body):
    text = f"synth H\ninput x: [B, 4]\n{body}\noutput a\n"
    g = check_graph(build_graph(parse_spec(text)))
    assert g.graph["errors"] == []
    assert g.nodes["b"]["shares"] == "c" and g.nodes["a"]["shares"] == "c"
    assert g.nodes["a"]["kind"] == "layer" and g.nodes["a"]["shape"] == ("B", 4)
    assert not g.nodes["a"].get("broken")


# -- "did you mean" over many names --------------------------------------------------

def test_ten_thousand_unknown_names_are_checked_in_bounded_time():
    body = "\n".join(f"v{i} = add(x, u{i})" for i in range(10_000))
    out = check_bounded(f"synth Many\ninput x: [B, 4]\n{body}\noutput v0\n")
    assert len(out) == 10_000 and all(line.startswith("S101 unknown name 'u") for line in out)


def test_a_close_name_among_thousands_is_still_suggested():
    names = [f"value_{i}" for i in range(5000)]
    assert did_you_mean("valeu_4321", names) is not None
    assert "'value_4321'" in did_you_mean("valeu_4321", names)
    assert did_you_mean("zzzz", names) is None


def test_an_application_of_an_applied_part_is_checked_and_compiles():
    import torch

    from synthdsl.pipeline import compile_spec
    text = ('synth P\ninput x: [B, 32, 8, 8]\nsource r = timm("test_resnet", pretrained=false)\n'
            "c = r.layer1(x)\nb = c(x)\na = b(x)\noutput a\n")
    g = check_graph(build_graph(parse_spec(text)))
    assert g.nodes["a"]["shares"] == "c" and not g.nodes["a"].get("broken")
    assert g.nodes["a"]["shape"] == ("B", 32, 8, 8)
    assert compile_spec(text)(torch.randn(1, 32, 8, 8)).shape == (1, 32, 8, 8)


def test_imports_that_fan_out_are_bounded(tmp_path):
    """Each spec imports the next twice: 2^15 builds without a bound; S008 after 64."""
    from synthdsl.graph.statements import MAX_IMPORTS
    from synthdsl.pipeline import check_spec

    depth = 15
    for i in range(depth):
        (tmp_path / f"l{i}.synth").write_text(
            f'synth L{i}\ninput x: [B, 4]\nsource p = spec("l{i + 1}.synth")\n'
            f'source q = spec("l{i + 1}.synth")\na = p(x)\nb = q(a)\noutput b\n')
    (tmp_path / f"l{depth}.synth").write_text(
        f"synth L{depth}\ninput x: [B, 4]\ny = ReLU(x)\noutput y\n")
    errors = check_spec(tmp_path / "l0.synth", raise_errors=False).graph["errors"]
    assert any(e.code == "S008" and f"more than {MAX_IMPORTS}" in e.message for e in errors)
    ok = check_spec(tmp_path / "l10.synth", raise_errors=False).graph["errors"]  # 62 builds
    assert ok == [], [str(e) for e in ok]
