"""The fixed registry of new layers a spec can create.

A spec names a layer (`Linear(x, out=10)`); it never names a Python path. Each
entry says which options it takes, with their types and defaults, and how the
sizes nobody should have to type (`in_features`, `in_channels`, ...) follow
from the shape that flows in. Extending the registry is an explicit act of
Python code: :func:`register_layer`.

>>> spec = LAYERS["Linear"]
>>> spec.constructor_args([(2, 512)], {"out": 10})
{'in_features': 512, 'out_features': 10, 'bias': True}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from synthdsl.lang.errors import did_you_mean, fmt_shape

Shape = tuple[int, ...]
_REQUIRED = object()


class LayerArgError(ValueError):
    """An option or an input shape a layer cannot take; resolved to a SynthError upstream."""

    def __init__(self, message: str, option: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.option = option
        self.hint = hint


@dataclass(frozen=True)
class Option:
    """One keyword a layer takes in a spec."""

    name: str
    types: tuple[type, ...]
    default: Any = _REQUIRED
    doc: str = ""
    #: The option's valid range: ``check(value, shapes, options)`` says what was expected
    #: (the rest of "expects ..., found ...") when a value of the right type is outside it;
    #: `shapes` are the input shapes, `options` every option's value (defaults included).
    check: Callable[[Any, Sequence[Shape], dict], str | None] | None = field(
        default=None, compare=False)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def type_name(self) -> str:
        names = {bool: "true/false", int: "a whole number", float: "a number", str: "a string",
                 tuple: "a list", type(None): "none"}
        return " or ".join(names.get(t, t.__name__) for t in self.types)

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return bool in self.types
        if isinstance(value, int) and float in self.types:
            return True
        return isinstance(value, self.types)


@dataclass(frozen=True)
class Input:
    """One input of a layer whose inputs play different roles (CrossAttention's query,
    context and mask): its name in messages, the ranks and element type it takes."""

    name: str
    ranks: tuple[int, ...] | None = None
    takes: str = "float"
    optional: bool = False


@dataclass(frozen=True)
class LayerSpec:
    """A registry entry: options, the rank of input it takes, and how to build it."""

    name: str
    build: Callable[..., nn.Module]
    options: tuple[Option, ...] = ()
    infer: Callable[[Shape], dict] = field(default=lambda shape: {})
    ranks: tuple[int, ...] | None = None
    doc: str = ""
    #: Layers joining several inputs (an ensemble) take `many=True`; `infer` then
    #: receives the list of input shapes.
    many: bool = False
    #: The element types it takes: "float" (floating point), "integer" (int64, int32) or "any".
    takes: str = "float"
    #: Options whose default too is checked against the input (GroupNorm's groups=8).
    check_defaults: tuple[str, ...] = ()
    #: Inputs in roles, for a layer taking inputs of different shapes (optional ones last);
    #: `infer` then receives the list of input shapes, and messages name the roles.
    inputs: tuple[Input, ...] = ()
    #: Why inputs in roles do not fit together: ``agree(shapes, shown)``, where `shown`
    #: spells each shape as the spec does (``[B, T, 64]``); None when they fit.
    agree: Callable[[Sequence[Shape], Sequence[tuple]], str | None] | None = None

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def dtype_problem(self, dtypes: Sequence[str]) -> str | None:
        """"expects ..., found ..." when an input's element type is not one it takes."""
        roles = self.inputs or [Input("input", takes=self.takes)] * len(dtypes)
        for role, dt in zip(roles, dtypes):
            it = f"its {role.name}" if self.inputs else "it"
            if role.takes == "float" and not dt.startswith(("float", "bfloat")):
                return f"{self.name} computes in floating point: {it} expects a float32 " \
                       f"(or float16, bfloat16) input, found {dt}"
            if role.takes == "integer" and dt not in ("int64", "int32"):
                return f"{self.name} looks up integer indices: {it} expects an int64 " \
                       f"(or int32) input, found {dt}"
            if role.takes == "bool" and dt != "bool":
                return f"{self.name} takes a bool {role.name} (true = keep): {it} " \
                       f"expects a bool input, found {dt}"
        return None

    def role_problem(self, shapes: Sequence[Shape], shown: Sequence[tuple]) -> str | None:
        """Why inputs in roles are wrong: their count, a role's rank, how they agree."""
        need = sum(not r.optional for r in self.inputs)
        if not need <= len(shapes) <= len(self.inputs):
            names = ", ".join(r.name for r in self.inputs[:need]) + "".join(
                f"[, {r.name}]" for r in self.inputs[need:])
            count = need if need == len(self.inputs) else f"{need} or {len(self.inputs)}"
            return f"{self.name} takes {count} inputs ({names}), found {len(shapes)}"
        for role, shape, spelled in zip(self.inputs, shapes, shown):
            if role.ranks is not None and len(shape) not in role.ranks:
                want = " or ".join(str(r) for r in role.ranks)
                return f"{self.name}'s {role.name} expects rank {want}, found " \
                       f"{fmt_shape(spelled)}"
        return self.agree(shapes, shown) if self.agree else None

    def constructor_args(self, shapes: Sequence[Shape], kwargs: dict[str, Any],
                         shown: Sequence[tuple] | None = None) -> dict:
        """Validate the options and add what the incoming shape implies (`shown`: the
        shapes as the spec spells them, for messages)."""
        several = self.many or bool(self.inputs)
        if self.inputs:
            if msg := self.role_problem(shapes, shown or shapes):
                raise LayerArgError(msg)
        elif self.many:
            if len(shapes) < 2:
                raise LayerArgError(f"{self.name} takes two or more inputs, found {len(shapes)}")
            if any(s != shapes[0] for s in shapes):
                raise LayerArgError(f"{self.name} needs inputs of the same shape, found "
                                    + ", ".join(fmt_shape(s) for s in shapes))
        elif len(shapes) != 1:
            raise LayerArgError(f"{self.name} takes one input, found {len(shapes)}")
        shape = shapes[0]
        if self.ranks is not None and len(shape) not in self.ranks:
            want = " or ".join(str(r) for r in self.ranks)
            raise LayerArgError(f"{self.name} expects an input of rank {want}, "
                                f"found rank {len(shape)}")
        for name in kwargs:
            if self.option(name) is None:
                known = ", ".join(o.name for o in self.options) or "none"
                raise LayerArgError(f"{self.name} has no option '{name}' (its options: {known})",
                                    option=name,
                                    hint=did_you_mean(name, [o.name for o in self.options]))
        args = {}
        for opt in self.options:
            if opt.name in kwargs:
                value = kwargs[opt.name]
                if not opt.accepts(value):
                    raise LayerArgError(f"{self.name} option '{opt.name}' expects "
                                        f"{opt.type_name()}, found {value!r}", option=opt.name)
                if isinstance(value, int) and not isinstance(value, bool) and int not in opt.types:
                    value = float(value)  # `p=1` where a number is wanted
                args[opt.name] = value
            elif opt.required:
                raise LayerArgError(f"{self.name} needs option '{opt.name}' "
                                    f"({opt.type_name()})",
                                    hint=f"add {opt.name}=... to the call")
            else:
                args[opt.name] = opt.default
        for opt in self.options:
            if opt.name in kwargs and (bad := out_of_range(opt, kwargs[opt.name], shapes, args)):
                raise LayerArgError(f"{self.name} {bad}", option=opt.name)
            if opt.name in self.check_defaults and opt.name not in kwargs and (
                    bad := out_of_range(opt, opt.default, shapes, args)):
                raise LayerArgError(f"{self.name} {bad} (its default)", option=opt.name,
                                    hint=f"write {opt.name}=... to the call")
        return _rename(self, {**self.infer(list(shapes) if several else shape), **args})


