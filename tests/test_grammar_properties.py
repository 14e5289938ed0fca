"""Property tests on the front end: text → AST (`parse_spec`) and AST → text (`format_spec`).

1. Any text, random or a valid spec slightly damaged, parses to a Spec or raises SynthError,
   never anything else, and never hangs.
2. Every span the front end reports lies inside the text: those of errors, and those of every
   node of a successful parse (which also slice to the token they name).
3. Random ASTs survive `format_spec` then `parse_spec`, and formatting is idempotent.
4. Extra white space and comments between tokens do not change the AST.
5. `format_text` of such a text means the same spec, keeps every comment in order, and is
   idempotent, at any width.

The tests at the end pin down bugs these properties once found; each one
runs a known failing input (an explicit `@example` or a fixed parameter), so it fails on
every run.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from lark import Lark
from pydantic import BaseModel

from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError
from synthdsl.lang.parse import KEYWORDS, grammar_text, parse_spec
from synthdsl.lang.fmt import comments_of, format_text
from synthdsl.lang.printer import format_expr, format_spec, format_value

ROOT = Path(__file__).resolve().parent.parent
MODEL_TEXTS = [p.read_text("utf-8") for p in sorted((ROOT / "models").glob("*.synth"))]


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])


# ---- helpers ------------------------------------------------------------------------------


def parse_or_error(text: str, file: str | None = None):
    """Parse; return the Spec or the SynthError. Any other exception propagates (a failure)."""
    try:
        spec = parse_spec(text, file)
    except SynthError as err:
        event(f"error {err.code}")
        return err
    assert isinstance(spec, ast.Spec)
    event("parsed")
    return spec


def _is_span_field(name: str) -> bool:
    return name == "span" or name.endswith("_span")


def strict_key(obj):
    """A structural key of an AST that ignores spans but, unlike `==`, tells 1, 1.0 and True
    apart (and 0.0 from -0.0), and tuples from lists."""
    if isinstance(obj, ast.Span):
        return None
    if isinstance(obj, BaseModel):
        return (type(obj).__name__,) + tuple(
            (name, strict_key(getattr(obj, name))) for name in type(obj).model_fields
            if not _is_span_field(name) and name not in ("file", "text"))
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__, tuple(strict_key(x) for x in obj))
    if isinstance(obj, float):
        return ("float", repr(obj))
    return (type(obj).__name__, obj)


def children(node: BaseModel):
    """The AST nodes directly below `node`."""
    for name in type(node).model_fields:
        value = getattr(node, name)
        if isinstance(value, ast.Node):
            yield value
        elif isinstance(value, tuple):
            yield from (v for v in value if isinstance(v, ast.Node))


def walk(node: BaseModel):
    yield node
    for child in children(node):
        yield from walk(child)


def line_col(text: str, offset: int) -> tuple[int, int]:
    """One-based (line, column) of a character offset, counting only '\\n' as a line break."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


_COMMENT = re.compile(r"#[^\n]*")


def _squeeze(text: str) -> str:
    """Text of a NAME-only region with comments and white space removed."""
    return re.sub(r"\s+", "", _COMMENT.sub("", text))


def _literal_of(text: str):
    """The value of a literal's source text, read back through the parser."""
    spec = parse_spec(f"synth L\ny = f(k={text}\n)")
    (stmt,) = spec.statements
    (kw,) = stmt.value.kwargs
    return kw.value


def _has_nonfinite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, tuple):
        return any(_has_nonfinite(v) for v in value)
    return False


