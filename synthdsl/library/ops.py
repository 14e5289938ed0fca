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

from synthdsl.lang.errors import fmt_shape as _fmt
from synthdsl.library.layers import MAX_SCALE, MAX_SIZE, Option, out_of_range

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


def multiply(*xs: torch.Tensor) -> torch.Tensor:
    """Elementwise product of tensors of the same shape (e.g. a gate times features)."""
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def maximum(*xs: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum of tensors of the same shape."""
    out = xs[0]
    for x in xs[1:]:
        out = torch.maximum(out, x)
    return out


def stack(*xs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Stack tensors of the same shape along a new dimension."""
    return torch.stack(xs, dim=dim)


def reshape(x: torch.Tensor, shape: tuple = ()) -> torch.Tensor:
    """Reshape every dimension after the batch; one size may be -1."""
    return x.reshape(x.shape[0], *shape)


def select(x: torch.Tensor, dim: int = 1, index: int = 0) -> torch.Tensor:
    """Take one index along a dimension, dropping it (the class token: dim=1, index=0)."""
    return x.select(dim, index)


def split(x: torch.Tensor, sizes: tuple = (), dim: int = 1) -> tuple[torch.Tensor, ...]:
    """Cut `x` along `dim` into pieces of the given sizes: one value per piece."""
    return tuple(torch.split(x, list(sizes), dim=dim))


def resize(x: torch.Tensor, size: tuple | int | None = None, scale: float | None = None,
           mode: str = "bilinear") -> torch.Tensor:
    """Resize the spatial dimensions (to `size`, or by `scale`)."""
    if isinstance(size, int):
        size = (size,) * (x.dim() - 2)
    align = False if mode in ("linear", "bilinear", "bicubic", "trilinear") else None
    return torch.nn.functional.interpolate(x, size=size, scale_factor=scale, mode=mode,
                                           align_corners=align)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions of a sequence that the mask keeps: [B, T, C] with a [B, T]
    bool mask -> [B, C]. A row that keeps no position gives zeros."""
    keep = mask.to(x.dtype).unsqueeze(-1)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1)


def _check_masked_mean(shapes, kwargs, names) -> str | None:
    x, mask = shapes
    if len(x) != 3:
        return f"masked_mean takes a sequence [B, T, C] first; {names[0]} is {_fmt(x)}"
    if tuple(mask) != tuple(x[:2]):
        return (f"masked_mean needs a mask [B, T] of the sequence's first two sizes: "
                f"{names[0]} is {_fmt(x)}, {names[1]} is {_fmt(mask)}")
    return None


def _dtypes_masked_mean(dtypes, names) -> str | None:
    if not dtypes[0].startswith(("float", "bfloat")):
        return f"masked_mean averages a floating-point sequence: {names[0]} is {dtypes[0]}"
    if dtypes[1] != "bool":
        return f"masked_mean takes a bool mask: {names[1]} is {dtypes[1]}"
    return None


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


def _check_stack(shapes, kwargs, names) -> str | None:
    if msg := _check_same_shape("stack")(shapes, kwargs, names):
        return msg
    rank, dim = len(shapes[0]) + 1, kwargs["dim"]
    if not -rank <= dim < rank:
        return f"stack dim={dim} is out of range for a result of rank {rank}"
    return None


def _check_reshape(shapes, kwargs, names) -> str | None:
    (shape,), target = shapes, kwargs["shape"]
    if not target or not all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1)
                             for d in target) or list(target).count(-1) > 1:
        return ("reshape shape= takes the sizes after the batch, positive, with at most one "
                f"-1; found {list(target)}")
    have = 1
    for d in shape[1:]:
        if not isinstance(d, int):
            return f"reshape needs fixed sizes after the batch; {names[0]} is {_fmt(shape)}"
        have *= d
    want = 1
    for d in target:
        want *= d if d != -1 else 1
    if (-1 in target and have % want) or (-1 not in target and have != want):
        return (f"reshape cannot make {_fmt(['B', *target])} from {names[0]} "
                f"{_fmt(shape)}: {have} values per sample")
    return None


def _check_select(shapes, kwargs, names) -> str | None:
    (shape,) = shapes
    dim, index = kwargs["dim"], kwargs["index"]
    if not -len(shape) <= dim < len(shape):
        return f"select dim={dim} is out of range for {names[0]} {_fmt(shape)}"
    size = shape[dim]
    if isinstance(size, int) and not -size <= index < size:
        return f"select index={index} is out of range: dim {dim} of {names[0]} has size {size}"
    return None


def _check_split(shapes, kwargs, names) -> str | None:
    (shape,), dim = shapes, kwargs["dim"]
    if not -len(shape) <= dim < len(shape):
        return f"split dim={dim} is out of range for {names[0]} {_fmt(shape)}"
    if not isinstance(shape[dim], int):
        return (f"split needs a fixed size along dim {dim}; {names[0]} is {_fmt(shape)}")
    return None


def _check_cls_token(shapes, kwargs, names) -> str | None:
    (shape,) = shapes
    if len(shape) != 3:
        return f"cls_token takes a sequence [B, T, D]; {names[0]} is {_fmt(shape)}"
    return None


def _check_resize(shapes, kwargs, names) -> str | None:
    (shape,) = shapes
    if len(shape) < 3:
        return f"resize needs spatial dimensions; {names[0]} is {_fmt(shape)}"
    if (kwargs["size"] is None) == (kwargs["scale"] is None):
        return "resize takes size= or scale=, one of them"
    size = kwargs["size"]
    if isinstance(size, tuple) and len(size) != len(shape) - 2:
        return (f"resize size={list(size)} has {len(size)} sizes but {names[0]} "
                f"{_fmt(shape)} has {len(shape) - 2} spatial dimensions")
    if kwargs["mode"] not in ("nearest", "bilinear", "bicubic", "area", "nearest-exact"):
        return f"resize mode={kwargs['mode']!r} is not one of nearest, bilinear, bicubic, area"
    return None


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
    #: Why the inputs' element types (``float32``, ``bool``) do not fit, given how the spec
    #: spells each input; None: any types that the function runs on.
    dtype_rule: Callable[[Sequence[str], Sequence[str]], str | None] | None = None

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def check_options(self, kwargs: dict[str, Any],
                      shapes: Sequence[Shape] | None = None) -> tuple[str, str] | None:
        """(why, which option) when an option is unknown, of the wrong type or (given the
        input shapes) outside its range. A dimension or index that does not fit the inputs
        (concat, stack, select) is the shape rule's to report, as a mismatch of the inputs."""
        for name, value in kwargs.items():
            opt = self.option(name)
            if opt is None:
                known = ", ".join(o.name for o in self.options) or "none"
                return f"{self.name} has no option '{name}' (its options: {known})", name
            if not opt.accepts(value):
                return (f"{self.name} option '{name}' expects {opt.type_name()}, "
                        f"found {value!r}", name)
        missing = [o.name for o in self.options if o.required and o.name not in kwargs]
        if missing:
            return f"{self.name} needs option '{missing[0]}' ({self.option(missing[0]).type_name()})", None
        if shapes:
            options = {**self.defaults(), **kwargs}
            for name, value in kwargs.items():
                if bad := out_of_range(self.option(name), value, shapes, options):
                    return f"{self.name} {bad}", name
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


def _reshape_shape(value, shapes, options):
    if not value or not all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1)
                            for d in value) or list(value).count(-1) > 1:
        return "the sizes after the batch: positive whole numbers, with at most one -1"
    if any(d > MAX_SIZE for d in value):
        return f"the sizes after the batch: whole numbers up to 2^48 = {MAX_SIZE}"
    return None


