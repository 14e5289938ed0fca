"""The recipe: every option of the `recipe` statement against the language's recipe schema.

Also the three ways mean and std can disagree: one without the other, both
beside ``normalize=false``, and a count that is neither one nor one per channel
of the image input.
"""

from __future__ import annotations

from synthdsl.checks.context import CheckContext
from synthdsl.lang.errors import did_you_mean
from synthdsl.lang.options import RECIPE


def check_recipe(ctx: CheckContext) -> None:
    """Each recipe option known and in range (S402, at the option's span)."""
    g = ctx.g
    recipe = g.graph.get("recipe", {})
    spans = g.graph.get("recipe_spans", {})
    for key, value in recipe.items():
        if key not in RECIPE:
            ctx.err("S402", f"recipe has no option '{key}'", spans[key],
                    hint=did_you_mean(key, RECIPE) or "its options: " + ", ".join(RECIPE))
            continue
        if not RECIPE[key].accepts(value):
            ctx.err("S402", f"recipe option '{key}' expects {RECIPE[key].expects}, "
                    f"found {value!r}", spans[key])
    stated = {k: v for k, v in recipe.items() if k in ("mean", "std")}
    if len(stated) == 1:
        (key, _), = stated.items()
        other = "std" if key == "mean" else "mean"
        ctx.err("S402", f"recipe gives '{key}' without '{other}': the images are "
                f"normalised with both or with neither", spans[key],
                hint=f"add {other}=..., or drop {key}")
    if stated and recipe.get("normalize") is False:
        ctx.err("S402", "recipe says normalize=false and also gives "
                f"{' and '.join(stated)}: expected one or the other",
                spans["normalize"], hint="drop normalize=false, or the mean and std")
    # one number, or one per channel of the image input (a [B, C, H, W] input)
    images = [g.nodes[n]["dims"] for n in g.of_kind("input") if len(g.nodes[n]["dims"]) == 4]
    channels = images[0][1] if len(images) == 1 and isinstance(images[0][1], int) else None
    lengths = {k: len(v) if isinstance(v, (list, tuple)) else 1 for k, v in stated.items()}
    if channels is not None:
        for key, n in lengths.items():
            if n not in (1, channels):
                ctx.err("S402", f"recipe gives {n} values of '{key}'; expected one per "
                        f"channel of the image input ({channels}), or a single number",
                        spans[key])
    elif len(lengths) == 2 and 1 not in lengths.values() and \
            lengths["mean"] != lengths["std"]:
        ctx.err("S402", f"recipe gives {lengths['mean']} means and {lengths['std']} stds; "
                "expected the same number of each, or a single number", spans["std"])
