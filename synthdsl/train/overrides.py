"""``--set KEY=VALUE``: the spec's own values changed from the command line, as MMEngine's
``--cfg-options`` and timm's config overrides do, without editing the file.

A key is ``recipe.OPTION`` (any option of the ``recipe`` statement, the preprocessing ones
included) or ``policy.NAME`` (``policy.norm=frozen``). A value is read as a spec literal
(``3e-4``, ``true``, ``[0.5, 0.5]``, ``"x"``), and a bare word that is not one is a string
(``recipe.optimizer=sgd``). An unknown key, or a value its option does not take, is S010
naming the flag. The overrides are applied to the graph before it is checked, so they win
over the spec's statements; the command line's own recipe flags win over both, and the run
records them (``run.json`` ``overrides``).

>>> parse_overrides(["recipe.lr=3e-4", "policy.norm=frozen", "recipe.optimizer=sgd"])
{'recipe': {'lr': 0.0003, 'optimizer': 'sgd'}, 'policy': {'norm': 'frozen'}}
>>> parse_overrides(["recipe.lrr=1"])
Traceback (most recent call last):
  ...
synthdsl.lang.errors.SynthError: error[S010]: --set recipe.lrr: the recipe has no option 'lrr'
"""

from __future__ import annotations

from typing import Any, Iterable

from synthdsl.lang.ast import NO_SPAN
from synthdsl.lang.errors import SynthError, did_you_mean
from synthdsl.lang.options import POLICIES, RECIPE

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
