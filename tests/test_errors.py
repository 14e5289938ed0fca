"""The caret renderer and the diagnostics family, as pure functions on hand-made input.

`render` draws one diagnostic like rustc (header, location, the line, carets under the span,
notes, help); `render_all` draws several, capped with "... and N more" and counted;
`SynthErrors` carries several, sorted by place, and `flatten` / `Collector` open it again.
No parser and no file is needed: every span here is written by hand, columns one-based.
"""

from __future__ import annotations

import pytest

from synthdsl.lang.ast import Span
from synthdsl.lang.errors import (MAX_REPORTED, Collector, SynthError, SynthErrors,
                                  did_you_mean, flatten, render, render_all)


def span(line: int, column: int, end_line: int | None = None, end_column: int | None = None,
         file: str | None = "a.synth") -> Span:
    return Span(file=file, line=line, column=column, end_line=end_line or line,
                end_column=end_column or column + 1)


TEXT = "synth A\ninput x: [B, 4]\nh = Linear(x, out=8)\noutput h\n"


def test_a_single_line_span_is_underlined_exactly():
    err = SynthError("S301", "'h' expects 4 input features but 'x' produces 8",
                     span(3, 5, 3, 21), hint="add a projection")
    assert render(err, TEXT) == (
        "error[S301]: 'h' expects 4 input features but 'x' produces 8\n"
        " --> a.synth:3:5\n"
        "  |\n"
        "3 | h = Linear(x, out=8)\n"
        "  |     ^^^^^^^^^^^^^^^^\n"
        "  = help: add a projection")


def test_columns_are_one_based():
    first = render(SynthError("S101", "m", span(2, 1, 2, 6)), TEXT).splitlines()
    assert first[1] == " --> a.synth:2:1"
    assert first[3:] == ["2 | input x: [B, 4]", "  | ^^^^^"]
    last = render(SynthError("S101", "m", span(2, 15, 2, 16)), TEXT).splitlines()
    assert last[3:] == ["2 | input x: [B, 4]", "  |               ^"]
    assert "input x: [B, 4]"[15 - 1] == "]"


def test_a_span_over_several_lines_underlines_the_rest_of_its_first_line():
    err = SynthError("S402", "m", span(2, 7, 3, 4))
    lines = render(err, TEXT).splitlines()
    assert lines[1:] == [" --> a.synth:2:7", "  |", "2 | input x: [B, 4]",
                         "  |       ^^^^^^^^^"]


def test_an_empty_or_backwards_span_gets_one_caret_at_least():
    empty = render(SynthError("S1", "m", span(4, 9, 4, 9)), TEXT).splitlines()
    assert empty[3:] == ["4 | output h", "  |         ^"]
    past = render(SynthError("S1", "m", span(4, 12, 4, 12)), TEXT).splitlines()
    assert past[-1] == "  |            ^"


def test_tabs_are_one_column_as_the_parser_counts_them():
    text = "synth A\n\tinput\tx: [B]\n"
    lines = render(SynthError("S1", "m", span(2, 8, 2, 9)), text).splitlines()
    # column 8 is `x`: tab, i, n, p, u, t, tab, x
    assert lines[3] == "2 | \tinput\tx: [B]".expandtabs(1)
    assert lines[4] == "  |        ^"
    assert lines[3][4 + 8 - 1] == "x"


def test_a_span_at_the_end_of_input():
    text = "synth A\ninput x: [B, 4"
    at_end = render(SynthError("S003", "unexpected end of input", span(2, 15, 2, 16)), text)
    assert at_end.splitlines()[3:] == ["2 | input x: [B, 4", "  |               ^"]
    after = render(SynthError("S003", "unexpected end of input", span(3, 1)), text)
    assert after.splitlines() == ["error[S003]: unexpected end of input", " --> a.synth:3:1",
                                  "  |", "  | <end of input>"]
    empty = render(SynthError("S003", "unexpected end of input", span(1, 1)), "")
    assert empty.splitlines()[-1] == "  | <end of input>"


