"""The parser as a stage: text in, an AST (or the first syntax error) out.

Every statement kind parses to its AST class with the values written and the spans where
they stand (one-based lines and columns, end exclusive, offsets into the text); syntax
stops at the first error with its code (S001 character, S002 token, S003 end of input, and
the checks the tree builder makes: S004-S008) and a span that points at it; `parse_file`
adds the file name and reads only UTF-8 text; comments and white space mean nothing.
"""

from __future__ import annotations

import pytest

from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError
from synthdsl.lang.parse import parse_file, parse_spec


def pos(span: ast.Span) -> tuple[int, int, int, int]:
    """(line, column, end line, end column): spans compare equal whatever they hold."""
    return span.line, span.column, span.end_line, span.end_column


def text_at(text: str, span: ast.Span) -> str:
    assert text[span.start:span.end], "an empty span"
    return text[span.start:span.end]


def error_of(text: str) -> SynthError:
    with pytest.raises(SynthError) as info:
        parse_spec(text)
    return info.value


ALL = '''synth All
input image: [B, 3, 32, 32]
source r = timm("resnet18", num_classes=0, weights="w.safetensors")
a, b = r(image)
h = r.layer1[0:2](image) |> ReLU |> r.layer2[-1]
freeze r.*, h
train r.layer4 with lr_mult=0.1, wd=none
policy norm = "frozen"
adapt r.layer4.* with lora(rank=8, alpha=16)
inherit h from r.fc with rows=[0, 2]
inherit a.sub from checkpoint("x.pth")
loss ce(h)
recipe epochs=3, lr=1e-3, flag=true, names=["a", "b"]
output h, a
'''


@pytest.fixture(scope="module")
def spec() -> ast.Spec:
    return parse_spec(ALL, "all.synth")


def test_statements_parse_to_one_class_each_in_order(spec):
    assert spec.name == "All"
    assert [type(s).__name__ for s in spec.statements] == [
        "InputDecl", "SourceDecl", "Assign", "Assign", "FreezeStmt", "TrainStmt",
        "PolicyStmt", "AdaptStmt", "InheritStmt", "InheritStmt", "LossStmt", "RecipeStmt",
        "OutputStmt"]
    # each statement's span is its whole line here, and says the file it came from
    for k, st in enumerate(spec.statements, start=2):
        line = ALL.splitlines()[k - 1]
        assert pos(st.span) == (k, 1, k, len(line) + 1), type(st).__name__
        assert text_at(ALL, st.span) == line
        assert st.span.file == "all.synth"
    assert pos(spec.name_span) == (1, 7, 1, 10)
    assert str(spec.span) == "all.synth:1:1"


def test_input_declaration(spec):
    st = spec.statements[0]
    assert st.name == "image" and pos(st.name_span) == (2, 7, 2, 12)
    assert [type(d).__name__ for d in st.shape] == ["SymbolicDim", "FixedDim", "FixedDim",
                                                    "FixedDim"]
    assert st.shape[0].name == "B" and [d.size for d in st.shape[1:]] == [3, 32, 32]
    assert [pos(d.span) for d in st.shape] == [(2, 15, 2, 16), (2, 18, 2, 19), (2, 21, 2, 23),
                                               (2, 25, 2, 27)]


def test_source_declaration(spec):
    st = spec.statements[1]
    assert (st.name, st.constructor, st.target) == ("r", "timm", "resnet18")
    assert text_at(ALL, st.name_span) == "r"
    assert text_at(ALL, st.constructor_span) == "timm"
    assert text_at(ALL, st.target_span) == '"resnet18"'  # the string with its quotes
    assert [(k.name, k.value) for k in st.kwargs] == [("num_classes", 0),
                                                      ("weights", "w.safetensors")]
    assert text_at(ALL, st.kwargs[1].span) == 'weights="w.safetensors"'
    assert text_at(ALL, st.kwargs[1].value_span) == '"w.safetensors"'
    assert st.kwarg("weights").value == "w.safetensors" and st.kwarg("nothing") is None


