"""Policies: `policy NAME = "value"` statements checked against the named behaviours.

Writes ``graph.graph["norm_policy"]``: how normalisation layers of a frozen
trunk behave (the first value, "follow", when the spec says nothing valid).
"""

from __future__ import annotations

from synthdsl.checks.context import CheckContext
from synthdsl.lang.errors import did_you_mean
from synthdsl.lang.options import POLICIES


def check_policies(ctx: CheckContext) -> None:
    """Every policy is known and takes one of its values."""
    policies = ctx.g.graph.get("policies", {})
    for name, p in policies.items():
        if name not in POLICIES:
            ctx.err("S402", f"unknown policy '{name}'", p["span"],
                    hint=did_you_mean(name, POLICIES) or "policies: " + ", ".join(POLICIES))
        elif not POLICIES[name].accepts(p["value"]):
            ctx.err("S402", f"policy {name} takes " + ", ".join(
                f'"{v}"' for v in POLICIES[name].choices) + f", found {p['value']!r}",
                p["value_span"])
    norm = POLICIES["norm"]
    value = policies.get("norm", {}).get("value")
    ctx.g.graph["norm_policy"] = value if value in norm.choices else norm.default
