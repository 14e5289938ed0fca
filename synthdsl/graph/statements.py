"""The statements that are not data flow: sources, inheritance, losses and training rules.

:class:`StatementBuilder` is the half of the graph builder that records them:
a source becomes a node (a `spec(...)` source carries the graph of its file, and with
``weights=`` the file of what was trained of it), an ``inherit`` an edge from its donor
plus a record on ``graph["inherits"]``, a ``loss`` a sink node, and
``freeze``/``train``/``adapt``/``recipe``/``policy`` records on the graph (their shapes
are in :mod:`synthdsl.graph.ir`). The data
flow half, and the name table both halves share, is :mod:`synthdsl.graph.build`.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError, did_you_mean
from synthdsl.lang.parse import parse_file, parse_spec
from synthdsl.library.partcheck import PART_METHODS as _PART_METHODS

if TYPE_CHECKING:
    from synthdsl.graph.ir import SynthGraph

#: Constructors of the built-in kinds of source; the kinds a spec may use are those the
#: library registers (`synthdsl.library.sources.SOURCE_KINDS`, :func:`_source_kinds`).
SOURCE_CONSTRUCTORS = ("timm", "torchvision", "spec", "merge", "hf")


MIN_BOUND = 3  #: the smallest bound (`T<=3`): the check runs a symbol at two sizes ≥ 2


def _source_kinds() -> tuple[str, ...]:
    from synthdsl.library.sources import SOURCE_KINDS

    return tuple(SOURCE_KINDS)


def _kind(constructor: str):
    from synthdsl.library.sources import SOURCE_KINDS

    return SOURCE_KINDS.get(constructor)


#: Methods of a source model that a spec may call as parts (the library's list).
PART_METHODS = _PART_METHODS
#: Keyword arguments of `timm(...)` that synthdsl consumes itself.
SOURCE_OPTIONS = ("weights", "pretrained")


#: Most `spec(...)` sources one build makes, counting each import every time a source names
#: it (S008 beyond): imports that fan out (a diamond of specs each importing the next twice)
#: would otherwise take time exponential in their depth.
MAX_IMPORTS = 64
#: The count of spec(...) sources built so far by the outermost build_graph, while it runs.
_IMPORTS_BUILT: ContextVar[list[int] | None] = ContextVar("_IMPORTS_BUILT", default=None)
#: Spec texts to use instead of reading files (a compiled artifact carries its imports).
_SPEC_TEXTS: ContextVar[dict[str, str]] = ContextVar("spec_texts", default={})


@contextlib.contextmanager
def spec_texts(texts: dict[str, str]):
    """Within the block, `spec("...")` sources whose resolved path is a key of `texts`
    are read from it, not from disk."""
    token = _SPEC_TEXTS.set(texts)
    try:
        yield
    finally:
        _SPEC_TEXTS.reset(token)



class StatementBuilder:
    """Sources, inheritance, losses and rules; mixed into the builder, which provides
    `g`, `sources`, `stack`, `error`, `lookup`, `connect` and `build_child`."""

    g: "SynthGraph"
    sources: dict[str, ast.SourceDecl]
    stack: tuple[str, ...]

    def add_source(self, st: ast.SourceDecl) -> None:
        attrs: dict[str, Any] = dict(
            kind="source", name=st.name, span=st.span, inputs=(),
            options={k.name: k.value for k in st.kwargs},
            option_spans={k.name: k.value_span for k in st.kwargs},
            constructor=st.constructor, target=st.target, target_span=st.target_span,
            weights=None, weights_span=None, pretrained=False,
            label=f"{st.constructor}:{st.target}")
        kinds = _source_kinds()
        if st.constructor not in kinds:
            self.error("S201", f"unknown source constructor '{st.constructor}'",
                       st.constructor_span,
                       hint=did_you_mean(st.constructor, kinds)
                       or "sources are made with " + ", ".join(f"{c}(...)" for c in kinds)
                       + "; a plugin may provide more: synth --plugin MODULE ...")
        if st.constructor == "spec":
            self.add_spec_source(st, attrs)
            return
        kind = _kind(st.constructor)
        own = getattr(kind, "own_options", ())  # options the kind reads itself
        weights = st.kwarg("weights") if "weights" not in own else None
        if weights is not None:
            if isinstance(weights.value, str) and kind is not None \
                    and kind.zoo_weights(weights.value):  # `weights="IMAGENET1K_V1"`
                attrs.update(pretrained=True, zoo_weights=weights.value,
                             weights_span=weights.value_span)
            else:
                self.add_weights_file(attrs, weights)
        pretrained = st.kwarg("pretrained")
        if pretrained is not None:
            if not isinstance(pretrained.value, bool):
                self.error("S204", f"pretrained= expects true or false, found "
                           f"{pretrained.value!r}", pretrained.value_span)
            elif pretrained.value and weights is not None:  # a file or a zoo entry
                self.error("S204", "a source takes weights= or pretrained=true, not both",
                           pretrained.span, hint="local weights already say what to load")
            elif attrs.get("zoo_weights"):  # `weights="IMAGENET1K_V1", pretrained=false`
                self.error("S204", f"weights={attrs['zoo_weights']!r} names the zoo's own "
                           "weights, and pretrained=false says not to load any",
                           pretrained.span, hint="drop pretrained=false to load them, or drop "
                           "weights= for a random initialisation")
            else:
                attrs["pretrained"] = pretrained.value
        attrs["create_kwargs"] = {k.name: k.value for k in st.kwargs
                                  if k.name not in SOURCE_OPTIONS or k.name in own}
        attrs["files"] = self.source_files(st)
        if kind is not None:  # what its target names on disk (hf's folder), for the lock
            kind.resolve(attrs, Path(self.g.graph["base_dir"]))
        self.g.add_node(st.name, **attrs)

    def add_weights_file(self, attrs: dict, weights: ast.KwArg) -> None:
        """`weights="..."` naming a local file, resolved from the spec's folder into
        ``weights`` (a run folder of `synth train`: its ``model.safetensors``), its text
        and span; S204 where it is not a path."""
        if not isinstance(weights.value, str) or not weights.value:
            self.error("S204", "weights= expects a path to a .safetensors, .pt or .pth "
                       f"file, found {weights.value!r}", weights.value_span)
            return
        path = Path(weights.value)
        if not path.is_absolute():
            path = Path(self.g.graph["base_dir"]) / path
        if path.is_dir() and (path / "model.safetensors").is_file():
            path = path / "model.safetensors"  # a run of `synth train`: its model
        attrs.update(weights=str(path), weights_text=weights.value,
                     weights_span=weights.value_span)

    def source_files(self, st: ast.SourceDecl) -> list[dict]:
        """The files a kind's path options name (``merge``'s ``base``, ``models``),
        resolved from the spec's folder: option, index in a list (or None), text, path, span."""
        kind = _kind(st.constructor)
        files = []
        for option in getattr(kind, "path_options", ()):
            kw = st.kwarg(option)
            if kw is None:
                continue
            listed = isinstance(kw.value, (list, tuple))
            values = list(kw.value) if listed else [kw.value]
            if not values or not all(isinstance(v, str) and v for v in values):
                self.error("S204", f"{option}= expects a path to a .safetensors, .pt or .pth "
                           "file" + (" or a list of them" if option != "base" else "")
                           + f", found {kw.value!r}", kw.value_span)
                continue
            for i, text in enumerate(values):
                path = Path(text)
                if not path.is_absolute():
                    path = Path(self.g.graph["base_dir"]) / path
                files.append({"option": option, "index": i if listed else None, "text": text,
                              "path": str(path), "span": kw.value_span})
        return files


    def add_spec_source(self, st: ast.SourceDecl, attrs: dict) -> None:
        path = Path(st.target)
        if not path.is_absolute():
            path = Path(self.g.graph["base_dir"]) / path
        path = path.resolve()
        attrs.update(label=f"spec:{st.target}", path_resolved=str(path), graph=None,
                     create_kwargs={})
        for kw in st.kwargs:
            if kw.name == "weights":  # what the user trained of this spec: a run, a file
                self.add_weights_file(attrs, kw)
            else:
                self.error("S204", f"spec(...) takes the path of a .synth file and "
                           f"optionally weights=, not {kw.name}=", kw.span,
                           hint=did_you_mean(kw.name, ("weights",), n=1)
                           or 'weights="PATH" names a run folder of `synth train`, an '
                           "artifact of `synth compile -o`, or a state dict of the spec's "
                           "module")
        override = _SPEC_TEXTS.get().get(str(path))
        built = _IMPORTS_BUILT.get()
        if built is not None:
            built[0] += 1
        if built is not None and built[0] > MAX_IMPORTS:
            self.error("S008", f"the spec and the specs it imports build more than "
                       f"{MAX_IMPORTS} spec(...) sources in all (a spec is built once for "
                       "every source that names it)", st.target_span,
                       hint="import a shared spec once and apply its value again, or "
                       "flatten the imports")
        elif str(path) in self.stack:
            chain = " → ".join(f"'{Path(p).name}'" for p in (*self.stack, str(path)))
            self.error("S110", f"specs import each other in a cycle: {chain}", st.target_span,
                       hint="a spec cannot be built out of itself")
        elif override is None and not path.exists():
            self.error("S203", f"spec file '{st.target}' does not exist", st.target_span,
                       hint="a relative path starts at this spec's own folder")
        else:
            try:
                child_spec = parse_file(path) if override is None else \
                    parse_spec(override, str(path))
                child = self.build_child(child_spec)
            except SynthError as e:
                self.g.diagnostics.append(e)
            else:
                attrs["graph"] = child
                attrs["outputs"] = list(child.graph.get("output_names", []))
                # the child's own problems are reported by the check, in the child's file
        self.g.add_node(st.name, **attrs)


    def add_inherit(self, st: ast.InheritStmt) -> None:
        """An inheritance edge: from a module of a source, or a checkpoint, to a value's module."""
        inherits = self.g.graph.setdefault("inherits", [])
        record = {"index": len(inherits), "span": st.span, "target_span": st.target_span,
                  "donor_span": st.donor_span, "sub": st.target[1:],
                  "options": {k.name: k.value for k in st.options},
                  "option_spans": {k.name: k.value_span for k in st.options}}
        # the longest prefix that names a node (`h.0` in `h = Linear(...) |> ReLU`), else
        # the value named by the first segment; what follows is a path inside its module
        prefix = next((k for k in range(len(st.target), 0, -1)
                       if ".".join(st.target[:k]) in self.g
                       and self.g.nodes[".".join(st.target[:k])]["kind"] in ("part", "layer")),
                      None)
        if prefix is not None:
            target = ".".join(st.target[:prefix])
            record["sub"] = st.target[prefix:]
        else:
            target = self.lookup(ast.Ref(name=st.target[0], span=st.target_span))
        while target is not None and self.g.nodes[target]["kind"] == "item":
            target = self.g.nodes[target]["inputs"][0]
        if st.file is not None:
            if st.constructor != "checkpoint":
                self.error("S201", f"unknown weights donor '{st.constructor}'", st.donor_span,
                           hint="inherit from a module of a source (r18.fc) or from "
                                'checkpoint("file")')
                return
            path = Path(st.file)
            if not path.is_absolute():
                path = Path(self.g.graph["base_dir"]) / path
            donor = f"checkpoint:{st.file}"
            if donor not in self.g:
                self.g.add_node(donor, kind="checkpoint", name=st.file,
                                label=f"checkpoint:{st.file}", span=st.donor_span, inputs=(),
                                options={}, option_spans={}, weights=str(path),
                                weights_text=st.file, weights_span=st.donor_span)
            record.update(donor=donor, donor_path=())
        else:
            head = st.donor[0]
            if head not in self.sources:
                self.error("S101", f"unknown source '{head}'", st.donor_span,
                           hint=did_you_mean(head, self.sources)
                           or 'inherit from a module of a source, or from checkpoint("file")')
                return
            record.update(donor=head, donor_path=st.donor[1:])
        if target is None:
            return
        record["target"] = target
        inherits.append(record)
        donor = record["donor"]
        if self.g.has_edge(donor, target):
            edge = self.g.edges[donor, target]
            edge.setdefault("statements", []).append(record["index"])
            edge["kind"] = "inherit"
        else:
            self.g.add_edge(donor, target, kind="inherit", statements=[record["index"]])


    def add_loss(self, st: ast.LossStmt) -> None:
        """A loss is a sink of the graph, like an output that only training reads."""
        losses = self.g.graph.setdefault("losses", [])
        node_id = f"loss:{len(losses)}"
        inputs = []
        for a in st.args:
            if isinstance(a, ast.Ref):
                inputs.append(self.lookup(a))
            else:
                inputs.append(None)
                self.error("S402", "a loss takes names of values", a.span,
                           hint="name the value first: `v = ...`, then `loss ...(v)`")
        self.g.add_node(node_id, kind="loss", name=st.kind, label=f"loss {st.kind}",
                        span=st.span, kind_span=st.kind_span, inputs=tuple(inputs),
                        arg_spans=tuple(a.span for a in st.args),
                        options={k.name: k.value for k in st.options},
                        option_spans={k.name: k.value_span for k in st.options})
        self.connect(inputs, node_id)
        losses.append({"node": node_id, "kind": st.kind, "inputs": [a.name for a in st.args],
                       "options": {k.name: k.value for k in st.options}})


    def add_rule(self, st: ast.FreezeStmt | ast.TrainStmt | ast.OptimizeStmt | ast.AdaptStmt
                 ) -> None:
        """A `freeze`, `train`, `optimize` or `adapt` statement, kept in order on
        graph["rules"]."""
        if isinstance(st, ast.AdaptStmt):
            self.g.graph["rules"].append({
                "action": "adapt", "method": st.method, "method_span": st.method_span,
                "patterns": [(p.text, p.span) for p in st.patterns],
                "options": {k.name: k.value for k in st.options},
                "option_spans": {k.name: k.value_span for k in st.options},
                "span": st.span})
            return
        self.g.graph["rules"].append({
            "action": ("freeze" if isinstance(st, ast.FreezeStmt) else
                       "optimize" if isinstance(st, ast.OptimizeStmt) else "train"),
            "patterns": [(p.text, p.span) for p in st.patterns],
            "options": {k.name: k.value for k in getattr(st, "options", ())},
            "option_spans": {k.name: k.span for k in getattr(st, "options", ())},
            "span": st.span})

    def add_recipe(self, st: ast.RecipeStmt) -> None:
        recipe = self.g.graph.setdefault("recipe", {})
        spans = self.g.graph.setdefault("recipe_spans", {})
        for k in st.options:
            if k.name in recipe:
                self.error("S102", f"recipe option '{k.name}' is given twice", k.span,
                           notes=[f"first given at {spans[k.name]}"])
            recipe[k.name] = k.value
            spans[k.name] = k.value_span

    def add_policy(self, st: ast.PolicyStmt) -> None:
        self.g.graph.setdefault("policies", {})[st.name] = {
            "value": st.value, "span": st.span, "value_span": st.value_span}

    def add_bound(self, d: ast.BoundedDim) -> None:
        """`T<=512`: the largest size of a symbolic dimension, for every input it is in."""
        bounds = self.g.graph.setdefault("dim_bounds", {})
        spans = self.g.graph.setdefault("dim_bound_spans", {})
        if d.max < MIN_BOUND:
            self.error("S007", f"{d.name}<={d.max} is too small a bound: the check runs each "
                       f"symbolic dimension at two sizes of at least 2, so a bound is "
                       f"{MIN_BOUND} or more", d.span, hint="fix the dimension to its size")
        elif d.name in bounds and bounds[d.name] != d.max:
            self.error("S102", f"symbolic dimension '{d.name}' is bounded twice, "
                       f"<={bounds[d.name]} and <={d.max}", d.span,
                       notes=[f"first bounded at {spans[d.name]}"],
                       hint="bound it once: the bound holds wherever the symbol is used")
        else:
            bounds.setdefault(d.name, d.max)
            spans.setdefault(d.name, d.span)
