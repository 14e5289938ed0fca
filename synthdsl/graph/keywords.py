"""Keyword data inputs of calls: `t(tokens, attention_mask=mask)`.

A keyword argument whose value names a value of the spec gives that value to a part of a
source by keyword. The builder (:class:`KeywordInputs`, mixed into the graph builder)
resolves the name as it resolves a positional input (an unknown one is S101 at the name,
with the closest names), records it on the node (``keywords``: keyword -> node id, and
``keyword_spans``) and draws a data edge from the value that records the keyword
(``keywords`` on the edge), so cycles, shapes, compile and pictures see it. Whether the
part takes that keyword is its forward's to say, and the check asks it
(:func:`synthdsl.library.partcheck.keyword_problem`). Layers and operations take literal
options only: a value name there is S402 at the value.
"""

from __future__ import annotations

from synthdsl.lang import ast
from synthdsl.library.layers import LAYERS
from synthdsl.library.ops import OPS


class KeywordInputs:
    """The graph builder's keyword data inputs (it provides ``g``, ``lookup`` and ``error``)."""

    def add_keywords(self, node_id: str, data: list[ast.KwArg]) -> None:
        """Keyword data inputs (`t(x, attention_mask=mask)`): a part's (or a value applied
        again, which the check finds to be a part's) go on the node and a data edge
        records the keyword; a layer's or an operation's options take literals only."""
        node = self.g.nodes[node_id]
        if node["kind"] in ("layer", "op"):
            node["invalid"] = True
            for k in data:
                self.error("S402", _literal_expected(node, k), k.value_span,
                           hint="layers and operations take their data positionally, first "
                           "(`f(a, b, option=1)`); only parts of sources take values by "
                           "keyword")
            return
        node["keywords"] = {k.name: self.lookup(k.value) for k in data}
        node["keyword_spans"] = {k.name: k.span for k in data}
        for k in data:
            src = node["keywords"][k.name]
            if src is None:
                continue
            if self.g.has_edge(src, node_id):
                self.g.edges[src, node_id].setdefault("keywords", []).append(k.name)
            else:
                self.g.add_edge(src, node_id, kind="data", positions=[], keywords=[k.name])


def _literal_expected(node: dict, k: ast.KwArg) -> str:
    """A value name given to a layer's or an operation's option: what the option expects."""
    what = node["label"]
    registry = LAYERS if node["kind"] == "layer" else OPS
    spec = registry.get(node.get("layer") or node.get("op") or "")
    option = spec.option(k.name) if spec is not None else None
    if option is None:
        return (f"{what} has no option '{k.name}', and its options take literal values; "
                f"found the value name '{k.value.name}'")
    return (f"{what} option '{k.name}' expects a literal value (a number, a string, true, "
            f"false, none or a list), found the value name '{k.value.name}'")
