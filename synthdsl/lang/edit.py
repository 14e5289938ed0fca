"""Spec text edited by the AST's spans: the values of ``recipe`` options and policies set,
every other statement, comment and layout left as it is written.

This is how ``synth train --set`` makes the spec its artifacts embed the spec as trained.
:func:`set_values` replaces the value of an option a ``recipe`` statement has; appends an
option the recipe lacks to the last ``recipe`` statement (or writes a new ``recipe``
statement when there is none); replaces the value of a policy the spec sets, and writes a
``policy NAME = value`` statement for one it does not. New statements go on lines of their
own before the first ``output`` statement (above the comment lines directly over it), after
one comment line, the `note`, that says what changed. Values are written by
:func:`~synthdsl.lang.printer.format_value`. The result is parsed again: it must say exactly
the values asked for, every other statement as before and every comment as before (the note
added), else :class:`~synthdsl.lang.errors.InternalError`.

>>> text = '''synth A
... input x: [B, 4]
... recipe lr=0.01, epochs=3   # the defaults
... y = Linear(x, out=2)
...
... # the head
... output y
... '''
>>> print(set_values(text, {"recipe": {"lr": 3e-4, "batch_size": 64},
...                         "policy": {"norm": "frozen"}}, note="synth train --set ..."), end="")
synth A
input x: [B, 4]
recipe lr=0.0003, epochs=3, batch_size=64   # the defaults
y = Linear(x, out=2)
<BLANKLINE>
# synth train --set ...
policy norm = "frozen"
# the head
output y
>>> print(set_values("synth A input x: [B, 4]  output x", {"recipe": {"epochs": 2}}), end="")
synth A input x: [B, 4]
recipe epochs=2
output x
"""

from __future__ import annotations

from typing import Any, Mapping

from synthdsl.lang import ast
from synthdsl.lang.errors import InternalError, SynthError
from synthdsl.lang.fmt import comments_of
from synthdsl.lang.parse import parse_spec
from synthdsl.lang.printer import format_statement, format_value

#: What :func:`set_values` sets: the statements of each section.
SECTIONS = {"recipe": ast.RecipeStmt, "policy": ast.PolicyStmt}

#: One edit of the text: the offsets it replaces (``start == end``: an insertion), and by what.
Edit = tuple[int, int, str]


def set_values(text: str, values: Mapping[str, Mapping[str, Any]], note: str | None = None,
               file: str | None = None) -> str:
    """`text` (a spec that parses) with ``values["recipe"]`` and ``values["policy"]`` set;
    see the module docstring. `note` is the text of the comment line that marks the edit.
    The spans are those of the text as the parser reads it (``\\r\\n`` as ``\\n``, no
    byte-order mark), which is what is edited and returned: the text a graph holds."""
    if unknown := set(values) - set(SECTIONS):
        raise InternalError(f"set_values sets recipe options and policies, not {unknown}")
    if note is not None and ("\n" in note or "\r" in note):
        raise InternalError(f"the note of an edit is one line, not {note!r}")
    recipe, policies = dict(values.get("recipe", {})), dict(values.get("policy", {}))
    if not recipe and not policies:
        return text
    spec = parse_spec(text, file)
    text = spec.text
    edits, lines = _recipe_edits(spec, recipe)
    for st in spec.of_type(ast.PolicyStmt):
        if st.name in policies:
            edits.append((st.value_span.start, st.value_span.end,
                          format_value(policies[st.name])))
    lines += [format_statement(ast.PolicyStmt(name=name, value=value))
              for name, value in policies.items()
              if not any(st.name == name for st in spec.of_type(ast.PolicyStmt))]
    if note is not None or lines:
        edits.append(_new_lines(text, spec, ([f"# {note}"] if note is not None else []) + lines))
    result = _apply(text, edits)
    _verify(spec, text, result, {"recipe": recipe, "policy": policies}, note, file)
    return result


def _recipe_edits(spec: ast.Spec, recipe: dict[str, Any]) -> tuple[list[Edit], list[str]]:
    """The edits that set `recipe`'s options, and the new statement it needs (if any)."""
    statements = spec.of_type(ast.RecipeStmt)
    edits: list[Edit] = [(k.value_span.start, k.value_span.end, format_value(recipe[k.name]))
                         for st in statements for k in st.options if k.name in recipe]
    written = {k.name for st in statements for k in st.options}
    missing = tuple(ast.KwArg(name=k, value=v) for k, v in recipe.items() if k not in written)
    if not missing:
        return edits, []
    new = format_statement(ast.RecipeStmt(options=missing))
    if not statements:
        return edits, [new]
    end = statements[-1].span.end
    return edits + [(end, end, ", " + new.removeprefix("recipe "))], []


def _new_lines(text: str, spec: ast.Spec, lines: list[str]) -> Edit:
    """`lines` inserted as lines of their own before the first output statement (above the
    comment lines directly over it, in its indentation), or at the end of a spec without one."""
    outputs = spec.of_type(ast.OutputStmt)
    if not outputs:
        lead = "" if not text or text.endswith("\n") else "\n"
        return len(text), len(text), lead + "".join(line + "\n" for line in lines)
    at = outputs[0].span.start
    start = text.rfind("\n", 0, at) + 1
    if text[start:at].strip():  # the output shares its line: the spaces before it go
        end = start + len(text[start:at].rstrip())
        return end, at, "\n" + "".join(line + "\n" for line in lines)
    indent = text[start:at]
    while start > 0:
        above = text.rfind("\n", 0, start - 1) + 1
        if not text[above:start].lstrip().startswith("#"):
            break
        start = above
    return start, start, "".join(indent + line + "\n" for line in lines)


def _apply(text: str, edits: list[Edit]) -> str:
    """`text` with `edits` made (they do not overlap), the last first."""
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _said(spec: ast.Spec, section: str) -> dict[str, str]:
    """What the spec's statements of `section` say, each value as it is printed."""
    if section == "recipe":
        return {k.name: format_value(k.value)
                for st in spec.of_type(ast.RecipeStmt) for k in st.options}
    return {st.name: format_value(st.value) for st in spec.of_type(ast.PolicyStmt)}


def _verify(before: ast.Spec, text: str, result: str, values: dict[str, dict[str, Any]],
            note: str | None, file: str | None) -> None:
    """The edited text says the values asked for and nothing else changed."""
    try:
        after = parse_spec(result, file)
    except SynthError as e:
        raise InternalError(f"setting {values} made a spec that does not parse: {e}") from None
    kept = tuple(SECTIONS.values())
    if after.name != before.name or [s for s in after.statements if not isinstance(s, kept)] \
            != [s for s in before.statements if not isinstance(s, kept)]:
        raise InternalError(f"setting {values} changed statements it does not set")
    for section, asked in values.items():
        want = _said(before, section) | {k: format_value(v) for k, v in asked.items()}
        if _said(after, section) != want:
            raise InternalError(f"setting {values} made the {section} say "
                                f"{_said(after, section)}, not {want}")
    comments = [c.text for c in comments_of(result)]
    if note is not None and f"# {note}" in comments:
        comments.remove(f"# {note}")
    if comments != [c.text for c in comments_of(text)]:
        raise InternalError(f"setting {values} changed the spec's comments")
