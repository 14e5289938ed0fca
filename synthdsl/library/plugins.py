"""Plugins: a user's own layers, operations and kinds of source, loaded when the user asks.

A spec never names Python. The user does, on the command line (``synth --plugin
mypkg.layers check spec.synth``, repeatable), in ``SYNTHDSL_PLUGINS=mypkg.a,mypkg.b``, or
in Python (:func:`load_plugin`). Loading a plugin imports its module (or, for a name
that an installed package exposes in the entry point group ``synthdsl.plugins``, loads
that entry point, and calls it when it is a function); the module calls the public
registration API (:func:`register_layer`, :func:`register_op`,
:func:`register_source_kind`), which validates what it is given.

Entry points are never loaded on their own: installing a package (or a package that
depends on one) must not run its code in every ``synth`` command, nor change what a spec
means; the command line says what a spec relies on, and two installed plugins cannot
collide behind the user's back.

Every name a plugin registers remembers its plugin (:func:`provider`), so a compiled
artifact records the plugins it needs (:func:`plugins_needed`) and loading it without
them names what to load. Anything a plugin does wrong (it cannot be imported, it raises,
it registers something invalid or a name that exists) is S011.
"""

from __future__ import annotations

import dataclasses
import importlib
import keyword
import re
import traceback
from importlib import metadata
from typing import Any, Callable, Iterable, Sequence

from torch import nn

from synthdsl.lang.errors import SynthError
from synthdsl.lang.transform import KEYWORDS
from synthdsl.library.layers import LAYERS, LayerArgError, LayerSpec, Option
from synthdsl.library.ops import OPS, OpSpec
from synthdsl.library.sources import SOURCE_KINDS, SourceKind

ENTRY_POINT_GROUP = "synthdsl.plugins"
ENV = "SYNTHDSL_PLUGINS"
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

#: The plugin that provided each registered name, by what it is ("layer", "op", "source").
_PROVIDERS: dict[str, dict[str, str]] = {"layer": {}, "op": {}, "source": {}}
#: The plugins loaded so far: the name the user gave -> what was imported.
LOADED: dict[str, str] = {}
#: The plugin being loaded now (what its registrations are recorded under).
_loading: list[str] = []
_REGISTRIES: dict[str, dict] = {"layer": LAYERS, "op": OPS, "source": SOURCE_KINDS}
_WHAT = {"layer": "layer", "op": "operation", "source": "source kind"}


def s011(message: str, hint: str | None = None, notes: Sequence[str] = ()) -> SynthError:
    return SynthError("S011", message, hint=hint, notes=list(notes))


def provider(what: str, name: str) -> str | None:
    """The plugin that registered layer/op/source `name`; None for a built-in."""
    return _PROVIDERS[what].get(name)


def _who(fallback: Any) -> str:
    if _loading:
        return _loading[-1]
    return getattr(fallback, "__module__", None) or "__main__"


def _owner(what: str, name: str) -> str:
    by = provider(what, name)
    return f"plugin '{by}'" if by else "synthdsl (a built-in)"


def _check_name(what: str, name: Any, pattern: str, example: str) -> str:
    who = f"plugin '{_loading[-1]}'" if _loading else "this registration"
    if not isinstance(name, str) or not re.fullmatch(pattern, name) or name in KEYWORDS \
            or keyword.iskeyword(name):
        raise s011(f"{who} registers a {_WHAT[what]} named {name!r}: a {_WHAT[what]}'s "
                   f"name must be {example}")
    for other in ("layer", "op", "source"):
        if name in _REGISTRIES[other]:
            raise s011(f"{who} registers the {_WHAT[what]} '{name}', but {_owner(other, name)}"
                       f" already registered a {_WHAT[other]} of that name",
                       hint="give it another name")
    return name


def _check_options(who: str, name: str, options: Any) -> tuple[Option, ...]:
    if isinstance(options, (str, bytes)) or not isinstance(options, Iterable):
        raise s011(f"{who}: the options of '{name}' must be a list of "
                   f"synthdsl.plugins.Option, found {type(options).__name__}")
    options = tuple(options)
    seen: set[str] = set()
    for o in options:
        if not isinstance(o, Option):
            raise s011(f"{who}: an option of '{name}' is {type(o).__name__}, not a "
                       "synthdsl.plugins.Option", hint='e.g. Option("hidden", (int,), 16)')
        if not isinstance(o.name, str) or not o.name.isidentifier() or o.name in KEYWORDS:
            raise s011(f"{who}: '{name}' has an option named {o.name!r}, which a spec "
                       "cannot write")
        if o.name in seen:
            raise s011(f"{who}: '{name}' declares option '{o.name}' twice")
        seen.add(o.name)
        if not isinstance(o.types, tuple) or not o.types or not all(
                isinstance(t, type) for t in o.types):
            raise s011(f"{who}: option '{o.name}' of '{name}' needs a tuple of types, found "
                       f"{o.types!r}")
        if not o.required and not o.accepts(o.default):
            raise s011(f"{who}: option '{o.name}' of '{name}' defaults to {o.default!r}, "
                       f"which is not {o.type_name()}")
        if o.check is not None and not callable(o.check):
            raise s011(f"{who}: the range check of option '{o.name}' of '{name}' is not "
                       "callable")
    return tuple(_guarded_check(who, name, o) for o in options)