def show_value(value: Any) -> str:
    """A value as a spec writes it: lists in brackets, strings in double quotes."""
    if isinstance(value, tuple):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else repr(value)


def out_of_range(opt: Option, value: Any, shapes: Sequence[Shape], options: dict) -> str | None:
    """"option 'x' expects ..., found ..." when `value` is outside the option's range."""
    if opt.check is None:
        return None
    expected = opt.check(value, shapes, options)
    if expected is None:
        return None
    return f"option '{opt.name}' expects {expected}, found {show_value(value)}"


# -- option ranges ------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: The largest factor a resize or an upsampling scales by.
MAX_SCALE = 2.0 ** 16

#: The largest whole number a size option takes (2^48): beyond it no tensor could be
#: made, and far beyond it a number does not fit torch's 64-bit sizes. Sizes below it
#: that no machine could hold are the budget's to refuse (S305).
MAX_SIZE = 2 ** 48


def _ints(low: int, what: str, count: int | None = None, high: int = MAX_SIZE):
    """A whole number in [low, high], or (with `count`) a list of `count` of them."""
    if count is None:
        expected = f"{what} (a whole number >= {low})"
        too_big = f"{what} (a whole number from {low} to 2^48 = {high})"
    else:
        expected = f"{what}: a whole number >= {low}, or a list of {count} of them"
        too_big = f"{what}: a whole number from {low} to 2^48 = {high}, or a list of " \
            f"{count} of them"

    def check(value, shapes, options):
        if value is None:
            return None
        items = value if isinstance(value, tuple) else (value,)
        if isinstance(value, tuple) and (count is None or len(value) != count):
            return expected
        if not all(_is_int(v) and v >= low for v in items):
            return expected
        return None if all(v <= high for v in items) else too_big
    return check