def test_unpacking_assignment(spec):
    st = spec.statements[2]
    assert st.name == "a" and [r.name for r in st.more] == ["b"]
    assert [t.name for t in st.targets] == ["a", "b"]
    assert [pos(t.span) for t in st.targets] == [(4, 1, 4, 2), (4, 4, 4, 5)]
    call = st.value
    assert isinstance(call, ast.Call) and call.callee == ("r",) and call.index is None
    assert [type(a).__name__ for a in call.args] == ["Ref"] and call.args[0].name == "image"
    assert text_at(ALL, call.span) == "r(image)"
    assert text_at(ALL, call.callee_span) == "r"


def test_pipes_nest_to_the_left_and_indexes_are_kept(spec):
    st = spec.statements[3]
    outer = st.value
    assert isinstance(outer, ast.Pipe) and isinstance(outer.value, ast.Pipe)
    assert outer.stage.callee == ("r", "layer2")
    assert (outer.stage.index.start, outer.stage.index.item) == (-1, True)
    inner = outer.value
    assert inner.stage.callee == ("ReLU",) and inner.stage.index is None
    assert inner.stage.kwargs == ()
    call = inner.value
    assert isinstance(call, ast.Call) and call.callee == ("r", "layer1")
    assert (call.index.start, call.index.stop, call.index.item) == (0, 2, False)
    assert text_at(ALL, call.index.span) == "[0:2]"
    assert text_at(ALL, call.callee_span) == "r.layer1"
    assert text_at(ALL, call.span) == "r.layer1[0:2](image)"
    assert text_at(ALL, inner.span) == "r.layer1[0:2](image) |> ReLU"
    assert text_at(ALL, outer.span) == "r.layer1[0:2](image) |> ReLU |> r.layer2[-1]"
    assert text_at(ALL, outer.stage.span) == "r.layer2[-1]"


def test_open_slices_and_stage_options():
    s = parse_spec("synth A input x: [B, 4] y = v.features[:3](x) |> v.layer[2:] "
                   "|> Linear(out=2) output y")
    pipe = s.statements[1].value
    assert pipe.stage.callee == ("Linear",) and [(k.name, k.value) for k in pipe.stage.kwargs] \
        == [("out", 2)]
    mid = pipe.value.stage.index
    first = pipe.value.value.index
    assert (first.start, first.stop) == (None, 3) and (mid.start, mid.stop) == (2, None)
    numbered = parse_spec("synth A input x: [B, 4] y = v.features.0(x) output y")
    assert numbered.statements[1].value.callee == ("v", "features", "0")


def test_training_statements(spec):
    freeze, train, policy, adapt = spec.statements[4:8]
    assert [p.text for p in freeze.patterns] == ["r.*", "h"]
    assert [text_at(ALL, p.span) for p in freeze.patterns] == ["r.*", "h"]
    assert [p.text for p in train.patterns] == ["r.layer4"]
    assert [(k.name, k.value) for k in train.options] == [("lr_mult", 0.1), ("wd", None)]
    assert (policy.name, policy.value) == ("norm", "frozen")
    assert text_at(ALL, policy.value_span) == '"frozen"'
    assert [p.text for p in adapt.patterns] == ["r.layer4.*"]
    assert adapt.method == "lora" and text_at(ALL, adapt.method_span) == "lora"
    assert [(k.name, k.value) for k in adapt.options] == [("rank", 8), ("alpha", 16)]
    bias = parse_spec("synth A adapt r with bias output y").statements[0]
    assert bias.method == "bias" and bias.options == ()


def test_inherit_from_a_module_and_from_a_checkpoint(spec):
    module, checkpoint = spec.statements[8:10]
    assert module.target == ("h",) and module.donor == ("r", "fc")
    assert module.constructor is None and module.file is None
    assert text_at(ALL, module.donor_span) == "r.fc"
    assert [(k.name, k.value) for k in module.options] == [("rows", (0, 2))]
    assert text_at(ALL, module.options[0].value_span) == "[0, 2]"
    assert checkpoint.target == ("a", "sub") and text_at(ALL, checkpoint.target_span) == "a.sub"
    assert (checkpoint.constructor, checkpoint.file, checkpoint.donor) == ("checkpoint",
                                                                           "x.pth", ())
    assert text_at(ALL, checkpoint.donor_span) == 'checkpoint("x.pth")'
    assert checkpoint.options == ()