def _split_sizes(value, shapes, options):
    if len(value) < 2 or not all(isinstance(d, int) and not isinstance(d, bool)
                                 and 1 <= d <= MAX_SIZE for d in value):
        return "a list of two or more sizes (whole numbers >= 1)"
    shape, dim = shapes[0], options["dim"]
    if -len(shape) <= dim < len(shape) and isinstance(shape[dim], int) \
            and sum(value) != shape[dim]:
        return f"sizes adding up to {shape[dim]} (dim {dim} of the input), not {sum(value)}"
    return None


def _resize_size(value, shapes, options):
    if value is None:
        return None
    spatial = len(shapes[0]) - 2
    items = value if isinstance(value, tuple) else (value,)
    if (isinstance(value, tuple) and spatial > 0 and len(value) != spatial) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in items):
        return (f"a size >= 1, or a list of {max(spatial, 1)} of them "
                "(one per spatial dimension)")
    if any(d > MAX_SIZE for d in items):
        return f"sizes up to 2^48 = {MAX_SIZE}"
    return None



def _resize_scale(value, shapes, options):
    if value is None or 0 < value <= MAX_SCALE:
        return None
    return "a number > 0" if value <= 0 else f"a number from 0 to {MAX_SCALE:g} (not 0)"


def _resize_mode(value, shapes, options):
    modes = ("nearest", "bilinear", "bicubic", "area", "nearest-exact")
    if value not in modes:
        return "one of " + ", ".join(f'"{m}"' for m in modes)
    return None


register_op(OpSpec("concat", concat, 2, None, (Option("dim", (int,), 1),), _check_concat,
                   doc="join along a dimension (default 1, the channels)"))
register_op(OpSpec("add", add, 2, None, (), _check_same_shape("add"),
                   doc="elementwise sum"))
register_op(OpSpec("mean", mean, 2, None, (), _check_same_shape("mean"),
                   doc="elementwise mean"))
register_op(OpSpec("multiply", multiply, 2, None, (), _check_same_shape("multiply"),
                   doc="elementwise product"))
register_op(OpSpec("max", maximum, 2, None, (), _check_same_shape("max"),
                   doc="elementwise maximum"))
register_op(OpSpec("stack", stack, 2, None, (Option("dim", (int,), 1),), _check_stack,
                   doc="stack along a new dimension (default 1)"))
register_op(OpSpec("reshape", reshape, 1, 1, (Option("shape", (tuple,), check=_reshape_shape),), _check_reshape,
                   doc="reshape the dimensions after the batch"))
register_op(OpSpec("select", select, 1, 1, (Option("dim", (int,), 1), Option("index", (int,), 0)),
                   _check_select, doc="take one index along a dimension"))
register_op(OpSpec("cls_token", select, 1, 1, (), _check_cls_token,
                   doc="the class token: select(x, dim=1, index=0), [B, T, D] -> [B, D]"))
register_op(OpSpec("split", split, 1, 1,
                   (Option("sizes", (tuple,), check=_split_sizes), Option("dim", (int,), 1)),
                   _check_split, doc="cut along a dimension into pieces: several values"))
register_op(OpSpec("resize", resize, 1, 1,
                   (Option("size", (int, tuple, type(None)), None, check=_resize_size),
                    Option("scale", (float, type(None)), None, check=_resize_scale),
                    Option("mode", (str,), "bilinear", check=_resize_mode)), _check_resize,
                   doc="resize the spatial dimensions"))
register_op(OpSpec("masked_mean", masked_mean, 2, 2, (), _check_masked_mean,
                   doc="mean over the positions a [B, T] bool mask keeps: [B, T, C] -> [B, C]",
                   dtype_rule=_dtypes_masked_mean))
