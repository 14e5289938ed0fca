"""The front end: text → AST and back, and the diagnostics every stage reports.

Nothing here imports torch: a spec can be parsed, printed and its syntax
errors rendered without loading any model code.
"""
