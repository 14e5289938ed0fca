"""Check a SynthGraph before any weight is read: names, cycles, sources, shapes, training sets.

The check is a list of passes (`PASSES`), run in order on one shared
:class:`~synthdsl.checks.context.CheckContext`; each pass is one module with one
public function. Shapes are found by running every node on the ``meta`` device:
sources are built there (no memory, no weights), symbolic dimensions get a probe
size, and each failure becomes a diagnostic at the spec line that caused it.
Every independent problem is collected and raised once.

>>> from synthdsl.lang.parse import parse_spec
>>> from synthdsl.graph import build_graph
>>> g = check_graph(build_graph(parse_spec(
...     "synth A input x: [B, 8] h = Linear(x, out=4) |> ReLU output h")))
>>> g.nodes["h.0"]["shape"], g.nodes["h.0"]["params"]
(('B', 4), 36)
>>> [p.__name__ for p in PASSES][:3]
['check_cycles', 'check_sources', 'check_shapes']
"""

from __future__ import annotations

from typing import Callable, Sequence

from synthdsl.checks.adapters import check_adapters
from synthdsl.checks.budget import check_budget
from synthdsl.checks.compress import check_compression
from synthdsl.checks.context import CheckContext, pattern_matches, run_check
from synthdsl.checks.inherit import check_inheritance
from synthdsl.checks.policies import check_policies
from synthdsl.checks.recipe import check_recipe
from synthdsl.checks.shapes import check_shapes
from synthdsl.checks.sources import check_sources
from synthdsl.checks.structure import check_cycles
from synthdsl.checks.training import check_training
from synthdsl.checks.unused import check_unused
from synthdsl.graph import SynthGraph

#: The passes `check_graph` runs, in order. Each reads what the earlier ones left
#: on the context: sources before shapes (the meta models), shapes before
#: inheritance, adapters and training (the installed modules and their tensors),
#: adapters before training (the tensors they add), unused last (it is skipped
#: when anything before it found an error).
PASSES: tuple[Callable[[CheckContext], None], ...] = (
    check_cycles,
    check_sources,
    check_shapes,
    check_inheritance,
    check_policies,
    check_adapters,
    check_compression,
    check_budget,
    check_training,
    check_recipe,
    check_unused,
)


def check_graph(graph: SynthGraph, raise_errors: bool = True, weights: bool = True,
                passes: Sequence[Callable[[CheckContext], None]] = PASSES) -> SynthGraph:
    """Annotate `graph` with shapes, parameter counts and the training set; raise on errors.

    With ``raise_errors=False`` the problems are left on ``graph.graph["errors"]``
    instead, so a broken spec can still be summarised and drawn. With
    ``weights=False`` checkpoints are not consulted (a compiled artifact brings its
    own tensors), and inheritance edges are not mapped.
    """
    return run_check(graph, passes, raise_errors=raise_errors, weights=weights)


__all__ = ["PASSES", "CheckContext", "check_graph", "pattern_matches"]