def check_node_spans(spec: ast.Spec, file: str | None = None) -> None:
    """Every span of a parsed spec lies inside its text, is consistent (offsets vs
    line/column), nests inside its parent's, and named tokens slice to their names."""
    text = spec.text

    def check(span: ast.Span, what: str) -> str:
        assert span.file == file, what
        assert 0 <= span.start < span.end <= len(text), (what, span)
        assert (span.line, span.column) == line_col(text, span.start), (what, span)
        assert (span.end_line, span.end_column) == line_col(text, span.end), (what, span)
        return text[span.start:span.end]

    def visit(node: BaseModel, parent: ast.Span | None) -> None:
        own = node.span
        for name in type(node).model_fields:
            if _is_span_field(name):
                span = getattr(node, name)
                check(span, f"{type(node).__name__}.{name}")
                if name != "span":  # a token of the node lies inside the node
                    assert own.start <= span.start <= span.end <= own.end, (node, name)
        if parent is not None:
            assert parent.start <= own.start <= own.end <= parent.end, node
        piece = text[own.start:own.end]
        if isinstance(node, ast.Spec):
            assert text[node.name_span.start:node.name_span.end] == node.name
            assert piece.startswith("synth")
        elif isinstance(node, ast.InputDecl):
            assert text[node.name_span.start:node.name_span.end] == node.name
            assert piece.startswith("input")
            assert piece.endswith("]" if node.dtype == "float32" else node.dtype)
        elif isinstance(node, ast.BoundedDim):
            assert re.sub(r"\s+|#[^\n]*", "", piece) == f"{node.name}<={node.max}"
        elif isinstance(node, ast.SymbolicDim):
            assert piece == node.name
        elif isinstance(node, ast.FixedDim):
            assert piece.isdigit() and int(piece) == node.size
        elif isinstance(node, ast.SourceDecl):
            assert text[node.name_span.start:node.name_span.end] == node.name
            assert text[node.constructor_span.start:node.constructor_span.end] == node.constructor
            target = text[node.target_span.start:node.target_span.end]
            assert json.loads(target, strict=False) == node.target
            assert piece.startswith("source") and piece.endswith(")")
        elif isinstance(node, ast.Assign):
            assert text[node.name_span.start:node.name_span.end] == node.name
            assert node.span.start == node.name_span.start
        elif isinstance(node, ast.Ref):
            assert piece == node.name
        elif isinstance(node, (ast.Call, ast.Stage)):
            callee = text[node.callee_span.start:node.callee_span.end]
            assert _squeeze(callee) == ".".join(node.callee)
            assert node.span.start == node.callee_span.start
            if isinstance(node, ast.Call):
                assert piece.endswith(")")
        elif isinstance(node, ast.Pipe):
            assert node.span.start == node.value.span.start
            assert node.span.end == node.stage.span.end
            assert "|>" in piece
        elif isinstance(node, ast.KwArg):
            assert piece.startswith(node.name)
            assert node.span.end == node.value_span.end
            literal = text[node.value_span.start:node.value_span.end]
            assert strict_key(_literal_of(literal)) == strict_key(node.value), literal
        elif isinstance(node, ast.Pattern):
            assert piece == node.text
        elif isinstance(node, (ast.FreezeStmt, ast.TrainStmt, ast.OptimizeStmt)):
            word = {ast.FreezeStmt: "freeze", ast.TrainStmt: "train",
                    ast.OptimizeStmt: "optimize"}[type(node)]
            assert piece.startswith(word)
            if isinstance(node, ast.OptimizeStmt):
                assert node.options and re.search(r"\swith\s", piece)
        elif isinstance(node, ast.OutputStmt):
            assert piece.startswith("output")
        for child in children(node):
            visit(child, own)

    visit(spec, None)


def check_error_span(err: SynthError, text: str) -> None:
    """The bounds every reported error span must respect (the offsets are into the text with
    CRLF normalised, which is what the parser reads; never longer than the text itself)."""
    norm = text.replace("\r\n", "\n")
    span = err.span
    assert span is not None, err
    assert 1 <= span.line <= norm.count("\n") + 2, (err, span)
    assert span.column >= 1, (err, span)
    assert 0 <= span.start <= span.end <= len(norm) + 1, (err, span)
    assert err.code.startswith("S"), err


# ---- strategies: random ASTs --------------------------------------------------------------

names = st.one_of(
    st.sampled_from(["x", "y", "B", "r18", "layer4", "_", "features", "Linear", "timm",
                     "input_", "withx", "none1", "True", "NONE"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True),
).filter(lambda s: s not in KEYWORDS)

dotted = st.lists(names, min_size=1, max_size=3).map(tuple)

# Patterns are one PATTERN token; keywords are fine there (only PATTERN is lexed after
# `freeze`, `train` and their commas).
patterns = st.one_of(
    st.sampled_from(["a.b.*", "*.bn1", "x?y", "*", "r18.layer[34]", "[!a]*", "-", "1.5",
                     "none", "with", "train", "optimize", "a..b", "__"]),
    st.from_regex(r"[A-Za-z0-9_*?\[\]!.-]{1,10}", fullmatch=True),
).map(lambda t: ast.Pattern(text=t))

_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")

# Any unicode, lone surrogates included, except a high surrogate right before a low one:
# printed as two \u escapes, those read back as one character (see
# test_adjacent_surrogates_round_trip below).
strings = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(list('"\\\n\r\t/#\'ab\x00\x7f\u00e9\u2028\U0001f600')),
            max_size=8),
    st.text(alphabet=st.characters(categories=["Cs", "Ll"]), max_size=4),  # lone surrogates
).filter(lambda s: not _SURROGATE_PAIR.search(s))