def test_loss_recipe_and_outputs(spec):
    loss, recipe, output = spec.statements[10:]
    assert loss.kind == "ce" and text_at(ALL, loss.kind_span) == "ce"
    assert [a.name for a in loss.args] == ["h"] and loss.options == ()
    values = {k.name: k.value for k in recipe.options}
    assert values == {"epochs": 3, "lr": 0.001, "flag": True, "names": ("a", "b")}
    assert type(values["epochs"]) is int and type(values["lr"]) is float
    assert [r.name for r in output.names] == ["h", "a"]
    assert [pos(r.span) for r in output.names] == [(14, 8, 14, 9), (14, 11, 14, 12)]
    distill = parse_spec("synth A loss distill(s, t, temperature=4.0) output s").statements[0]
    assert [a.name for a in distill.args] == ["s", "t"]
    assert [(k.name, k.value) for k in distill.options] == [("temperature", 4.0)]


def test_literal_values():
    s = parse_spec('synth A recipe a=-3, b=+2.5, c=.5, d=1e3, e=false, f=none, g=[], '
                   'h="x\\n\\"y\\u00e9", i=[1, [2, 3], "z"], j=007')
    values = {k.name: k.value for k in s.statements[0].options}
    assert values == {"a": -3, "b": 2.5, "c": 0.5, "d": 1000.0, "e": False, "f": None,
                      "g": (), "h": 'x\n"y\u00e9', "i": (1, (2, 3), "z"), "j": 7}
    assert type(values["d"]) is float and type(values["j"]) is int


def test_differently_spaced_texts_are_equal_trees():
    a = parse_spec("synth A input x: [B, 8] y = Linear(x, out=2) |> ReLU output y")
    b = parse_spec("synth A\n\n   input x :[B,8]   # the input\n\ty=Linear(x,out=2)\n"
                   "  |>ReLU\noutput\n  y\n", "b.synth")
    c = parse_spec("synth A input x: [B, 8] y = Linear(x, out=3) |> ReLU output y")
    assert a == b and a != c
    assert pos(a.statements[1].span) != pos(b.statements[1].span)


# ---- comments, white space, line endings ---------------------------------------------------


def test_comments_run_to_the_end_of_the_line_but_not_inside_strings():
    text = ('# leading comment\nsynth A # after the header\n'
            'source s = timm("a#b") # trailing\n# a whole line\noutput y # last')
    s = parse_spec(text)
    assert s.name == "A" and s.statements[0].target == "a#b"
    assert pos(s.statements[0].span) == (3, 1, 3, 23)
    assert pos(s.statements[1].span) == (5, 1, 5, 9)


def test_newlines_mean_nothing_and_windows_line_endings_are_read_as_newlines():
    one = parse_spec("synth A input x: [B, 4] y = Linear(x, out=2) output y")
    crlf = parse_spec("synth A\r\ninput x:\r\n  [B, 4]\r\ny = Linear(x,\r\n  out=2)\r\n"
                      "output y\r\n")
    assert one == crlf
    y = crlf.statements[1]
    assert pos(y.span) == (4, 1, 5, 9)  # a statement may span lines
    assert crlf.text.count("\r") == 0
    assert text_at(crlf.text, y.value.kwargs[0].span) == "out=2"


def test_tabs_count_as_one_column():
    s = parse_spec("synth A\n\tinput x: [B, 4]\n\t\toutput x")
    assert pos(s.statements[0].span) == (2, 2, 2, 17)
    assert pos(s.statements[1].names[0].span) == (3, 10, 3, 11)


def test_an_empty_spec_has_a_name_and_no_statements():
    s = parse_spec("synth Empty")
    assert s.name == "Empty" and s.statements == ()
    assert s.file is None and s.span.file is None and str(s.span) == "<spec>:1:1"