def _guarded_check(who: str, name: str, o: Option) -> Option:
    """The option with its range check made safe: a check that raises says so."""
    if o.check is None:
        return o
    check = o.check

    def guarded(value, shapes, options):
        try:
            return check(value, shapes, options)
        except Exception as e:  # noqa: BLE001 - the plugin's code
            return f"a value the range check of {who} takes (it raised {_reason(e)})"
    return dataclasses.replace(o, check=guarded)


def _guarded_infer(who: str, name: str, infer: Callable | None) -> Callable:
    if infer is None:
        return lambda shape: {}

    def guarded(shape):
        try:
            sizes = infer(shape)
        except Exception as e:  # noqa: BLE001 - the plugin's code
            raise LayerArgError(f"{name} ({who}) cannot infer its sizes from its input: "
                                f"{_reason(e)}") from None
        if not isinstance(sizes, dict):
            raise LayerArgError(f"{name} ({who}): its infer function returned "
                                f"{type(sizes).__name__}, not a dict of sizes")
        return sizes
    return guarded


def _guarded_rule(who: str, name: str, rule: Callable | None) -> Callable | None:
    if rule is None:
        return None

    def guarded(shapes, options, names):
        try:
            return rule(shapes, options, names)
        except Exception as e:  # noqa: BLE001 - the plugin's code
            return f"{name} ({who}): its shape rule raised {_reason(e)}"
    return guarded


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0][:300] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _callable(who: str, name: str, what: str, value: Any, optional: bool = False) -> None:
    if (value is None and optional) or callable(value):
        return
    raise s011(f"{who}: the {what} of '{name}' must be a function, found "
               f"{type(value).__name__}")


def _record(what: str, name: str, entry: Any, by: str) -> None:
    _REGISTRIES[what][name] = entry
    _PROVIDERS[what][name] = by


def register_layer(name: str, build: Callable[..., nn.Module],
                   options: Iterable[Option] = (), infer: Callable | None = None,
                   ranks: Sequence[int] | None = None, many: bool = False,
                   doc: str = "") -> LayerSpec:
    """A layer a spec names like a built-in (``y = MyGate(x, hidden=16)``).

    `build(**options, **infer(shape))` returns the module; `infer(shape)` gives the
    sizes that follow from the input's shape (``{"features": shape[-1]}``); `ranks` the
    input ranks it takes (None: any); `many` a layer of several inputs (`infer` then gets
    their shapes)."""
    _check_name("layer", name, r"[A-Z][A-Za-z0-9_]*",
                "a capitalised identifier (layers are capitalised: MyGate)")
    who = f"plugin '{_who(build)}'"
    _callable(who, name, "build function", build)
    _callable(who, name, "infer function", infer, optional=True)
    opts = _check_options(who, name, options)
    if ranks is not None:
        ranks = tuple(ranks)
        if not ranks or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1
                                for r in ranks):
            raise s011(f"{who}: the ranks of '{name}' must be whole numbers >= 1, found "
                       f"{ranks!r}")
    if not isinstance(doc, str):
        raise s011(f"{who}: the doc of '{name}' must be a string")
    spec = LayerSpec(name, build, opts, infer=_guarded_infer(who, name, infer), ranks=ranks,
                     doc=doc, many=bool(many))
    _record("layer", name, spec, _who(build))
    return spec


def register_op(name: str, fn: Callable, min_inputs: int = 1, max_inputs: int | None = 1,
                options: Iterable[Option] = (), shape_rule: Callable | None = None,
                doc: str = "") -> OpSpec:
    """An operation a spec calls in lower case (``z = blend(a, b, alpha=0.3)``).

    `fn(*inputs, **options)` returns a tensor; `shape_rule(shapes, options, names)` says
    why inputs do not fit (a string), or None."""
    _check_name("op", name, r"[a-z][a-z0-9_]*",
                "a lower-case identifier (operations are lower case: blend)")
    who = f"plugin '{_who(fn)}'"
    _callable(who, name, "function", fn)
    _callable(who, name, "shape rule", shape_rule, optional=True)
    opts = _check_options(who, name, options)
    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1
    if not whole(min_inputs) or (max_inputs is not None and (
            not whole(max_inputs) or max_inputs < min_inputs)):
        raise s011(f"{who}: '{name}' takes min_inputs={min_inputs!r}, max_inputs="
                   f"{max_inputs!r}: whole numbers >= 1, the most (or None) not below "
                   "the least")
    spec = OpSpec(name, fn, min_inputs, max_inputs, opts, _guarded_rule(who, name, shape_rule),
                  doc)
    _record("op", name, spec, _who(fn))
    return spec


def register_source_kind(kind: SourceKind) -> SourceKind:
    """A kind of source: ``source m = mlp("tiny", hidden=8)`` for a kind named "mlp"."""
    who = f"plugin '{_who(type(kind))}'"
    if not isinstance(kind, SourceKind):
        raise s011(f"{who} registers {type(kind).__name__} as a source kind, not an "
                   "instance of a synthdsl.plugins.SourceKind subclass")
    _check_name("source", kind.name, r"[a-z][a-z0-9_]*",
                "the lower-case constructor a spec writes (mlp)")
    _record("source", kind.name, kind, _who(type(kind)))
    return kind


