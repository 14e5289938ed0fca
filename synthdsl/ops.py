"""Operations that join data: the functions a spec can call in lower case.

Each operation is a plain function that becomes one `call_function` node of the
compiled torch.fx graph, plus a shape rule that explains a mismatch in the
spec's terms before anything runs.

>>> import torch
>>> OPS["concat"].fn(torch.ones(2, 3), torch.ones(2, 5), dim=1).shape
torch.Size([2, 8])
>>> OPS["concat"].check([(2, 3), (2, 5, 1)], {"dim": 1})
'concat needs inputs of equal rank, found ranks 2, 3'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from synthdsl.layers import Option

Shape = tuple[int, ...]


def concat(*xs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Join tensors along `dim`; every other dimension must agree."""
    return torch.cat(xs, dim=dim)


def add(*xs: torch.Tensor) -> torch.Tensor:
    """Elementwise sum of tensors of the same shape."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def mean(*xs: torch.Tensor) -> torch.Tensor:
    """Elementwise mean of tensors of the same shape."""
    return add(*xs) / len(xs)


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _same_rank(name: str, shapes: Sequence[Shape], names: Sequence[str]) -> str | None:
    ranks = sorted({len(s) for s in shapes})
    if len(ranks) > 1:
        return f"{name} needs inputs of equal rank, found ranks " + ", ".join(map(str, ranks))
    return None


def _check_concat(shapes: Sequence[Shape], kwargs: dict, names: Sequence[str]) -> str | None:
    if msg := _same_rank("concat", shapes, names):
        return msg
    rank = len(shapes[0])
    dim = kwargs.get("dim", 1)
    if not -rank <= dim < rank:
        return f"concat dim={dim} is out of range for inputs of rank {rank}"
    d = dim % rank
    first = shapes[0]
    for i, s in enumerate(shapes[1:], start=1):
        other = [k for k in range(rank) if k != d and s[k] != first[k]]
        if other:
            return (f"concat along dim {dim} needs equal sizes in every other dimension: "
                    f"{names[0]} is {_fmt(first)}, {names[i]} is {_fmt(s)} "
                    f"(they differ in dim {other[0]})")
    return None


def _check_same_shape(name: str) -> Callable[[Sequence[Shape], dict, Sequence[str]],
                                               str | None]:
    def check(shapes: Sequence[Shape], kwargs: dict, names: Sequence[str]) -> str | None:
        first = shapes[0]
        for i, s in enumerate(shapes[1:], start=1):
            if s != first:
                return (f"{name} needs inputs of the same shape: {names[0]} is {_fmt(first)}, "
                        f"{names[i]} is {_fmt(s)}")
        return None
    return check


@dataclass(frozen=True)
class OpSpec:
    """A registry entry: the function, how many inputs, options and a shape rule."""

    name: str
    fn: Callable[..., torch.Tensor]
    min_inputs: int = 1
    max_inputs: int | None = None
    options: tuple[Option, ...] = ()
    shape_rule: Callable[[Sequence[Shape], dict, Sequence[str]], str | None] | None = None
    doc: str = ""

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def check_options(self, kwargs: dict[str, Any]) -> tuple[str, str] | None:
        """(why, which option) when an option is unknown or of the wrong type."""
        for name, value in kwargs.items():
            opt = self.option(name)
            if opt is None:
                known = ", ".join(o.name for o in self.options) or "none"
                return f"{self.name} has no option '{name}' (its options: {known})", name
            if not opt.accepts(value):
                return (f"{self.name} option '{name}' expects {opt.type_name()}, "
                        f"found {value!r}", name)
        return None

    def check(self, shapes: Sequence[Shape], kwargs: dict[str, Any],
              names: Sequence[str] | None = None) -> str | None:
        """Why these inputs are wrong for this operation, or None when they are fine.

        `names` says how the spec spells each input (default "input 1", "input 2", ...)."""
        names = names or [f"input {i + 1}" for i in range(len(shapes))]
        n = len(shapes)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"{self.min_inputs}" if self.max_inputs == self.min_inputs
                    else f"at least {self.min_inputs}" if self.max_inputs is None
                    else f"{self.min_inputs} to {self.max_inputs}")
            return f"{self.name} takes {want} inputs, found {n}"
        if self.shape_rule is None:
            return None
        return self.shape_rule(shapes, {**self.defaults(), **kwargs}, names)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options if not o.required}


OPS: dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    """Add an operation to the registry (an explicit act of the user's Python code)."""
    if spec.name in OPS:
        raise ValueError(f"an operation named '{spec.name}' is already registered")
    OPS[spec.name] = spec
    return spec


register_op(OpSpec("concat", concat, 2, None, (Option("dim", (int,), 1),), _check_concat,
                   doc="join along a dimension (default 1, the channels)"))
register_op(OpSpec("add", add, 2, None, (), _check_same_shape("add"),
                   doc="elementwise sum"))
register_op(OpSpec("mean", mean, 2, None, (), _check_same_shape("mean"),
                   doc="elementwise mean"))
