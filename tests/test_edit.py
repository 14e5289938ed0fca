"""Spec text edited by its spans (`synthdsl.lang.edit.set_values`): each kind of edit on a
small spec, and, as a property, random recipe options and policies set in every example
spec of `models/`, which keep every other statement, comment and line as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthdsl.lang import ast
from synthdsl.lang.edit import set_values
from synthdsl.lang.errors import InternalError
from synthdsl.lang.fmt import comments_of
from synthdsl.lang.options import POLICIES, RECIPE
from synthdsl.lang.parse import parse_spec
from synthdsl.lang.printer import format_value
from tests.test_grammar_properties import SETTINGS, literals, names, strict_key

ROOT = Path(__file__).resolve().parent.parent
MODELS = {p.name: p.read_text("utf-8") for p in sorted((ROOT / "models").glob("*.synth"))}
EDITED = (ast.RecipeStmt, ast.PolicyStmt)

SPEC = """synth A   # header
input x: [B, 4]
recipe lr=0.01,   # a comment inside
       epochs=3
policy norm = "follow"
y = Linear(x, out=2)
output y
"""


def test_a_value_written_is_replaced_in_place():
    got = set_values(SPEC, {"recipe": {"epochs": 5}, "policy": {"norm": "frozen"}})
    assert got == SPEC.replace("epochs=3", "epochs=5").replace('"follow"', '"frozen"')


def test_an_option_the_recipe_lacks_goes_after_its_last_option():
    text = SPEC.replace("output y", "recipe seed=1  # last\noutput y")
    got = set_values(text, {"recipe": {"mean": [0.5, 0.25], "optimizer": "sgd"}})
    assert 'recipe seed=1, mean=[0.5, 0.25], optimizer="sgd"  # last\n' in got
    assert got.replace(', mean=[0.5, 0.25], optimizer="sgd"', "") == text


def test_new_statements_and_the_note_go_before_the_first_output():
    text = "synth A\ninput x: [B, 4]\n  # about y\n  # more\n  output x\noutput x\n"
    got = set_values(text, {"recipe": {"lr": 1e-3}, "policy": {"norm": "train"}},
                     note="synth train --set ...")
    assert got == ("synth A\ninput x: [B, 4]\n  # synth train --set ...\n  recipe lr=0.001\n"
                   '  policy norm = "train"\n  # about y\n  # more\n  output x\noutput x\n')
    windows = "\ufeff" + text.replace("\n", "\r\n")  # edited as the parser reads it
    assert set_values(windows, {"recipe": {"lr": 1e-3}}) == \
        "synth A\ninput x: [B, 4]\n  recipe lr=0.001\n  # about y\n  # more\n  output x\noutput x\n"
    assert set_values("synth A input x: [B, 4]", {"policy": {"norm": "train"}}) == \
        'synth A input x: [B, 4]\npolicy norm = "train"\n'


def test_nothing_to_set_changes_nothing_and_a_bad_request_is_an_internal_error():
    assert set_values(SPEC, {"recipe": {}}, note="never written") == SPEC
    with pytest.raises(InternalError, match="not {'model'}"):
        set_values(SPEC, {"model": {"lr": 1}})
    with pytest.raises(InternalError, match="one line"):
        set_values(SPEC, {"recipe": {"lr": 1}}, note="two\nlines")


# ---- the property ---------------------------------------------------------------------------

# any literal a spec can write, under the names of the options or any other names
_options = st.dictionaries(st.one_of(st.sampled_from(sorted(RECIPE)), names), literals,
                           max_size=4)
_policies = st.dictionaries(st.one_of(st.sampled_from(sorted(POLICIES)), names), literals,
                            max_size=2)


def _untouched_lines(text: str, spec: ast.Spec, note: str | None) -> list[str]:
    """The lines of `text` that hold no part of a recipe or policy statement, nor the note."""
    touched = {i for s in spec.statements if isinstance(s, EDITED)
               for i in range(s.span.line, s.span.end_line + 1)}
    return [line for i, line in enumerate(text.splitlines(), 1)
            if i not in touched and line.strip() != f"# {note}"]


def _says(spec: ast.Spec) -> tuple[dict, dict]:
    recipe = {k.name: format_value(k.value) for s in spec.of_type(ast.RecipeStmt)
              for k in s.options}
    return recipe, {s.name: format_value(s.value) for s in spec.of_type(ast.PolicyStmt)}


def _check(text: str, got: str, recipe: dict, policies: dict, note: str | None) -> None:
    """`got` is `text` with `recipe` and `policies` set, marked by `note`, and else the same."""
    before, after = parse_spec(text), parse_spec(got)
    others = [strict_key(s) for s in before.statements if not isinstance(s, EDITED)]
    assert [strict_key(s) for s in after.statements if not isinstance(s, EDITED)] == others
    old_recipe, old_policies = _says(before)
    assert _says(after) == (old_recipe | {k: format_value(v) for k, v in recipe.items()},
                            old_policies | {k: format_value(v) for k, v in policies.items()})
    kept = [c.text for c in comments_of(got)]
    if note is not None:
        kept.remove(f"# {note}")
    assert kept == [c.text for c in comments_of(text)]
    assert _untouched_lines(got, after, note) == _untouched_lines(text, before, note)
    if not recipe and not policies:
        assert got == text


@settings(max_examples=150, **SETTINGS)
@given(name=st.sampled_from(sorted(MODELS)), recipe=_options, policies=_policies,
       noted=st.booleans(), recipe2=_options, policies2=_policies)
def test_setting_values_in_the_examples_keeps_everything_else(name, recipe, policies, noted,
                                                              recipe2, policies2):
    """Set once (mostly new statements: few examples have a recipe or a policy), then again
    in the result (mostly values replaced in place)."""
    text = MODELS[name]
    note = "synth train --set " + " ".join(recipe) if noted and recipe else None
    got = set_values(text, {"recipe": recipe, "policy": policies}, note=note)
    _check(text, got, recipe, policies, note)
    again = set_values(got, {"recipe": recipe2, "policy": policies2})
    _check(got, again, recipe2, policies2, None)
