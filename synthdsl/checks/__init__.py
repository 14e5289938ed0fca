"""Passes over the SynthGraph, run before any weight is read."""

from synthdsl.checks.checker import check_graph, fmt_shape, is_norm, pattern_matches

__all__ = ["check_graph", "fmt_shape", "is_norm", "pattern_matches"]
