"""The typed image of a spec's text: frozen pydantic models, one per grammar rule.

Positions live beside the tree, not inside its equality (as sqlglot keeps
``line``/``col`` in ``meta``, not in ``args``): every node has a :class:`Span`,
and every field typed ``Span`` is a position. A :class:`Node` compares (and
hashes) by its other fields only, so two parses of differently spaced text give
equal trees, while a ``Span`` itself compares by value.

>>> from synthdsl.lang.parse import parse_spec
>>> a = parse_spec("synth A input x: [B, 4] y = Linear(x, out=2) output y")
>>> b = parse_spec('''synth A
...   input x : [ B , 4 ]
...   y = Linear( x , out = 2 )
...   output y''')
>>> a == b, a.statements[1].span == b.statements[1].span
(True, False)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel, ConfigDict


@dataclass(slots=True)
class Span:
    """Where a node stands in its file: one-based line and column, end exclusive.

    Compared and hashed by value. A slotted dataclass, not a pydantic model, and
    immutable by convention rather than ``frozen=True``: a spec has about five
    spans per node, and a frozen dataclass costs five times as much to make
    (1.5 µs against 0.3 µs); nothing assigns to a span once the parser made it.
    """

    file: str | None = None
    line: int = 1
    column: int = 1
    end_line: int = 1
    end_column: int = 1
    start: int = 0
    end: int = 0

    def __hash__(self) -> int:
        return hash((self.file, self.line, self.column, self.end_line, self.end_column,
                     self.start, self.end))

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
        }

    def __str__(self) -> str:
        return f"{self.file or '<spec>'}:{self.line}:{self.column}"


NO_SPAN = Span()


class Node(BaseModel):
    """An AST node: frozen, with its span beside its equality (see the module's docstring)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    span: Span = NO_SPAN

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return type(self) is type(other) and all(
            getattr(self, f) == getattr(other, f) for f in _compared_fields(type(self)))

    def __hash__(self) -> int:
        return hash((type(self).__name__,
                     *(getattr(self, f) for f in _compared_fields(type(self)))))


@functools.cache
def _compared_fields(cls: type[Node]) -> tuple[str, ...]:
    """The fields that decide a node's equality: all but its positions (fields of type Span)."""
    return tuple(name for name, field in cls.model_fields.items() if field.annotation is not Span)


# ---- inputs ----------------------------------------------------------------


class FixedDim(Node):
    size: int


class SymbolicDim(Node):
    name: str


class BoundedDim(SymbolicDim):
    """`T<=512`: a symbolic dimension with a largest size (a text model's positions)."""

    max: int


Dim = Union[FixedDim, BoundedDim, SymbolicDim]


#: The element types an input may declare; the first is the default.
DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "bool")


class InputDecl(Node):
    name: str
    name_span: Span = NO_SPAN
    shape: tuple[Dim, ...]
    dtype: str = "float32"         #: one of DTYPES


# ---- literal values and keyword arguments ----------------------------------


class KwArg(Node):
    """`name=value`; a value is a literal (str, int, float, bool, None or a tuple of them)
    or, in a call, a :class:`Ref` to a named value: a keyword data input
    (`t(tokens, attention_mask=mask)`)."""

    name: str
    value: Any
    value_span: Span = NO_SPAN

    @property
    def is_data(self) -> bool:
        """Whether the value names a value of the spec rather than being a literal."""
        return isinstance(self.value, Ref)


class SourceDecl(Node):
    """`source NAME = CONSTRUCTOR("target", k=v, ...)`."""

    name: str
    name_span: Span = NO_SPAN
    constructor: str
    constructor_span: Span = NO_SPAN
    target: str
    target_span: Span = NO_SPAN
    kwargs: tuple[KwArg, ...] = ()

    def kwarg(self, name: str) -> KwArg | None:
        return next((k for k in self.kwargs if k.name == name), None)


# ---- expressions -----------------------------------------------------------


class Ref(Node):
    """A use of a named value (an input or an assignment)."""

    name: str