def _number(low: float, high: float | None = None, low_open: bool = False):
    """A number in [low, high] (or (low, ...) with `low_open`)."""
    def check(value, shapes, options):
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
        if ok:
            return None
        if high is None:
            return f"a number {'>' if low_open else '>='} {low:g}"
        return f"a number from {low:g} to {high:g}"
    return check


def _choice(*names: str):
    def check(value, shapes, options):
        return None if value in names else "one of " + ", ".join(f'"{n}"' for n in names)
    return check


def _dim(value, shapes, options):
    """A dimension of the input."""
    rank = len(shapes[0])
    return None if -rank <= value < rank else \
        f"a dimension from {-rank} to {rank - 1} (the input has rank {rank})"


def _flatten_end(value, shapes, options):
    if msg := _dim(value, shapes, options):
        return msg
    rank, start = len(shapes[0]), options["start"]
    if -rank <= start < rank and value % rank < start % rank:
        return f"a dimension at or after start={start}"
    return None


def _pairs(value) -> tuple:
    return value if isinstance(value, tuple) else (value, value)


def _conv_padding(value, shapes, options):
    if isinstance(value, str):
        if value not in ("same", "valid"):
            return '"same", "valid", a whole number >= 0, or a list of 2 of them'
        stride = options["stride"]
        if value == "same" and any(s != 1 for s in _pairs(stride)):
            return f'a number or "valid" with stride={show_value(stride)} ("same" needs stride 1)'
        return None
    return _ints(0, "the padding", 2)(value, shapes, options)


def _conv_groups(value, shapes, options):
    if value < 1:
        return "a whole number >= 1"
    if value > MAX_SIZE:
        return f"a whole number from 1 to 2^48 = {MAX_SIZE}"
    channels, out = shapes[0][1], options["out"]
    if _is_int(channels) and channels % value:
        return f"a divisor of the input's {channels} channels"
    if _is_int(out) and out >= 1 and out % value:
        return f"a divisor of out={out}"
    return None


def _pool_padding(value, shapes, options):
    if msg := _ints(0, "the padding", 2)(value, shapes, options):
        return msg
    kernel = options["kernel"]
    kernels = _pairs(kernel)
    if all(_is_int(k) for k in kernels) and any(2 * p > k for p, k in zip(_pairs(value), kernels)):
        return f"at most half the kernel ({show_value(kernel)})"
    return None


#: Spec option names that differ from the torch constructor's.
_TORCH_NAMES = {
    "Linear": {"out": "out_features"},
    "Conv2d": {"out": "out_channels", "kernel": "kernel_size"},
    "MaxPool2d": {"kernel": "kernel_size"},
    "AvgPool2d": {"kernel": "kernel_size"},
    "Flatten": {"start": "start_dim", "end": "end_dim"},
}


