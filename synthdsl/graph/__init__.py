"""AST → SynthGraph, the one intermediate form every later stage reads."""

from synthdsl.graph.build import SynthGraph, build_graph, spec_texts

__all__ = ["SynthGraph", "build_graph", "spec_texts"]