# ---- parse_file and parse_spec -------------------------------------------------------------


def test_parse_file_names_the_file_on_every_span(tmp_path):
    path = tmp_path / "probe.synth"
    path.write_text("synth P\ninput x: [B, 4]\noutput x\n", "utf-8")
    s = parse_file(path)
    assert s.file == str(path) and s.text == path.read_text()
    assert s == parse_spec(path.read_text())
    assert {st.span.file for st in s.statements} == {str(path)}
    assert s.statements[1].names[0].span.file == str(path)
    assert str(s.statements[1].span) == f"{path}:3:1"
    assert parse_file(str(path)) == s  # a str path as well as a Path


def test_parse_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.synth"
    bad.write_text("synth B\ninput x: [B, 4\n", "utf-8")
    with pytest.raises(SynthError) as info:
        parse_file(bad)
    assert info.value.code == "S003" and info.value.span.file == str(bad)
    assert str(info.value).startswith(f"{bad}:2:")


@pytest.mark.parametrize("make, words", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b"synth A \xff\xfe"), "cannot be read as UTF-8 text"),
    (lambda p: p.mkdir(), "cannot be read as UTF-8 text"),
])
def test_files_that_cannot_be_read_are_s000(tmp_path, make, words):
    path = tmp_path / "x.synth"
    make(path)
    with pytest.raises(SynthError) as info:
        parse_file(path)
    assert info.value.code == "S000" and words in info.value.message
    assert f"'{path}'" in info.value.message and info.value.span is None


# ---- syntax errors: the first one, with its code and where it is ---------------------------


@pytest.mark.parametrize("text, code, message, where", [
    # S001: a character no token starts with
    ("synth A\ninput x: [B, 4] $", "S001", "unexpected character '$'; expected a name",
     (2, 17, 2, 18)),
    ('synth A\nsource s = timm("abc\n', "S001", "unterminated string", (2, 17, 2, 18)),
    ('synth A source s = timm("\\q")', "S001", 'invalid escape in string "\\q"', (1, 25, 1, 29)),
    ("synth A\ninput x: [B, 4] % 2", "S001", "unexpected character '%'; expected a name",
     (2, 17, 2, 18)),
    # S002: a token where it cannot stand
    ("synth A\nh Linear(x)\n", "S002", "unexpected 'Linear'; expected ',' or '='",
     (2, 3, 2, 9)),
    ("synth A\ninput x: [B, 4]\ny = f(x))", "S002", "unexpected ')'", (3, 9, 3, 10)),
    ('synth A input "x": [B]', "S002", 'unexpected string "x"; expected a name',
     (1, 15, 1, 18)),
    # S003: the end of the input in the middle of a statement
    ("synth A\ninput x: [B, 4\n", "S003", "unexpected end of input; expected ',' or ']'",
     (2, 15, 2, 16)),
    ("synth A\ny = f(g(x)", "S003", "unexpected end of input; expected ')', ',' or '|>'",
     (2, 11, 2, 12)),
    ("synth A output   \n\n", "S003", "unexpected end of input; expected a name",
     (1, 15, 1, 16)),
    ("", "S003", "unexpected end of input; expected 'synth'", (1, 1, 1, 2)),
    # the tree builder's own checks
    ("synth A y = f(x, k=1, z)", "S004", "positional argument after keyword arguments",
     (1, 23, 1, 24)),
    ("synth A y = f(x, k=1, k=2)", "S005", "keyword argument 'k' is given twice",
     (1, 23, 1, 26)),
    ("synth input", "S006", "'input' is a keyword and cannot be used as a name", (1, 7, 1, 12)),
    ("synth A y = f(x, k=1e999)", "S007", "number 1e999 is out of range", (1, 20, 1, 25)),
])
def test_syntax_errors(text, code, message, where):
    err = error_of(text)
    assert (err.code, err.message, pos(err.span)) == (code, message, where)
    assert err.span.file is None and err.severity == "error"