scalars = st.one_of(
    strings,
    st.integers(),
    st.integers(-10, 10),
    st.floats(min_value=-1e300, max_value=1e300),  # the range a spec's numbers may have
    st.booleans(),
    st.none(),
)

literals = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3).map(tuple),
                        max_leaves=6)

kwargs = st.dictionaries(names, literals, max_size=3).map(
    lambda d: tuple(ast.KwArg(name=k, value=v) for k, v in d.items()))

refs = names.map(lambda n: ast.Ref(name=n))

# A call's or a stage's keyword arguments may also name a value (a keyword data input);
# the other statements take literals only.
call_kwargs = st.dictionaries(names, st.one_of(literals, refs), max_size=3).map(
    lambda d: tuple(ast.KwArg(name=k, value=v) for k, v in d.items()))


small_ints = st.integers(-20, 20)
indexes = st.one_of(
    st.none(),
    small_ints.map(lambda i: ast.Index(start=i, item=True)),
    st.builds(lambda a, b: ast.Index(start=a, stop=b), st.none() | small_ints,
              st.none() | small_ints),
)


def _extend(inner):
    calls = st.builds(
        lambda callee, index, args, kw: ast.Call(callee=callee, index=index, args=tuple(args),
                                                 kwargs=kw),
        dotted, indexes, st.lists(inner, max_size=3), call_kwargs)
    pipes = st.builds(
        lambda value, callee, index, kw: ast.Pipe(
            value=value, stage=ast.Stage(callee=callee, index=index, kwargs=kw)),
        inner, dotted, indexes, call_kwargs)
    return st.one_of(calls, pipes)


exprs = st.recursive(refs, _extend, max_leaves=8)

dims = st.one_of(st.integers(0, 10**6).map(lambda n: ast.FixedDim(size=n)),
                 names.map(lambda n: ast.SymbolicDim(name=n)),
                 st.builds(lambda n, m: ast.BoundedDim(name=n, max=m), names,
                           st.integers(0, 10**6)))

statements = st.one_of(
    st.builds(lambda n, shape, dtype: ast.InputDecl(name=n, shape=tuple(shape), dtype=dtype),
              names, st.lists(dims, min_size=1, max_size=5), st.sampled_from(ast.DTYPES)),
    st.builds(lambda n, ctor, target, kw: ast.SourceDecl(name=n, constructor=ctor, target=target,
                                                        kwargs=kw),
              names, st.one_of(st.just("timm"), names), strings, kwargs),
    st.builds(lambda n, e: ast.Assign(name=n, value=e), names, exprs),
    st.builds(lambda ps: ast.FreezeStmt(patterns=tuple(ps)),
              st.lists(patterns, min_size=1, max_size=4)),
    st.builds(lambda ps, kw: ast.TrainStmt(patterns=tuple(ps), options=kw),
              st.lists(patterns, min_size=1, max_size=4), kwargs),
    st.builds(lambda ps, kw: ast.OptimizeStmt(patterns=tuple(ps), options=kw),
              st.lists(patterns, min_size=1, max_size=4), kwargs.filter(bool)),
    st.builds(lambda ns: ast.OutputStmt(names=tuple(ast.Ref(name=n) for n in ns)),
              st.lists(names, min_size=1, max_size=4)),
    st.builds(lambda ns, e: ast.Assign(name=ns[0], more=tuple(ast.Ref(name=n) for n in ns[1:]),
                                       value=e),
              st.lists(names, min_size=2, max_size=4, unique=True), exprs),
    st.builds(lambda n, v: ast.PolicyStmt(name=n, value=v), names, literals),
    st.builds(lambda ps, m, kw: ast.AdaptStmt(patterns=tuple(ps), method=m, options=kw),
              st.lists(patterns, min_size=1, max_size=3), names, kwargs),
    st.builds(lambda k, args, kw: ast.LossStmt(kind=k, args=tuple(args), options=kw),
              names, st.lists(exprs, max_size=3), kwargs),
    st.builds(lambda kw: ast.RecipeStmt(options=kw), kwargs.filter(bool)),
)


