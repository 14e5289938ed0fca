"""The recipe: how to optimise, from the spec's `recipe` statement and the command line.

Its fields, defaults and allowed values are those of the language's recipe schema
(`synthdsl.lang.options.RECIPE`), less the options that say how images are read
(`PREPROCESS_KEYS`).

>>> r = Recipe.resolve({"epochs": 3}, {"lr": 0.01, "batch_size": None})
>>> r.epochs, r.lr, r.batch_size, r.optimizer
(3, 0.01, 64, 'adamw')
"""

from __future__ import annotations

from dataclasses import field, fields, make_dataclass
from typing import Any

from synthdsl.lang.options import PREPROCESS_KEYS, RECIPE, spoken
from synthdsl.train.errors import TrainError

#: The recipe options that say how to optimise, in the schema's order: the fields of `Recipe`.
OPTIMISE = {k: o for k, o in RECIPE.items() if k not in PREPROCESS_KEYS}


class _RecipeMethods:
    """How a recipe is made: the spec's statement, then the command line, over the defaults."""

    @classmethod
    def resolve(cls, spec_recipe: dict[str, Any] | None = None,
                overrides: dict[str, Any] | None = None):
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for source in (spec_recipe or {}, overrides or {}):
            for k, v in source.items():
                if v is None or k in PREPROCESS_KEYS:
                    continue
                if k not in known:
                    raise TrainError(f"recipe has no option '{k}'",
                                     hint="its options: " + ", ".join(sorted(known)))
                values[k] = v
        r = cls(**values)
        r.validate()
        return r

    def validate(self) -> None:
        """The choices of each option, and the sizes that must be positive."""
        for o in OPTIMISE.values():
            value = getattr(self, o.name)
            if o.choices and value not in o.choices:
                raise TrainError(f"{o.name} must be {spoken(o.choices, quote=False)}, "
                                 f"not '{value}'")
        if any(getattr(self, k) <= 0 for k in ("epochs", "batch_size", "lr")):
            raise TrainError("epochs, batch size and learning rate must be > 0")
        for o in OPTIMISE.values():
            value = getattr(self, o.name)
            if value is not None and not o.accepts(value):
                raise TrainError(f"{o.name} must be {o.expects}, not {value!r}")


#: How to optimise: the spec's `recipe` statement, then command-line flags, win over
#: these defaults. A frozen dataclass with one field per option of `OPTIMISE`.
Recipe = make_dataclass(
    "Recipe", [(k, o.type, field(default=o.default)) for k, o in OPTIMISE.items()],
    bases=(_RecipeMethods,), frozen=True,
    namespace={"__module__": __name__, "__doc__": "How to optimise: the spec's `recipe` "
               "statement, then command-line flags, win over these defaults.\n\n"
               + "\n".join(f"* ``{k}`` ({o.default!r}): {o.description}"
                           for k, o in OPTIMISE.items())})