def _rename(spec: LayerSpec, args: dict) -> dict:
    names = _TORCH_NAMES.get(spec.name, {})
    return {names.get(k, k): v for k, v in args.items()}


class GlobalPool(nn.Module):
    """Average (or max) over every dimension after the channel dimension."""

    def __init__(self, mode: str = "avg", flatten: bool = True) -> None:
        super().__init__()
        self.mode = mode
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        if self.mode == "avg":
            y = x.mean(dim=dims, keepdim=not self.flatten)
        else:
            y = x.amax(dim=dims, keepdim=not self.flatten)
        return y

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, flatten={self.flatten}"


class Ensemble(nn.Module):
    """Combine the outputs of several members: mean, weighted mean, or majority vote.

    ``weighted`` normalises its weights to sum to one; with ``learnable=True`` they are
    parameters (a softmax over logits, initialised to the given weights). ``vote`` counts,
    per class, the members whose arg-max it is: its arg-max is the majority class (ties go
    to the lowest index).
    """

    def __init__(self, n: int, mode: str = "mean", weights: tuple | None = None,
                 learnable: bool = False) -> None:
        super().__init__()
        if mode not in ("mean", "weighted", "vote"):
            raise ValueError(f"mode must be mean, weighted or vote, not {mode!r}")
        self.n, self.mode, self.learnable = n, mode, learnable
        if mode == "weighted":
            values = [float(v) for v in (weights if weights is not None else [1.0] * n)]
            if len(values) != n or any(v <= 0 for v in values):
                raise ValueError(f"weights must be {n} positive numbers, one per member")
            w = torch.tensor([v / sum(values) for v in values])
            if learnable:
                self.logits = nn.Parameter(w.log())
            else:
                self.register_buffer("weights", w)
        elif weights is not None or learnable:
            raise ValueError("weights and learnable go with mode=\"weighted\"")

    def member_weights(self) -> torch.Tensor:
        return self.logits.softmax(0) if self.learnable else self.weights

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(xs)
        if self.mode == "mean":
            return stacked.mean(0)
        if self.mode == "weighted":
            w = self.member_weights().to(stacked.dtype)
            return (stacked * w.view(-1, *([1] * (stacked.dim() - 1)))).sum(0)
        votes = torch.nn.functional.one_hot(stacked.argmax(-1), stacked.shape[-1])
        return votes.sum(0).to(stacked.dtype)

    def extra_repr(self) -> str:
        return f"n={self.n}, mode={self.mode!r}, learnable={self.learnable}"


#: Normalisation layers that keep running statistics (a frozen trunk must not update them).
NORM_WITH_STATS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def is_norm(m: nn.Module) -> bool:
    """A normalisation layer: torch's, or one of timm's (BatchNormAct2d, LayerNorm2d, ...)."""
    return isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                          nn.LocalResponseNorm)) or type(m).__name__.endswith(("Norm", "Norm2d",
                                                                                "NormAct2d"))


LAYERS: dict[str, LayerSpec] = {}


def register_layer(spec: LayerSpec) -> LayerSpec:
    """Add a layer to the registry (an explicit act of the user's Python code)."""
    if spec.name in LAYERS:
        raise ValueError(f"a layer named '{spec.name}' is already registered")
    LAYERS[spec.name] = spec
    return spec


def _o(name: str, types, default=_REQUIRED, doc: str = "", check=None) -> Option:
    return Option(name, types if isinstance(types, tuple) else (types,), default, doc, check)


_INT_OR_PAIR = (int, tuple)

_SIZE = _ints(1, "a size")
_EPS = _number(0, low_open=True)
_MOMENTUM = _number(0, 1)

register_layer(LayerSpec(
    "Linear", nn.Linear,
    (_o("out", int, doc="output features", check=_SIZE), _o("bias", bool, True)),
    infer=lambda s: {"in_features": s[-1]}, ranks=(2, 3, 4),
    doc="affine map over the last dimension; in_features from the input"))
