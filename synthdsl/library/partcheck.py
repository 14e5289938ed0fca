"""What a part asks of its source, checked before anything runs or is traced.

:func:`part_problem` finds, from the source's model alone, the mistakes a part node
can make in naming what it takes: a submodule that does not exist (with the closest
submodules and methods as suggestions), a method option the method does not take or
a value of the wrong type for it (read from the method's own signature), and an item
or slice of a sequential module outside its children. It is cheap: nothing runs and
nothing is traced. The check reports these at the place they are written
(``checks/sources.py``); :func:`synthdsl.library.parts.make_plan` raises them too.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Sequence

from torch import nn

from synthdsl.lang.errors import did_you_mean

#: Methods of a source model that a spec may call as parts.
PART_METHODS = ("forward_features", "forward_head")


class PartError(ValueError):
    """What the spec asked of a source that the source does not have. `option` names the
    option it is about; `at` says where it is written: ``"option"``, ``"index"`` (the
    slice or item) or ``"callee"``; `code` is its diagnostic code."""

    def __init__(self, message: str, hint: str | None = None, option: str | None = None,
                 at: str | None = None, code: str | None = None):
        super().__init__(message)
        self.hint = hint
        self.option = option
        self.at = at or ("option" if option else "callee")
        self.code = code or ("S402" if option and "no option" in message else "S202")


def submodule(model: nn.Module, source: str, path: Sequence[str]) -> nn.Module:
    """The module at `path` of `model`; a step that does not exist is a PartError with the
    closest names (submodules, and at the top the methods a part may call)."""
    module = model
    for i, step in enumerate(path):
        child = module._modules.get(step)
        if child is None:
            where = ".".join((source, *path[:i]))
            names = list(module._modules)
            methods = [m for m in PART_METHODS if i == 0 and hasattr(module, m)]
            hint = did_you_mean(step, [*names, *methods])
            if hint is None:
                hint = "its submodules: " + ", ".join(names[:12]) + \
                    (" ..." if len(names) > 12 else "")
                if methods:
                    hint += "; its methods: " + ", ".join(methods)
            raise PartError(f"'{where}' has no submodule '{step}'", hint=hint)
        module = child
    return module


# ---- options of a method ----------------------------------------------------------------


def _spoken(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_spoken(a) for a in args))
    if origin in (list, tuple, typing.List, typing.Tuple, Sequence):
        return f"a list of {_spoken(args[0])}" if args else "a list"
    if tp is type(None) or tp is None:
        return "none"
    return {bool: "true or false", int: "a whole number", float: "a number",
            str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _accepts(tp: Any, value: Any) -> bool | None:
    """Whether a literal fits the annotation `tp`; None where the annotation is not one a
    literal can be compared with (a tensor, a class of timm's own)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return None
    if origin in (typing.Union, types.UnionType):
        answers = [_accepts(a, value) for a in args]
        return True if any(answers) else (None if None in answers else False)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, typing.List, typing.Tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, tuple):
            return False
        inner = args[0] if args and args[0] is not Ellipsis else Any
        answers = [_accepts(inner, v) for v in value]
        return False if False in answers else True
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type):
        return isinstance(value, tp) if tp.__module__ == "builtins" else False
    return None


