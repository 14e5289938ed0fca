"""AST → text: the canonical spelling of a spec.

`parse_spec(format_spec(spec)) == spec` for every spec the parser can produce.

>>> from synthdsl.lang.parse import parse_spec
>>> print(format_spec(parse_spec("synth A input x:[B,4] y=Linear(x,out=2)|>ReLU output y")), end="")
synth A
<BLANKLINE>
input x: [B, 4]
y = Linear(x, out=2) |> ReLU
output y
"""

from __future__ import annotations

import json

from synthdsl.lang import ast


def format_value(value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, ast.Ref):  # a keyword data input: the value's name
        return value.name
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    raise TypeError(f"not a spec literal: {value!r}")


def _kwargs(kwargs) -> list[str]:
    return [f"{k.name}={format_value(k.value)}" for k in kwargs]


def format_index(index: ast.Index | None) -> str:
    if index is None:
        return ""
    if index.item:
        return f"[{index.start}]"
    start = "" if index.start is None else str(index.start)
    stop = "" if index.stop is None else str(index.stop)
    return f"[{start}:{stop}]"


def format_expr(expr: ast.Expr) -> str:
    if isinstance(expr, ast.Ref):
        return expr.name
    if isinstance(expr, ast.Call):
        parts = [format_expr(a) for a in expr.args] + _kwargs(expr.kwargs)
        return ".".join(expr.callee) + format_index(expr.index) + "(" + ", ".join(parts) + ")"
    if isinstance(expr, ast.Pipe):
        stage = ".".join(expr.stage.callee) + format_index(expr.stage.index)
        if expr.stage.kwargs:
            stage += "(" + ", ".join(_kwargs(expr.stage.kwargs)) + ")"
        return f"{format_expr(expr.value)} |> {stage}"
    raise TypeError(f"not an expression: {expr!r}")


def format_dim(dim: ast.Dim) -> str:
    if isinstance(dim, ast.FixedDim):
        return str(dim.size)
    return f"{dim.name}<={dim.max}" if isinstance(dim, ast.BoundedDim) else dim.name


def format_statement(st: ast.Statement) -> str:
    if isinstance(st, ast.InputDecl):
        shape = "[" + ", ".join(format_dim(d) for d in st.shape) + "]"
        return f"input {st.name}: {shape}" + ("" if st.dtype == "float32" else f" {st.dtype}")
    if isinstance(st, ast.SourceDecl):
        args = [json.dumps(st.target)] + _kwargs(st.kwargs)
        return f"source {st.name} = {st.constructor}(" + ", ".join(args) + ")"
    if isinstance(st, ast.Assign):
        return ", ".join(t.name for t in st.targets) + f" = {format_expr(st.value)}"
    if isinstance(st, ast.PolicyStmt):
        return f"policy {st.name} = {format_value(st.value)}"
    if isinstance(st, ast.FreezeStmt):
        return "freeze " + ", ".join(p.text for p in st.patterns)
    if isinstance(st, ast.TrainStmt | ast.OptimizeStmt):
        word = "train" if isinstance(st, ast.TrainStmt) else "optimize"
        text = f"{word} " + ", ".join(p.text for p in st.patterns)
        if st.options:
            text += " with " + ", ".join(_kwargs(st.options))
        return text
    if isinstance(st, ast.AdaptStmt):
        text = "adapt " + ", ".join(p.text for p in st.patterns) + f" with {st.method}"
        return text + "(" + ", ".join(_kwargs(st.options)) + ")"
    if isinstance(st, ast.InheritStmt):
        donor = (".".join(st.donor) if st.file is None
                 else f"{st.constructor}({json.dumps(st.file)})")
        text = f"inherit {'.'.join(st.target)} from {donor}"
        return text + (" with " + ", ".join(_kwargs(st.options)) if st.options else "")
    if isinstance(st, ast.LossStmt):
        parts = [format_expr(a) for a in st.args] + _kwargs(st.options)
        return f"loss {st.kind}(" + ", ".join(parts) + ")"
    if isinstance(st, ast.RecipeStmt):
        return "recipe " + ", ".join(_kwargs(st.options))
    if isinstance(st, ast.OutputStmt):
        return "output " + ", ".join(r.name for r in st.names)
    raise TypeError(f"not a statement: {st!r}")


def format_spec(spec: ast.Spec) -> str:
    lines = [f"synth {spec.name}", ""]
    lines += [format_statement(st) for st in spec.statements]
    return "\n".join(lines) + "\n"