def specs(max_statements: int = 8):
    return st.builds(lambda n, sts: ast.Spec(name=n, statements=tuple(sts)),
                     names, st.lists(statements, max_size=max_statements))


# ---- strategies: damaged specs ------------------------------------------------------------

_PIECES = st.one_of(
    st.sampled_from(list('()[],=:|>."\\#\n\r\t -+eE09_aZ*?!') +
                    ["synth", "input", "source", "freeze", "train", "optimize", "with",
                     "output", "true",
                     "false", "none", "policy", "adapt", "loss", "recipe", "[1:]", "[-1]", "|>", "\r\n", '"\\u12', '"\\q"', "1e5", "-.5", "k=1",
                     "(x)", "[B]", ", k=1", "x, y", "\x00", "\u00e9", "\ufeff"]),
    st.characters(),
)


@st.composite
def near_valid(draw):
    text = draw(st.one_of(st.sampled_from(MODEL_TEXTS), specs(6).map(format_spec)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "swap"]))
        pos = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:pos] + draw(_PIECES) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 8)):]
        elif op == "replace":
            text = text[:pos] + draw(_PIECES) + text[pos + 1:]
        elif op == "truncate":
            text = text[:pos]
        else:  # move a chunk elsewhere
            end = draw(st.integers(pos, min(len(text), pos + 20)))
            chunk, rest = text[pos:end], text[:pos] + text[end:]
            at = draw(st.integers(0, len(rest)))
            text = rest[:at] + chunk + rest[at:]
    return text


# ---- 1. random text raises only SynthError ------------------------------------------------


@settings(max_examples=300, **SETTINGS)
@given(st.one_of(st.text(), st.text().map(lambda t: "synth A\n" + t),
                 st.text(alphabet=st.sampled_from(list('synth Ax=f(k"1)[]|>,.#\n:*-')))))
def test_arbitrary_text_parses_or_raises_synth_error(text):
    result = parse_or_error(text)
    if isinstance(result, SynthError):
        check_error_span(result, text)
    else:
        check_node_spans(result)


@settings(max_examples=300, **SETTINGS)
@given(near_valid())
def test_near_valid_text_parses_or_raises_synth_error(text):
    result = parse_or_error(text, file="damaged.synth")
    if isinstance(result, SynthError):
        check_error_span(result, text)
        return
    check_node_spans(result, file="damaged.synth")
    # whatever the parser accepts, the printer writes back to the same tree
    # (non-finite floats are the known exception: see test_parsed_numbers_round_trip)
    assume(not any(isinstance(n, ast.KwArg) and _has_nonfinite(n.value) for n in walk(result)))
    again = parse_spec(format_spec(result))
    assert again == result
    assert strict_key(again) == strict_key(result)


@settings(max_examples=15, **SETTINGS)
@given(st.one_of(
    st.lists(specs(12).map(format_spec), min_size=5, max_size=15)
      .map(lambda ts: "synth Big\n" + "".join(t.split("\n", 1)[1] for t in ts)),
    st.text(min_size=2000, max_size=4000),
    st.text(alphabet=st.sampled_from(list('x=f(|>,)[1"#\n ')), min_size=2000, max_size=4000),
))
def test_inputs_of_a_few_kilobytes_finish(text):
    result = parse_or_error(text)
    if isinstance(result, SynthError):
        check_error_span(result, text)


# ---- 2. spans lie inside the text --------------------------------------------------------


@pytest.mark.parametrize("index", range(len(MODEL_TEXTS)))
def test_model_spans_slice_to_their_tokens(index):
    check_node_spans(parse_spec(MODEL_TEXTS[index], file="m.synth"), file="m.synth")


@settings(max_examples=150, **SETTINGS)
@given(specs(), st.sampled_from([None, "gen.synth"]))
def test_spans_of_formatted_specs_slice_to_their_tokens(spec, file):
    check_node_spans(parse_spec(format_spec(spec), file=file), file=file)


_SIMPLE = st.one_of(st.integers(-5, 5), st.booleans(), st.none(), st.text(max_size=4))


@settings(max_examples=60, **SETTINGS)
@given(st.dictionaries(names, _SIMPLE, min_size=1, max_size=3),
       st.lists(exprs, min_size=1, max_size=2))