def method_options(owner: nn.Module, method: str) -> tuple[list[inspect.Parameter], int]:
    """The keyword options a method takes, and how many data inputs come before them
    (its positional parameters without a default)."""
    params = list(inspect.signature(getattr(type(owner), method)).parameters.values())[1:]
    inputs = 0
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            inputs += 1
        else:
            break
    options = [p for p in params[inputs:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return options, inputs


def _option_problem(label: str, owner: nn.Module, method: str, options: dict) -> PartError | None:
    known, _ = method_options(owner, method)
    by_name = {p.name: p for p in known}
    try:
        hints = typing.get_type_hints(getattr(type(owner), method))
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: use the defaults
        hints = {}
    for key, value in options.items():
        p = by_name.get(key)
        if p is None:
            return PartError(f"part '{label}' has no option '{key}'", option=key,
                             hint=did_you_mean(key, by_name) or (
                                 f"{method} takes " + ", ".join(f"{n}=" for n in by_name)
                                 if by_name else f"{method} takes no options"))
        tp = hints.get(key, p.annotation)
        ok = _accepts(tp, value)
        if ok is None and p.default not in (p.empty, None):
            tp = type(p.default)
            ok = _accepts(tp, value)
        if ok is False:
            return PartError(f"part '{label}' option '{key}' expects {_spoken(tp)}, found "
                             f"{_literal(value)}", option=key, code="S402")
    return None


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


# ---- items and slices of a sequential module ----------------------------------------------


def _children(n: int) -> str:
    return f"{n} child" if n == 1 else f"{n} children"


def picked_children(module: nn.Module, qual: str, index: tuple) -> list[tuple[str, nn.Module]]:
    """The children an item ``[i]`` or a slice ``[start:stop]`` of `module` takes; an index
    outside its children, or a slice that takes none, is a PartError at the index."""
    children = list(module._modules.items())
    if not children or not isinstance(module, (nn.Sequential, nn.ModuleList)):
        raise PartError(f"'{qual}' is a {type(module).__name__}, not a sequence of layers; "
                        "it cannot be sliced", at="index")
    n = len(children)
    start, stop, item = index
    if item:
        if not -n <= start < n:
            raise PartError(f"index {start} is out of range: '{qual}' has {_children(n)}",
                            at="index", hint=f"indices 0 to {n - 1}, or -{n} to -1")
        return [children[start]]
    text = f"[{'' if start is None else start}:{'' if stop is None else stop}]"
    for bound in (start, stop):
        if bound is not None and not -n <= bound <= n:
            raise PartError(f"the slice {text} of '{qual}' goes past its ends: it has "
                            f"{_children(n)}", at="index",
                            hint=f"a bound goes from 0 to {n}, or counts from the end "
                                 f"down to -{n}; leave it out to take the rest")
    picked = children[slice(start, stop)]
    if not picked:
        raise PartError(f"the slice {text} of '{qual}' is empty: it has {_children(n)}, and "
                        "the slice takes none of them", at="index",
                        hint="a slice [a:b] takes children a to b-1, so b must come after a")
    return picked


# ---- keyword data inputs --------------------------------------------------------------------


def keyword_problem(module: nn.Module, node: dict) -> PartError | None:
    """A keyword data input (`t(x, attention_mask=m)`) the part cannot take: the callee's
    forward (or method) decides, read with inspect; a cut, stages and a slice of several
    layers take none. At the keyword, S402."""
    keywords = list(node.get("keywords") or ())
    if not keywords:
        return None
    label, method, index = node["label"], node.get("method"), node.get("index")
    first = keywords[0]
    cut = next((k for k in ("at", "stage", "stages") if k in node["options"]), None)
    if cut is not None:
        return PartError(f"part '{label}' is cut with {cut}=, and a cut takes its data "
                         f"positionally; keyword '{first}' names a value", option=first,
                         at="keyword", code="S402",
                         hint="give the value to the whole model or a submodule instead")
    if index is not None and not index[2]:
        return PartError(f"part '{label}' is a slice that runs its layers in a row, each on "
                         f"the one before; it takes no keyword input '{first}'", option=first,
                         at="keyword", code="S402", hint="take one module, e.g. an item [i]")
    if index is not None:
        module = picked_children(module, label, index)[0][1]
    name = method or "forward"
    fn = getattr(type(module), name, None)
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):  # no signature to read: the call itself decides
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    by_name = {p.name: (i, p) for i, p in enumerate(params)
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    given = len(node["inputs"])
    for key in keywords:
        if key not in by_name:
            free = [k for k, (i, _) in by_name.items() if i >= given]
            return PartError(
                f"part '{label}' takes no keyword input '{key}': "
                f"{type(module).__name__}.{name} has no such argument", option=key,
                at="keyword", code="S402", hint=did_you_mean(key, free) or (
                    f"{name} takes " + ", ".join(f"{k}=" for k in free) if free
                    else f"{name} takes no other inputs"))
        if by_name[key][0] < given:
            return PartError(f"part '{label}' gets '{key}' twice: by position (argument "
                             f"{by_name[key][0] + 1}) and by keyword", option=key,
                             at="keyword", code="S402",
                             hint="give it once, positionally or by keyword")
    return None


def method_keywords(owner: nn.Module, method: str, keywords) -> tuple[str, ...]:
    """A method part's keyword data inputs in the order its signature names them (the
    order its traces take them in)."""
    names = list(inspect.signature(getattr(type(owner), method)).parameters)
    return tuple(sorted(keywords, key=lambda k: names.index(k) if k in names else len(names)))


def part_problem(model: nn.Module, node: dict) -> PartError | None:
    """The first mistake a part node makes in naming what it takes from `model`, or None."""
    source, path, method = node["source"], tuple(node["path"]), node.get("method")
    index = node.get("index")
    try:
        module = submodule(model, source, path)
        if method:
            if not callable(getattr(type(module), method, None)):
                return PartError(f"'{'.'.join((source, *path))}' has no method '{method}'",
                                 hint=did_you_mean(method, [m for m in PART_METHODS
                                                            if hasattr(module, m)]))
            return _option_problem(node["label"], module, method, dict(node["options"])) \
                or keyword_problem(module, node)
        if index is not None:
            picked_children(module, ".".join((source, *path)), index)
        return keyword_problem(module, node)
    except PartError as e:
        return e