class Index(Node):
    """`[start:stop]` (either may be missing) or `[item]` after a callee; ints may be negative."""

    start: int | None = None
    stop: int | None = None
    item: bool = False


class Call(Node):
    """`a.b.c(args, k=v)`: a part of a source, a layer or an operation."""

    callee: tuple[str, ...]
    callee_span: Span = NO_SPAN
    index: Index | None = None
    args: tuple["Expr", ...] = ()
    kwargs: tuple[KwArg, ...] = ()


class Stage(Node):
    """The right side of `|>`: a callee with keyword arguments only."""

    callee: tuple[str, ...]
    callee_span: Span = NO_SPAN
    index: Index | None = None
    kwargs: tuple[KwArg, ...] = ()


class Pipe(Node):
    """`value |> stage`: the stage called with `value` as its first argument."""

    value: "Expr"
    stage: Stage


Expr = Union[Ref, Call, Pipe]


class Assign(Node):
    """`name = value`, or `a, b = value` for a call that gives several values."""

    name: str
    name_span: Span = NO_SPAN
    value: Expr
    more: tuple[Ref, ...] = ()

    @property
    def targets(self) -> tuple[Ref, ...]:
        return (Ref(name=self.name, span=self.name_span), *self.more)


# ---- training sets and outputs --------------------------------------------


class Pattern(Node):
    text: str


class FreezeStmt(Node):
    patterns: tuple[Pattern, ...]


class TrainStmt(Node):
    patterns: tuple[Pattern, ...]
    options: tuple[KwArg, ...] = ()


class OptimizeStmt(Node):
    """`optimize PATTERNS with k=v`: optimiser options (``lr_mult``, ``weight_decay``) for
    the parameters the patterns name, leaving frozen ones frozen."""

    patterns: tuple[Pattern, ...]
    options: tuple[KwArg, ...] = ()


class PolicyStmt(Node):
    """`policy NAME = value`: a named, documented behaviour of the compiled module."""

    name: str
    name_span: Span = NO_SPAN
    value: Any
    value_span: Span = NO_SPAN


class AdaptStmt(Node):
    """`adapt PATTERNS with METHOD(k=v)`: parameter-efficient fine-tuning (lora, bias)."""

    patterns: tuple[Pattern, ...]
    method: str
    method_span: Span = NO_SPAN
    options: tuple[KwArg, ...] = ()


class InheritStmt(Node):
    """`inherit TARGET from DONOR with k=v`: initialise TARGET's tensors from DONOR's.

    DONOR is a module of a source (`donor`), or a checkpoint file (`constructor`
    `checkpoint`, `file`)."""

    target: tuple[str, ...]
    target_span: Span = NO_SPAN
    donor: tuple[str, ...] = ()
    constructor: str | None = None
    file: str | None = None
    donor_span: Span = NO_SPAN
    options: tuple[KwArg, ...] = ()


class LossStmt(Node):
    """`loss KIND(values, k=v)`: a term of the training objective."""

    kind: str
    kind_span: Span = NO_SPAN
    args: tuple["Expr", ...] = ()
    options: tuple[KwArg, ...] = ()


class RecipeStmt(Node):
    """`recipe k=v, ...`: how `synth train` trains by default."""

    options: tuple[KwArg, ...]


class OutputStmt(Node):
    names: tuple[Ref, ...]


Statement = Union[InputDecl, SourceDecl, Assign, FreezeStmt, TrainStmt, OptimizeStmt, PolicyStmt,
                  AdaptStmt, InheritStmt, LossStmt, RecipeStmt, OutputStmt]


class Spec(Node):
    """A whole spec: its name and its statements, in the order written."""

    name: str
    name_span: Span = NO_SPAN
    statements: tuple[Statement, ...] = ()
    file: str | None = None
    text: str = ""

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Spec) and self.name == other.name
                and self.statements == other.statements)

    def __hash__(self) -> int:
        return hash((self.name, self.statements))

    def of_type(self, cls: type) -> list:
        return [s for s in self.statements if isinstance(s, cls)]


for _cls in (Call, Pipe, Assign, LossStmt, Spec):
    _cls.model_rebuild()