def built_module(what: str, name: str, value: Any, span=None) -> None:
    """Raise S011 where a plugin's build function returned something other than a module."""
    if (problem := module_problem(what, name, value, span)) is not None:
        raise problem


def module_problem(what: str, name: str, value: Any, span=None) -> SynthError | None:
    """S011 where a plugin's build function returned something other than a module."""
    if isinstance(value, nn.Module):
        return None
    return SynthError("S011", f"the {_WHAT[what]} '{name}' of {_owner(what, name)} built "
                      f"{type(value).__name__}, not a torch nn.Module", span,
                      hint="its build function must return an nn.Module")


# ---- loading ---------------------------------------------------------------------------


def installed() -> dict[str, metadata.EntryPoint]:
    """The plugins installed packages offer (entry point group ``synthdsl.plugins``)."""
    try:
        return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # noqa: BLE001 - a broken installation offers none
        return {}


def is_loaded(name: str) -> bool:
    return name in LOADED or name in LOADED.values() or any(
        name in p.values() for p in _PROVIDERS.values())


def names_from_env(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


def load_plugins(names: Iterable[str]) -> list[str]:
    """Load each plugin (see :func:`load_plugin`); the names loaded, in order."""
    return [load_plugin(n) for n in names]


def _undo(since: dict[str, set[str]]) -> None:
    for what, names in _PROVIDERS.items():
        for name in set(names) - since[what]:
            del names[name]
            _REGISTRIES[what].pop(name, None)


def load_plugin(name: str) -> str:
    """Import plugin `name` (a module, or the name of an installed entry point); S011 where
    it cannot be imported, raises, or registers something invalid (what it registered is
    then taken back)."""
    if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name.strip()):
        raise s011(f"plugin name {name!r} is not a Python module name",
                   hint="e.g. --plugin mypkg.layers")
    name = name.strip()
    if name in LOADED:
        return name
    entry = installed().get(name)
    target = entry.value if entry is not None else name
    before = {what: set(p) for what, p in _PROVIDERS.items()}
    _loading.append(name)
    try:
        if entry is not None:
            obj = entry.load()
            if callable(obj) and not isinstance(obj, type(importlib)):
                obj()
        else:
            importlib.import_module(name)
    except SynthError as e:
        _undo(before)
        raise (e if e.code == "S011" else s011(f"plugin '{name}' failed while registering: "
                                               f"{e.message}", hint=e.hint)) from None
    except ModuleNotFoundError as e:
        _undo(before)
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            offered = sorted(installed())
            raise s011(f"plugin '{name}' cannot be loaded: there is no module named "
                       f"'{e.name}'", hint="install it, or put the folder holding it on "
                       "PYTHONPATH" + (f" (installed plugins: {', '.join(offered)})"
                                       if offered else "")) from None
        raise _failed(name, e) from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the plugin's code, not ours
        _undo(before)
        raise _failed(name, e) from None
    finally:
        _loading.pop()
    module = target.split(":")[0]
    added = any(set(p) - before[what] for what, p in _PROVIDERS.items())
    if not added and not any(module in p.values() or name in p.values()
                             for p in _PROVIDERS.values()):
        raise s011(f"plugin '{name}' registers nothing",
                   hint="a plugin calls synthdsl.plugins.register_layer, register_op or "
                   "register_source_kind when it is imported")
    LOADED[name] = target
    return name


def _failed(name: str, e: BaseException) -> SynthError:
    frames = traceback.extract_tb(e.__traceback__)
    where = [f"at {f.filename}:{f.lineno}, in {f.name}" for f in frames[-1:]]
    return s011(f"plugin '{name}' raised while loading: {type(e).__name__}: "
                f"{str(e).splitlines()[0][:300] if str(e) else ''}".rstrip(": "),
                notes=where, hint="fix the plugin, or leave --plugin out")


def plugins_needed(graph) -> list[str]:
    """The plugins whose layers, operations or kinds of source a checked graph (and the
    specs it imports) uses, in sorted order."""
    found: set[str] = set()

    def walk(g) -> None:
        for _, node in g.nodes(data=True):
            kind = node.get("kind")
            p = (provider("layer", node.get("layer") or "") if kind == "layer" else
                 provider("op", node.get("op") or "") if kind == "op" else
                 provider("source", node.get("constructor") or "") if kind == "source"
                 else None)
            if p:
                found.add(p)
            if kind == "source" and node.get("graph") is not None:
                walk(node["graph"])
    walk(graph)
    return sorted(found)


def unknown_hint() -> str:
    """What S101 says about an unknown layer or operation no built-in is close to."""
    offered = sorted(n for n in installed() if n not in LOADED)
    return ("no built-in has this name; if a plugin provides it, load it: synth --plugin "
            "MODULE ..." + (f" (installed plugins: {', '.join(offered)})" if offered else ""))