register_layer(LayerSpec(
    "Conv2d", nn.Conv2d,
    (_o("out", int, doc="output channels", check=_SIZE),
     _o("kernel", _INT_OR_PAIR, 3, check=_ints(1, "the kernel size", 2)),
     _o("stride", _INT_OR_PAIR, 1, check=_ints(1, "the stride", 2)),
     _o("padding", (int, tuple, str), 0, check=_conv_padding),
     _o("dilation", _INT_OR_PAIR, 1, check=_ints(1, "the dilation", 2)),
     _o("groups", int, 1, check=_conv_groups), _o("bias", bool, True)),
    infer=lambda s: {"in_channels": s[1]}, ranks=(4,),
    doc="2-D convolution; in_channels from the input"))
register_layer(LayerSpec(
    "BatchNorm2d", nn.BatchNorm2d,
    (_o("eps", float, 1e-5, check=_EPS), _o("momentum", float, 0.1, check=_MOMENTUM)),
    infer=lambda s: {"num_features": s[1]}, ranks=(4,),
    doc="batch normalisation over channels; num_features from the input"))
register_layer(LayerSpec(
    "BatchNorm1d", nn.BatchNorm1d,
    (_o("eps", float, 1e-5, check=_EPS), _o("momentum", float, 0.1, check=_MOMENTUM)),
    infer=lambda s: {"num_features": s[1]}, ranks=(2, 3),
    doc="batch normalisation over features; num_features from the input"))
register_layer(LayerSpec(
    "LayerNorm", nn.LayerNorm, (_o("eps", float, 1e-5, check=_EPS),),
    infer=lambda s: {"normalized_shape": s[-1]}, ranks=None,
    doc="layer normalisation over the last dimension"))
register_layer(LayerSpec("ReLU", nn.ReLU, doc="max(x, 0)"))
register_layer(LayerSpec("GELU", nn.GELU,
                         (_o("approximate", str, "none", check=_choice("none", "tanh")),),
                         doc="GELU"))
register_layer(LayerSpec("SiLU", nn.SiLU, doc="x * sigmoid(x)"))
register_layer(LayerSpec("Sigmoid", nn.Sigmoid, doc="logistic function"))
register_layer(LayerSpec("Tanh", nn.Tanh, doc="hyperbolic tangent"))
register_layer(LayerSpec("Softmax", nn.Softmax, (_o("dim", int, -1, check=_dim),),
                         doc="softmax"))
register_layer(LayerSpec("Dropout", nn.Dropout, (_o("p", float, 0.5, check=_number(0, 1)),),
                         doc="dropout"))
register_layer(LayerSpec("Identity", nn.Identity, doc="passes its input through",
                         takes="any"))
register_layer(LayerSpec(
    "Flatten", nn.Flatten,
    (_o("start", int, 1, check=_dim), _o("end", int, -1, check=_flatten_end)),
    doc="flatten dimensions start..end into one", takes="any"))
register_layer(LayerSpec(
    "GlobalAvgPool", lambda flatten: GlobalPool("avg", flatten), (_o("flatten", bool, True),),
    ranks=(3, 4, 5), doc="mean over every dimension after channels: [B, C, H, W] → [B, C]"))
register_layer(LayerSpec(
    "GlobalMaxPool", lambda flatten: GlobalPool("max", flatten), (_o("flatten", bool, True),),
    ranks=(3, 4, 5), doc="max over every dimension after channels: [B, C, H, W] → [B, C]"))
for _pool, _module in (("MaxPool2d", nn.MaxPool2d), ("AvgPool2d", nn.AvgPool2d)):
    register_layer(LayerSpec(
        _pool, _module,
        (_o("kernel", _INT_OR_PAIR, 2, check=_ints(1, "the kernel size", 2)),
         _o("stride", (int, tuple, type(None)), None, check=_ints(1, "the stride", 2)),
         _o("padding", _INT_OR_PAIR, 0, check=_pool_padding)), ranks=(4,),
        doc=f"2-D {'max' if _pool.startswith('Max') else 'average'} pooling"))

from synthdsl.library import fusion as _fusion  # noqa: E402,F401 - registers its layers
from synthdsl.library import sequence as _sequence  # noqa: E402,F401 - registers its layers