def test_a_span_beyond_the_text_shows_only_where():
    out = render(SynthError("S1", "m", span(9, 2)), TEXT)
    assert out.splitlines() == ["error[S1]: m", " --> a.synth:9:2"]


def test_the_gutter_is_as_wide_as_the_line_number():
    text = "\n" * 120 + "y = f(x)\n"
    out = render(SynthError("S1", "m", span(121, 5, 121, 9), hint="h"), text).splitlines()
    assert out[1:] == ["   --> a.synth:121:5", "    |", "121 | y = f(x)", "    |     ^^^^",
                       "    = help: h"]


def test_without_a_span_only_the_message_notes_and_help():
    err = SynthError("S000", "spec file 'x.synth' does not exist", None,
                     hint="check the path", notes=["looked in /tmp", "and nowhere else"])
    assert render(err) == ("error[S000]: spec file 'x.synth' does not exist\n"
                           "  = note: looked in /tmp\n"
                           "  = note: and nowhere else\n"
                           "  = help: check the path")
    assert render(err, TEXT) == render(err)


def test_notes_come_before_help_and_severity_leads():
    err = SynthError("S901", "unused", span(3, 1, 3, 2), hint="remove it",
                     notes=["first note", "second note"], severity="warning")
    out = render(err, TEXT).splitlines()
    assert out[0] == "warning[S901]: unused"
    assert out[-3:] == ["  = note: first note", "  = note: second note", "  = help: remove it"]


def test_a_span_without_a_file_says_spec():
    out = render(SynthError("S1", "m", span(1, 1, 1, 6, file=None)), TEXT).splitlines()
    assert out[1] == " --> <spec>:1:1"
    assert out[3:] == ["1 | synth A", "  | ^^^^^"]


def test_windows_line_endings_do_not_show():
    out = render(SynthError("S1", "m", span(2, 1, 2, 6)), TEXT.replace("\n", "\r\n"))
    assert "\r" not in out and "2 | input x: [B, 4]" in out


# ---- several diagnostics -------------------------------------------------------------------


def test_render_all_joins_blocks_and_counts():
    errs = SynthErrors([SynthError("S101", "second", span(3, 5, 3, 11)),
                        SynthError("S102", "first", span(2, 7, 2, 8))])
    out = render_all(errs, TEXT)
    blocks = out.split("\n\n")
    assert blocks[0] == render(SynthError("S102", "first", span(2, 7, 2, 8)), TEXT)
    assert blocks[1] == render(SynthError("S101", "second", span(3, 5, 3, 11)), TEXT)
    assert blocks[2] == "2 errors found"
    one = render_all(SynthError("S101", "only", span(3, 1)), TEXT)
    assert one.endswith("\n\n1 error found") and one.startswith("error[S101]: only")


def test_render_all_caps_with_and_n_more():
    errs = SynthErrors([SynthError("S101", f"e{i}", span(1 + i % 4, 1)) for i in range(25)])
    out = render_all(errs, TEXT)
    assert out.count("error[S101]") == MAX_REPORTED == 20
    assert out.endswith("\n\n... and 5 more\n\n25 errors found")
    small = render_all(errs, TEXT, limit=3)
    assert small.count("error[S101]") == 3
    assert small.endswith("... and 22 more\n\n25 errors found")
    exact = render_all(SynthErrors(flatten(errs)[:20]), TEXT)
    assert "more" not in exact and exact.endswith("20 errors found")


def test_render_all_finds_each_file_text_by_name():
    a, b = "synth A\noutput y\n", "synth B\ninput q: [B]\n"
    errs = SynthErrors([SynthError("S1", "in a", span(2, 8, 2, 9, file="a.synth")),
                        SynthError("S2", "in b", span(2, 7, 2, 8, file="b.synth"))])
    out = render_all(errs, {"a.synth": a, "b.synth": b})
    assert "2 | output y\n  |        ^" in out
    assert "2 | input q: [B]\n  |       ^" in out