def test_positional_after_keyword_is_reported_at_the_argument(kw, args):
    options = "".join(f"{k}={format_value(v)}, " for k, v in kw.items())
    first, *rest = (format_expr(a) for a in args)
    text = f"synth A\ny = f({options}{first}" + "".join(", " + a for a in rest) + ")\n"
    err = parse_or_error(text, file="p.synth")
    assert isinstance(err, SynthError) and err.code == "S004", err
    check_error_span(err, text)
    assert err.span.file == "p.synth"
    assert text[err.span.start:err.span.end] == first


@settings(max_examples=60, **SETTINGS)
@given(st.sampled_from(["call", "stage", "source", "train", "optimize"]),
       st.dictionaries(names, _SIMPLE, min_size=1, max_size=3), st.data())
def test_duplicate_keyword_is_reported_at_the_repeat(where, kw, data):
    dup = data.draw(st.sampled_from(sorted(kw)))
    value = data.draw(_SIMPLE)
    items = [f"{k}={format_value(v)}" for k, v in kw.items()]
    repeat = f"{dup}={format_value(value)}"
    args = ", ".join(items + [repeat])
    text = "synth A\n" + {"call": f"y = f(x, {args})",
                           "stage": f"y = x |> g.h({args})",
                           "source": f'source s = timm("m", {args})',
                           "train": f"train a.*, b with {args}",
                           "optimize": f"optimize *.bias with {args}"}[where] + "\n"
    err = parse_or_error(text, file="d.synth")
    assert isinstance(err, SynthError) and err.code == "S005", err
    check_error_span(err, text)
    assert err.span.file == "d.synth"
    assert text[err.span.start:err.span.end] == repeat


# ---- 3. round trip ------------------------------------------------------------------------


@settings(max_examples=300, **SETTINGS)
@given(specs())
def test_format_then_parse_round_trips(spec):
    text = format_spec(spec)
    parsed = parse_spec(text)
    assert parsed == spec
    assert strict_key(parsed) == strict_key(spec)
    assert format_spec(parsed) == text  # idempotent


@settings(max_examples=200, **SETTINGS)
@given(literals)
def test_literal_values_round_trip(value):
    assert strict_key(_literal_of(format_value(value))) == strict_key(value)


# ---- 4. white space and comments are insignificant ---------------------------------------


@lru_cache(maxsize=1)
def _token_lexer() -> Lark:
    return Lark(grammar_text(), parser="lalr")


def tokens_of(text: str) -> list[tuple[int, int]]:
    """(start, end) of every significant token, lexed in context as the parser does."""
    return [(t.start_pos, t.end_pos)
            for t in _token_lexer().parse_interactive(text).iter_parse()]


_FILLER = st.one_of(
    st.sampled_from([" ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", "\f", " \t\n "]),
    st.text(st.characters(exclude_characters="\n", exclude_categories=["Cs"]), max_size=12)
    .map(lambda c: f"#{c}\n"),  # (no file holds a lone surrogate; parse_spec refuses one)
)


def spaced_text(text: str, data) -> str:
    """`text` with white space and comments drawn from `data` put between random tokens."""
    toks = tokens_of(text)
    # gap i is the text before token i; gap len(toks) is the tail
    bounds = [0] + [end for _, end in toks]
    extra = {}
    for _ in range(data.draw(st.integers(0, 12))):
        gap = data.draw(st.integers(0, len(toks)))
        extra[gap] = extra.get(gap, "") + data.draw(_FILLER)
    pieces = []
    for i, (start, end) in enumerate(toks):
        pieces.append(text[bounds[i]:start] + extra.get(i, "") + text[start:end])
    pieces.append(text[bounds[-1]:] + extra.get(len(toks), ""))
    return "".join(pieces)


@settings(max_examples=200, **SETTINGS)
@given(specs(), st.data())
def test_white_space_and_comments_between_tokens_are_ignored(spec, data):
    spaced = spaced_text(format_spec(spec), data)
    parsed = parse_spec(spaced, file="spaced.synth")
    assert parsed == spec
    assert strict_key(parsed) == strict_key(spec)
    check_node_spans(parsed, file="spaced.synth")


# ---- 5. `synth fmt` keeps meaning and comments, and is idempotent ------------------------


