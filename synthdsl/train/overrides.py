"""``--set KEY=VALUE``: the spec's own values changed from the command line, as MMEngine's
``--cfg-options`` and timm's config overrides do, without editing the file.

A key is ``recipe.OPTION`` (any option of the ``recipe`` statement, the preprocessing ones
included) or ``policy.NAME`` (``policy.norm=frozen``). A value is read as a spec literal
(``3e-4``, ``true``, ``[0.5, 0.5]``, ``"x"``), and a bare word that is not one is a string
(``recipe.optimizer=sgd``). An unknown key, or a value its option does not take, is S010
naming the flag. The overrides are applied to the graph before it is checked, so they win
over the spec's statements; the command line's own recipe flags win over both, and the run
records them (``run.json`` ``overrides``).

Once the spec is compiled, its text becomes the spec as trained (:func:`embed_overrides`,
:func:`synthdsl.lang.edit.set_values`): the overridden values written into the statements,
marked by a comment line of the flags, so every artifact of the run (``model.safetensors``,
``model-best``, ``model-ema``) rebuilds with the policies and recipe it was trained with.
The text is replaced after the check and the compile, whose spans point into the file.

>>> print(override_note({"policy": {"norm": "frozen"}, "recipe": {"lr": 3e-4}}))
synth train --set recipe.lr=0.0003 --set policy.norm="frozen"

>>> parse_overrides(["recipe.lr=3e-4", "policy.norm=frozen", "recipe.optimizer=sgd"])
{'recipe': {'lr': 0.0003, 'optimizer': 'sgd'}, 'policy': {'norm': 'frozen'}}
>>> parse_overrides(["recipe.lrr=1"])
Traceback (most recent call last):
  ...
synthdsl.lang.errors.SynthError: error[S010]: --set recipe.lrr: the recipe has no option 'lrr'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from synthdsl.graph import build_graph
from synthdsl.lang.ast import NO_SPAN
from synthdsl.lang.edit import set_values
from synthdsl.lang.errors import SynthError, did_you_mean
from synthdsl.lang.options import POLICIES, RECIPE
from synthdsl.lang.printer import format_value
from synthdsl.pipeline import check_locked, compile_locked, load_spec

#: What ``--set`` can change: the section before the dot, and its options.
SECTIONS = {"recipe": RECIPE, "policy": POLICIES}


def _literal(text: str) -> Any:
    """`text` as the spec would read it after ``k=``; a bare word is a string."""
    from synthdsl.lang.parse import parse_spec

    try:
        spec = parse_spec(f"synth Set\nrecipe k={text}\n")
    except SynthError:
        return text
    return spec.statements[0].options[0].value


def parse_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["recipe.lr=3e-4", ...]`` as ``{"recipe": {"lr": 0.0003}, ...}``, each checked."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not eq or not dot or not name:
            raise SynthError("S010", f"--set expects KEY=VALUE with KEY like recipe.lr or "
                             f"policy.norm, not '{item}'", hint="e.g. --set recipe.lr=3e-4")
        if section not in SECTIONS:
            raise SynthError("S010", f"--set {key}: '{section}' is not something --set can "
                             "change", hint="keys start with " + " or ".join(
                                 f"'{s}.'" for s in SECTIONS))
        table = SECTIONS[section]
        if name not in table:
            raise SynthError("S010", f"--set {key}: the {section} has no option '{name}'",
                             hint=did_you_mean(name, table)
                             or f"its options: {', '.join(table)}")
        value = _literal(text.strip())
        if isinstance(value, list):
            value = tuple(value)
        if not table[name].accepts(value):
            raise SynthError("S010", f"--set {key} expects {table[name].expects}, found "
                             f"{text.strip()!r}")
        out.setdefault(section, {})[name] = value
    return out


def apply_overrides(graph, overrides: dict[str, dict[str, Any]]) -> None:
    """Write the overrides into an unchecked graph, as if the spec had said them last."""
    recipe = graph.graph.setdefault("recipe", {})
    spans = graph.graph.setdefault("recipe_spans", {})
    for name, value in overrides.get("recipe", {}).items():
        recipe[name] = value
        spans.setdefault(name, NO_SPAN)
    policies = graph.graph.setdefault("policies", {})
    for name, value in overrides.get("policy", {}).items():
        policies[name] = {"value": value, "span": NO_SPAN, "value_span": NO_SPAN}


def _canonical(overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The overrides in one order (sections as :data:`SECTIONS`, names sorted): the same
    flags in any order make the same text."""
    return {section: dict(sorted(overrides[section].items())) for section in SECTIONS
            if overrides.get(section)}


def override_note(overrides: dict[str, dict[str, Any]]) -> str:
    """The flags that say `overrides`, each value as the spec writes it."""
    return "synth train " + " ".join(
        f"--set {section}.{name}={format_value(value)}"
        for section, names in _canonical(overrides).items() for name, value in names.items())


def embed_overrides(graph, overrides: dict[str, dict[str, Any]]) -> None:
    """Make the text of a checked and compiled graph the spec as trained with `overrides`
    (see the module docstring); nothing to do without overrides."""
    ordered = _canonical(overrides)
    if ordered:
        graph.graph["text"] = set_values(graph.graph.get("text", ""), ordered,
                                         note=override_note(ordered),
                                         file=graph.graph.get("file"))


def checked_with(spec: Path, overrides: dict[str, dict[str, Any]]):
    """The checked graph of the spec file `spec`, `overrides` applied before the check (its
    ``SPEC.lock`` verified first)."""
    graph = build_graph(load_spec(Path(spec)))
    apply_overrides(graph, overrides)
    return check_locked(graph)


def compiled_with(graph, overrides: dict[str, dict[str, Any]], seed: int | None):
    """The module of a graph :func:`checked_with` checked, its text the spec as trained."""
    model = compile_locked(graph, seed=seed)
    embed_overrides(model.graph, overrides)
    return model