def test_syntax_error_hints():
    assert error_of("synth A\nh Linear(x)").hint == \
        "an assignment needs '=' between the name and its value"
    assert error_of("synth A\ny = f(g(x)").hint == "a ')' is missing"
    assert error_of("synth A\ninput x: [B, 4").hint == "a ']' is missing"
    assert error_of("synth A output").hint == "the spec stops in the middle of a statement"
    assert error_of('synth A source s = timm("abc').hint == \
        'close the string with " on the same line'
    assert error_of("synth input").hint == "choose another name, e.g. 'input_'"
    assert error_of("synth A y = f(x, k=1, k=2)").notes == ("first given at <spec>:1:18",)


def test_syntax_stops_at_the_first_error():
    err = error_of("synth A\ninput x [B]\ny = = 2\noutput $")
    assert err.code == "S002" and err.span.line == 2
    assert not hasattr(err, "errors")


def test_a_lone_surrogate_is_s001_at_its_place():
    err = error_of('synth A\nsource s = timm("a\ud800")')
    assert err.code == "S001" and "U+D800" in err.message
    assert pos(err.span) == (2, 19, 2, 20)


def test_nesting_too_deep_is_s008_not_a_recursion_error():
    text = "synth A input x: [B, 4] y = " + "f(" * 3000 + "x" + ")" * 3000 + " output y"
    err = error_of(text)
    assert err.code == "S008" and err.hint.startswith("split deep expressions")


def test_error_spans_stay_inside_the_text():
    for text in ["synth A\ninput x: [B, 4\n", "synth A output", "synth A\n\ty $", "synth"]:
        err = error_of(text)
        assert 0 <= err.span.start <= len(text) and err.span.line <= text.count("\n") + 1
        assert err.span.column >= 1


def test_keyword_data_inputs_name_values():
    text = ("synth K\ninput tokens: [B, 4] int64\ninput mask: [B, 4] bool\n"
            "h = t(tokens, attention_mask=mask, flag=true, gone=none, other=none_)\n"
            "g = tokens |> t(attention_mask=mask)\noutput h")
    h, g = parse_spec(text).statements[2:4]
    mask, flag, gone, other = h.value.kwargs
    assert mask.value == ast.Ref(name="mask") and mask.is_data
    assert text_at(text, mask.value_span) == "mask" == text_at(text, mask.value.span)
    assert text_at(text, mask.span) == "attention_mask=mask"
    # true, false and none are keywords, never names; a name that starts like one is a name
    assert (flag.value, flag.is_data, gone.value, gone.is_data) == (True, False, None, False)
    assert other.value == ast.Ref(name="none_")
    # a pipe's stage takes them too: `x |> t(k=m)` is `t(x, k=m)`
    assert g.value.stage.kwargs[0].value == ast.Ref(name="mask")
    assert g.value.value == ast.Ref(name="tokens")


@pytest.mark.parametrize("text, what", [
    ("synth A recipe epochs=2, lr=rate", "recipe option 'lr'"),
    ("synth A loss distill(a, b, alpha=x)", "loss distill option 'alpha'"),
    ("synth A train r.* with lr_mult=x", "train option 'lr_mult'"),
    ("synth A adapt r.* with lora(rank=r8)", "adapt lora option 'rank'"),
    ("synth A inherit h from r.fc with rows=n", "inherit option 'rows'"),
    ('synth A source s = timm("resnet18", num_classes=n)', "source 's' option 'num_classes'"),
])
def test_statements_other_than_calls_take_literals_only(text, what):
    err = error_of(text)
    assert err.code == "S402"
    assert str(err.message).startswith(f"{what} expects a literal value")
    assert "found the value name" in err.message
    assert text_at(text, err.span) == text.rstrip(")").rsplit("=", 1)[1]


def test_only_a_name_is_a_keyword_data_input():
    err = error_of("synth A y = t(x, mask=a.b)")
    assert err.code == "S002"
    assert error_of("synth A y = t(x, mask=[a])").code == "S002"  # lists hold literals