@settings(max_examples=150, **SETTINGS)
@given(specs(), st.data(), st.sampled_from([100, 60, 30]))
def test_formatting_text_keeps_the_spec_and_every_comment(spec, data, width):
    spaced = spaced_text(format_spec(spec), data)
    out = format_text(spaced, width=width)  # checks meaning and comments itself, then:
    assert parse_spec(out) == spec
    assert [c.text for c in comments_of(out)] == [c.text for c in comments_of(spaced)]
    assert format_text(out, width=width) == out


# ---- known bugs ---------------------------------------------------------------------------


def _nested(kind: str, depth: int) -> str:
    return {"call": "synth A y = " + "f(" * depth + "x" + ")" * depth,
            "pipe": "synth A y = x" + " |> g" * depth,
            "list": "synth A y = f(k=" + "[" * depth + "]" * depth + ")"}[kind]


@settings(max_examples=20, **SETTINGS)
@given(st.sampled_from(["call", "pipe", "list"]), st.integers(1, 100))
def test_moderately_nested_input_parses(kind, depth):
    spec = parse_spec(_nested(kind, depth))
    assert parse_spec(format_spec(spec)) == spec


# Not a hypothesis test: hypothesis raises the recursion limit while it runs a test, which
# moves the threshold; plain pytest runs these under Python's default limit (1000).
@pytest.mark.parametrize("kind", ["call", "pipe", "list"])
def test_deeply_nested_input_raises_only_synth_error(kind):
    # 1000 levels: 3 KB (call), 6 KB (pipe), 2 KB (list); under the default recursion limit
    # calls already fail from ~250 levels (763 characters), pipes and lists from ~500.
    with pytest.raises(SynthError) as e:
        parse_spec(_nested(kind, 1000))
    assert e.value.code == "S008"


@settings(max_examples=20, **SETTINGS)
@given(st.sampled_from(["dim", "kwarg"]), st.integers(1, 6000))
@example("dim", 4301)    # 'synth A input x: [' + '9' * 4301 + ']'
@example("kwarg", 4301)  # 'synth A y = f(k=' + '9' * 4301 + ')'
def test_huge_integer_literals_raise_only_synth_error(where, digits):
    number = "9" * digits
    text = (f"synth A input x: [{number}]" if where == "dim"
            else f"synth A y = f(k={number})")
    parse_or_error(text)


_number_texts = st.builds(
    lambda sign, whole, frac, exp: sign + whole + frac + exp,
    st.sampled_from(["", "-", "+"]),
    st.from_regex(r"[0-9]{1,4}", fullmatch=True),
    st.sampled_from(["", ".", ".5", ".25", ".000123"]),
    st.one_of(st.just(""), st.integers(-400, 400).map(lambda e: f"e{e}")),
)


@settings(max_examples=150, **SETTINGS)
@given(_number_texts)
@example("1e999")
@example("-1e400")
def test_parsed_numbers_round_trip(number):
    spec = parse_or_error(f"synth A\ny = f(k={number})\n")
    if isinstance(spec, SynthError):  # beyond ±1e300: refused, never silently inf
        assert spec.code == "S007", spec
        return
    again = parse_or_error(format_spec(spec))
    assert isinstance(again, ast.Spec), again
    assert strict_key(again) == strict_key(spec)


@settings(max_examples=150, **SETTINGS)
@given(near_valid())
@example('synth A\ny = f(k="\\q")\n')            # y = f(k="\q")
@example('synth A\nsource s = timm("\\u12")\n')   # source s = timm("\u12")
def test_error_span_offsets_agree_with_line_column_and_file(text):
    result = parse_or_error(text, file="e.synth")
    if isinstance(result, SynthError):
        norm = text.replace("\r\n", "\n")
        span = result.span
        assert span.file == "e.synth", result
        assert (span.line, span.column) == line_col(norm, span.start), (result, span)
        assert span.end >= span.start


@settings(max_examples=30, **SETTINGS)
@given(st.text(alphabet=st.characters(categories=["Cs"]), min_size=2, max_size=4))
@example("\ud800\udc00")
def test_surrogates_in_text_are_refused(value):
    text = 'synth A\ny = f(k="' + value + '")\n'   # raw surrogates inside the quotes
    result = parse_or_error(text)
    assert isinstance(result, SynthError) and result.code == "S001"
    assert (result.span.line, result.span.column) == (2, 10)
