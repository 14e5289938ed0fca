"""Mistakes in how a spec is written get the documented code at the word that is wrong,
with the word that was meant: keywords as names (S006), a misspelt statement word,
another framework's layer names, and a byte-order mark at the start of a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError, render
from synthdsl.lang.parse import STATEMENT_WORDS, parse_spec
from synthdsl.lang.transform import KEYWORDS
from synthdsl.library.aliases import ALIASES
from synthdsl.library.layers import LAYERS
from synthdsl.library.ops import OPS

HEAD = "synth A\ninput x: [B, 8]\n"


def _error(text: str) -> SynthError:
    with pytest.raises(SynthError) as info:
        parse_spec(text, "a.synth")
    return info.value


@pytest.mark.parametrize("word", sorted(set(STATEMENT_WORDS)))
def test_a_statement_word_assigned_to_is_s006_at_the_word(word):
    text = HEAD + f"{word} = Linear(x, out=5)\noutput x\n"
    e = _error(text)
    at = text.index(f"{word} =")
    assert e.code == "S006", str(e)
    assert (e.span.line, e.span.column) == (3, 1)
    assert (e.span.start, e.span.end) == (at, at + len(word))
    assert f"'{word}' is a keyword" in e.message


def test_a_keyword_among_unpacked_names_is_s006():
    e = _error(HEAD + "a, train = Linear(x, out=5)\noutput a\n")
    assert e.code in ("S006", "S002")
    e = _error(HEAD + "train, a = Linear(x, out=5)\noutput a\n")
    assert e.code == "S006" and e.span.column == 1


def test_a_keyword_used_where_its_statement_fits_is_still_parsed():
    """`train x` and `output y` stay statements: the S006 rule reads only `word =`."""
    spec = parse_spec(HEAD + "y = Linear(x, out=5)\nfreeze y\ntrain y\noutput y\n")
    assert [type(s).__name__ for s in spec.statements][-3:] == ["FreezeStmt", "TrainStmt",
                                                                  "OutputStmt"]


@pytest.mark.parametrize("typo, meant", [("sourse", "source"), ("imput", "input"),
                                          ("freez", "freeze"), ("ouptut", "output"),
                                          ("inheirt", "inherit")])
def test_a_misspelt_statement_word_names_the_word_meant(typo, meant):
    text = HEAD + f"{typo} s = timm(\"test_resnet\")\noutput x\n"
    e = _error(text)
    assert e.code == "S002"
    assert (e.span.line, e.span.column) == (3, 1) and e.span.end - e.span.start == len(typo)
    assert f"unknown statement '{typo}'" in e.message
    assert e.hint == f"did you mean '{meant}'?"


def test_a_name_far_from_every_statement_word_keeps_the_plain_message():
    e = _error(HEAD + "features s = Linear(x, out=5)\noutput x\n")
    assert e.code == "S002" and "unknown statement" not in e.message
    assert e.hint == "an assignment needs '=' between the name and its value"


@pytest.mark.parametrize("written, meant", [("Dense", "Linear"), ("Conv2D", "Conv2d"),
                                             ("Relu", "ReLU"), ("BatchNormalization",
                                                                "BatchNorm2d"),
                                             ("Concatenate", "concat"), ("dense", "Linear")])
def test_another_frameworks_layer_name_suggests_ours(written, meant, capsys, tmp_path):
    spec = tmp_path / "a.synth"
    spec.write_text(HEAD + f"y = {written}(x, out=5)\noutput y\n")
    assert run(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "error[S101]" in err and f"unknown layer or operation '{written}'" in err
    assert f"did you mean '{meant}'?" in err
    assert "a.synth:3:5" in err


def test_every_alias_names_a_layer_or_operation_that_exists():
    names = {*LAYERS, *OPS}
    for alias, target in ALIASES.items():
        assert alias not in names, alias
        assert target in names or "|>" in target, (alias, target)


def test_keywords_and_statement_words_agree():
    assert set(STATEMENT_WORDS) <= KEYWORDS


def test_a_byte_order_mark_is_not_part_of_the_spec(tmp_path, capsys):
    spec = tmp_path / "bom.synth"
    spec.write_bytes(b"\xef\xbb\xbf" + (HEAD + "y = Linear(x, out=5)\noutput y\n").encode())
    assert run(["check", str(spec)]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.synth"
    bad.write_bytes(b"\xef\xbb\xbfsynth A\ninput x: [B, 8]\ny = Dense(x, out=5)\noutput y\n")
    assert run(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.synth:3:5" in err and "\ufeff" not in err


def test_a_byte_order_mark_keeps_first_line_columns():
    e = _error("\ufeffsynth A A")
    assert (e.span.line, e.span.column) == (1, 10)
    assert "\ufeff" not in render(e, "\ufeffsynth A A")
    assert render(e, "\ufeffsynth A A").splitlines()[-1].index("^") == \
        render(e, "synth A A").splitlines()[-1].index("^")


def test_a_byte_order_mark_elsewhere_is_still_an_error():
    e = _error(HEAD + "\ufeffoutput x\n")
    assert e.code == "S001" and e.span.line == 3


def test_a_spec_of_too_many_statements_is_s008_at_the_first_one_beyond(tmp_path, capsys):
    from synthdsl.lang.parse import MAX_STATEMENTS

    n = MAX_STATEMENTS + 5
    lines = ["synth C", "input x: [B, 8]", "v0 = ReLU(x)"]
    lines += [f"v{i} = ReLU(v{i - 1})" for i in range(1, n - 2)] + [f"output v{n - 4}"]
    spec = tmp_path / "chain.synth"
    spec.write_text("\n".join(lines) + "\n")
    assert run(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "error[S008]" in err and f"at most {MAX_STATEMENTS:,} are read" in err
    assert f"chain.synth:{MAX_STATEMENTS + 2}:1" in err


def test_a_spec_file_over_its_size_limit_says_both_sizes(tmp_path, capsys):
    from synthdsl.files import SPEC_MAX_BYTES

    spec = tmp_path / "big.synth"
    spec.write_text("synth A\n" + "# padding\n" * (SPEC_MAX_BYTES // 10 + 1))
    assert run(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "error[S000]" in err and f"more than the {SPEC_MAX_BYTES:,}" in err
    assert "UTF-8" not in err


@pytest.mark.parametrize("option, meant", [("num_clases=5", "num_classes"),
                                            ('weigths="w.safetensors"', "weights"),
                                            ("in_chan=1", "in_chans")])
def test_a_misspelt_source_option_is_s402_at_it_with_the_option_meant(option, meant):
    import synthdsl

    text = (f'synth A\ninput x: [B, 3, 32, 32]\nsource s = timm("test_resnet", {option})\n'
            "y = s(x)\noutput y\n")
    errors = synthdsl.check_spec(text, raise_errors=False).graph["errors"]
    assert [e.code for e in errors] == ["S402"], [str(e) for e in errors]
    name = option.split("=")[0]
    assert f"has no option '{name}'" in errors[0].message
    assert errors[0].hint == f"did you mean '{meant}'?"
    at = text.index(option)
    assert at <= errors[0].span.start <= at + len(option)