def test_render_all_reads_a_file_the_text_does_not_belong_to(tmp_path):
    other = tmp_path / "other.synth"
    other.write_text("synth O\nlogits = nothing(x)\n")
    err = SynthError("S101", "unknown layer", span(2, 10, 2, 17, file=str(other)))
    out = render_all(err, TEXT)  # TEXT is not other.synth: the file on disk is shown
    assert "2 | logits = nothing(x)\n  |          ^^^^^^^" in out


def test_render_all_reads_each_file_once_however_many_errors_it_has(tmp_path, monkeypatch):
    from synthdsl.lang import errors as errors_module

    spec = tmp_path / "spec.synth"
    spec.write_text(TEXT)
    reads = []
    read = errors_module._read_text
    monkeypatch.setattr(errors_module, "_read_text", lambda f: reads.append(f) or read(f))
    errs = SynthErrors([SynthError("S1", f"problem {i}", span(3, 5, 3, 11, file=str(spec)))
                        for i in range(MAX_REPORTED + 5)])
    out = render_all(errs, TEXT)
    assert out.count("3 | h = Linear(x, out=8)") == MAX_REPORTED
    assert reads == [str(spec)]


def test_synth_errors_sort_by_place_and_flatten():
    spanless = SynthError("S000", "no place")
    late = SynthError("S101", "late", span(5, 1))
    early = SynthError("S101", "early", span(2, 9))
    earlier = SynthError("S101", "earlier", span(2, 3))
    other_file = SynthError("S101", "b file", span(1, 1, file="b.synth"))
    errs = SynthErrors([other_file, late, early, spanless, earlier])
    assert [e.message for e in errs.errors] == ["no place", "earlier", "early", "late",
                                                "b file"]
    assert (errs.code, errs.message) == ("S000", "no place")  # the first stands for all
    assert flatten(errs) == errs.errors and flatten(late) == [late]
    assert str(errs).splitlines() == [str(e) for e in errs.errors]
    assert isinstance(errs, SynthError)


def test_collector_flattens_what_it_is_given_and_raises_once():
    c = Collector()
    c.raise_if_any()  # nothing collected: nothing raised
    c.add(SynthError("S1", "one", span(3, 1)))
    c.add(SynthErrors([SynthError("S2", "two", span(2, 1)), SynthError("S3", "three",
                                                                       span(4, 1))]))
    assert [e.code for e in c.errors] == ["S1", "S2", "S3"]
    with pytest.raises(SynthErrors) as info:
        c.raise_if_any()
    assert [e.code for e in info.value.errors] == ["S2", "S1", "S3"]


def test_str_and_to_dict():
    err = SynthError("S105", "output 'y' is not defined", span(4, 8, 4, 9), hint="define it",
                     notes=["n"])
    assert str(err) == "a.synth:4:8: error[S105]: output 'y' is not defined"
    assert str(SynthError("S0", "m")) == "error[S0]: m"
    assert err.to_dict() == {
        "code": "S105", "severity": "error", "message": "output 'y' is not defined",
        "hint": "define it", "notes": ["n"],
        "span": {"file": "a.synth", "line": 4, "column": 8, "end_line": 4, "end_column": 9}}
    assert SynthError("S0", "m").to_dict()["span"] is None


def test_did_you_mean():
    assert did_you_mean("imagee", ["image", "label"]) == "did you mean 'image'?"
    assert did_you_mean("Linaer", ["Linear", "LayerNorm", "Linear"]) == "did you mean 'Linear'?"
    assert did_you_mean("feat", ["feats", "feat1", "feat2", "other"]) == \
        "did you mean 'feats' or 'feat2' or 'feat1'?"  # the closest first
    assert did_you_mean("zzz", ["image"]) is None and did_you_mean("x", []) is None
