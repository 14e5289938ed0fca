"""`synth fmt`: the canonical spelling with every comment kept, idempotent, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthdsl.cli.app import run
from synthdsl.lang.fmt import comments_of, format_text, wrap
from synthdsl.lang.parse import parse_spec

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.synth"))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_every_example_formats_to_the_same_spec_with_its_comments(path):
    text = path.read_text("utf-8")
    out = format_text(text, str(path))
    assert parse_spec(out) == parse_spec(text)
    assert [c.text for c in comments_of(out)] == [c.text for c in comments_of(text)]
    assert format_text(out, str(path)) == out  # idempotent
    assert all(len(line) <= 100 for line in out.splitlines() if "#" not in line)


def test_where_each_comment_goes():
    text = ('# top\n\n# of the spec\nsynth A  # the name\n# inputs\ninput x: [B,4]\n\n\n\n'
            'y = Linear(x,   # inside\n  out=2)    # after\n'
            '# before the output\noutput y\n# the end\n')
    assert format_text(text) == (
        "# top\n\n# of the spec\nsynth A  # the name\n\n# inputs\ninput x: [B, 4]\n\n"
        "# inside\ny = Linear(x, out=2)  # after\n# before the output\noutput y\n# the end\n")


def test_a_trailing_comment_keeps_its_column_while_the_line_fits_before_it():
    text = "synth A\ninput x: [B, 4]\ny   =   Linear(x, out=2)       # two\noutput y\n"
    out = format_text(text)
    assert "y = Linear(x, out=2)  " in out
    assert out.index("# two") - out.rindex("\n", 0, out.index("# two")) == \
        text.index("# two") - text.rindex("\n", 0, text.index("# two"))
    tight = "synth A\ninput x: [B, 4]\ny=Linear(x,out=2) # two\noutput y\n"
    assert "y = Linear(x, out=2)  # two\n" in format_text(tight)


def test_a_hash_inside_a_string_is_not_a_comment():
    text = 'synth A\ninput x: [B, 3, 8, 8]\nsource r = timm("a#b", weights="w#1.pt")  # real\n'
    assert [c.text for c in comments_of(text)] == ["# real"]


def test_long_statements_wrap_at_commas_and_pipes():
    line = ('source s = merge("resnet18", method="ties", base="ckpt/base.safetensors", '
            'models=["ckpt/a.safetensors", "ckpt/b.safetensors", "ckpt/c.safetensors"])')
    lines = wrap(line, 60)
    assert all(len(x) <= 60 for x in lines) and len(lines) > 2
    assert all(x.startswith(" " * len("source s = merge(")) for x in lines[1:])
    pipe = "h = Linear(x, out=512) |> ReLU |> Dropout(p=0.2) |> Linear(out=256) |> GELU"
    assert wrap(pipe, 40) == ["h = Linear(x, out=512)", "    |> ReLU", "    |> Dropout(p=0.2)",
                              "    |> Linear(out=256)", "    |> GELU"]
    text = f"synth A\ninput x: [B, 8]\n{pipe}\noutput h\n"
    out = format_text(text, width=40)
    assert parse_spec(out) == parse_spec(text) and format_text(out, width=40) == out


def test_windows_line_ends_and_a_byte_order_mark():
    text = "\ufeffsynth A\r\ninput x: [B, 4]  # in\r\noutput x\r\n"
    assert format_text(text) == "synth A\n\ninput x: [B, 4]  # in\noutput x\n"


def test_the_command_in_place_check_diff_and_stdin(tmp_path, capsys, monkeypatch):
    import io

    spec = tmp_path / "a.synth"
    messy = "synth A\ninput x:[B,4]   # in\ny=Linear(x,out=2)\noutput y\n"
    spec.write_text(messy)
    assert run(["fmt", "--check", str(spec)]) == 4
    assert spec.read_text() == messy and "would reformat" in capsys.readouterr().err
    assert run(["fmt", "--diff", str(spec)]) == 4
    out = capsys.readouterr().out
    assert "-y=Linear(x,out=2)" in out and "+y = Linear(x, out=2)" in out
    assert run(["fmt", str(spec)]) == 0
    assert spec.read_text() == format_text(messy)
    assert run(["fmt", "--check", str(spec)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(messy))
    capsys.readouterr()
    assert run(["fmt", "-"]) == 0
    assert capsys.readouterr().out == format_text(messy)


def test_a_spec_that_does_not_parse_is_reported_and_left_alone(tmp_path, capsys):
    bad = tmp_path / "bad.synth"
    bad.write_text("synth A\ninput x: [B, 4]\ny = Linear(x, out=2\noutput y\n")
    before = bad.read_text()
    good = tmp_path / "good.synth"
    good.write_text("synth B\ninput x:[B,4]\noutput x\n")
    assert run(["fmt", str(bad), str(good)]) == 1
    err = capsys.readouterr().err
    assert "bad.synth:4:1" in err and "Traceback" not in err
    assert bad.read_text() == before
    assert good.read_text() == "synth B\n\ninput x: [B, 4]\noutput x\n"  # the rest still done
    assert run(["fmt", str(tmp_path / "missing.synth")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_patterns_wrap_between_themselves_never_inside_their_brackets():
    pats = ", ".join(f"r18.layer[34].{i}.conv*" for i in range(8))
    text = f"synth A\ninput x: [B, 4]\noutput x\nfreeze {pats}\ntrain r.layer4 with lr_mult=0.1\n"
    out = format_text(text, width=50)
    assert parse_spec(out) == parse_spec(text) and format_text(out, width=50) == out
    lines = [x for x in out.splitlines() if "layer[34]" in x]
    assert len(lines) > 1 and all(x.count("[") == x.count("]") for x in lines)
    assert all(x.startswith("       ") for x in lines[1:])  # under the first pattern
