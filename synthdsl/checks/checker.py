"""Check a SynthGraph before any weight is read: names, cycles, sources, shapes, training sets.

Shapes are found by running every node on the ``meta`` device: sources are
built there (no memory, no weights), symbolic dimensions get a probe size, and
each failure becomes a diagnostic at the spec line that caused it. Every
independent problem is collected and raised once.

>>> from synthdsl.lang.parse import parse_spec
>>> from synthdsl.graph import build_graph
>>> g = check_graph(build_graph(parse_spec(
...     "synth A input x: [B, 8] h = Linear(x, out=4) |> ReLU output h")))
>>> g.nodes["h.0"]["shape"], g.nodes["h.0"]["params"]
(('B', 4), 36)
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any, Iterable

import networkx as nx
import torch
from torch import nn

from synthdsl.lang.errors import Collector, SynthError, SynthErrors, did_you_mean
from synthdsl.graph import SynthGraph
from synthdsl.library.layers import LAYERS, LayerArgError
from synthdsl.library.ops import OPS
from synthdsl.library.parts import PartError, PartPlan, UsedTensors, plan_part
from synthdsl.library.sources import check_arch, check_weights, create_timm

#: Probe sizes for symbolic dimensions: large primes no real layer size is likely to equal.
_PROBES = (9973, 9967, 9949, 9941, 9931, 9929, 9923, 9907)
#: Options a `train ... with` statement takes.
#: Named behaviours a spec can choose with `policy NAME = "value"` (first is the default).
POLICIES = {"norm": ("follow", "frozen", "train")}
#: Adapters `adapt ... with METHOD(...)` can add, and their options.
ADAPT_METHODS = {"lora": ("rank", "alpha"), "bias": ()}
#: What a `recipe` may say: option -> (types, check, description).
RECIPE = {
    "epochs": ((int,), lambda v: v > 0, "a whole number > 0"),
    "lr": ((int, float), lambda v: v > 0, "a number > 0"),
    "batch_size": ((int,), lambda v: v > 0, "a whole number > 0"),
    "optimizer": ((str,), lambda v: v in ("adamw", "adam", "sgd"), '"adamw", "adam" or "sgd"'),
    "schedule": ((str,), lambda v: v in ("cosine", "constant", "step"),
                 '"cosine", "constant" or "step"'),
    "weight_decay": ((int, float), lambda v: v >= 0, "a number ≥ 0"),
    "momentum": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "warmup_epochs": ((int,), lambda v: v >= 0, "a whole number ≥ 0"),
    "label_smoothing": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "seed": ((int,), lambda v: True, "a whole number"),
    # how images are read (synthdsl.train.data.preprocess_for), not how to optimise
    "mean": ((int, float, list, tuple), lambda v: _numbers(v, lambda x: True),
             "a number or a list of numbers, one per input channel"),
    "std": ((int, float, list, tuple), lambda v: _numbers(v, lambda x: x > 0),
            "a number > 0 or a list of them, one per input channel"),
    "normalize": ((bool,), lambda v: True, "true or false"),
}


def _numbers(value, ok) -> bool:
    """A number, or a non-empty list of numbers, each passing `ok`."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return bool(values) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                and ok(x) for x in values)


#: The terms a `loss` statement can add: name -> (number of values, options).
LOSSES = {"ce": (1, {"label_smoothing": "a number in [0, 1)", "weight": "a number ≥ 0"}),
          "distill": (2, {"temperature": "a number > 0", "alpha": "a number in [0, 1]"}),
          "feature": (2, {"weight": "a number ≥ 0"})}
TRAIN_OPTIONS = {"lr_mult": "a learning-rate multiplier (≥ 0)",
                 "weight_decay": "a weight decay (≥ 0) for these parameters"}


def is_norm(m: nn.Module) -> bool:
    """A normalisation layer: torch's, or one of timm's (BatchNormAct2d, LayerNorm2d, ...)."""
    return isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                          nn.LocalResponseNorm)) or type(m).__name__.endswith(("Norm", "Norm2d",
                                                                                "NormAct2d"))


def fmt_shape(shape: Iterable) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def pattern_matches(name: str, pattern: str) -> bool:
    """A glob over qualified names; a pattern naming a module covers everything below it."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


class _Checker:
    def __init__(self, g: SynthGraph, weights: bool = True) -> None:
        self.g = g
        self.weights = weights  # False: a compiled artifact carries the tensors
        self.errors = Collector()
        self.warnings: list[SynthError] = []
        for d in g.diagnostics:
            self.errors.add(d)
        symbols = sorted({d for n in g.of_kind("input") for d in g.nodes[n]["dims"]
                          if isinstance(d, str)})
        self.probes = dict(zip(symbols, _PROBES))
        self.symbol_of = {v: k for k, v in self.probes.items()}
        self.models: dict[str, nn.Module] = {}
        self.children: dict[str, SynthGraph] = {}   # spec sources, checked
        self.plans: dict[str, PartPlan] = {}        # part node -> its plan (on meta)
        self.layers: dict[str, nn.Module] = {}      # layer node -> its module (on meta)
        self.meta_layers: dict[tuple, nn.Module] = {}   # distinct layer -> its meta module
        self.meta_outputs: dict[tuple, tuple] = {}      # distinct run -> (shape, dtype)
        self.used_by: dict[str, str] = {}           # parameter name -> first part using it
        self.values: dict[str, Any] = {}
        self.broken: set[str] = set()

    def err(self, code: str, message: str, span, hint=None, notes=()) -> None:
        self.errors.add(SynthError(code, message, span, hint, notes))

    def shape_of(self, t: torch.Tensor) -> tuple:
        return tuple(self.symbol_of.get(int(d), int(d)) for d in t.shape)

    # -- structure ---------------------------------------------------------------

    def cycles(self) -> None:
        data = nx.DiGraph((u, v) for u, v, k in self.g.edges(data="kind")
                          if k in ("data", "share"))
        for cycle in sorted(nx.simple_cycles(data), key=sorted):
            # start at the value written first, so the message is the same on every run
            i = min(range(len(cycle)), key=lambda k: self.g.nodes[cycle[k]]["span"].start)
            cycle = cycle[i:] + cycle[:i]
            names = [self.g.nodes[n]["name"] for n in cycle]
            chain = " → ".join(f"'{n}'" for n in (*names, names[0]))
            first = cycle[0]
            self.err("S104", f"cycle: {chain}", self.g.nodes[first]["span"],
                     hint="a value cannot depend on itself; feed it from an earlier value")
            self.broken.update(cycle)

    def sources(self) -> None:
        for s in self.g.of_kind("source"):
            node = self.g.nodes[s]
            if node["constructor"] == "spec":
                self.spec_source(s, node)
                continue
            if node["constructor"] != "timm":
                self.broken.add(s)
                continue
            if e := check_arch(node):
                self.errors.add(e)
                self.broken.add(s)
                continue
            try:
                model = create_timm(node["target"], node["create_kwargs"], "meta")
            except Exception as e:  # noqa: BLE001 - timm rejects the user's options
                opts = ", ".join(f"{k}={v!r}" for k, v in node["create_kwargs"].items())
                self.err("S204", f"timm cannot build '{node['target']}'"
                         + (f" with {opts}" if opts else ""), node["span"],
                         notes=[f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"])
                self.broken.add(s)
                continue
            self.models[s] = model
            node["params"] = sum(p.numel() for p in model.parameters())
            if node.get("weights") and self.weights and (e := check_weights(node, model)):
                self.errors.add(e)

    def spec_source(self, s: str, node) -> None:
        child = node.get("graph")
        if child is None:
            self.broken.add(s)
            return
        check_graph(child, raise_errors=False, weights=self.weights)
        for e in child.graph["errors"]:
            self.errors.add(e)
        if child.graph["errors"]:
            self.broken.add(s)
            return
        self.children[s] = child
        node["params"] = sum(_all_parameters(child).values())

    # -- shapes ------------------------------------------------------------------

    def run(self) -> None:
        for n in self.g.topological_order():
            node = self.g.nodes[n]
            kind = node["kind"]
            if kind in ("source", "checkpoint"):
                continue
            if n in self.broken or node.get("invalid") or any(i is None or i not in self.values for i in node["inputs"]):
                self.broken.add(n)
                continue
            args = [self.values[i] for i in node["inputs"]]
            try:
                out = getattr(self, f"run_{kind}")(n, node, args)
            except SynthError as e:
                self.errors.add(e)
                self.broken.add(n)
                continue
            except _Broken:
                self.broken.add(n)
                continue
            try:
                self.unpacked(n, node, out)
            except SynthError as e:
                self.errors.add(e)
                self.broken.add(n)
                continue
            self.values[n] = out
            if isinstance(out, tuple):
                node["shapes"] = tuple(self.shape_of(t) for t in out)
            else:
                node["shape"] = self.shape_of(out)
        for u, v in self.g.data_edges():
            if "shape" in self.g.nodes[u]:
                self.g.edges[u, v]["shape"] = self.g.nodes[u]["shape"]

    def unpacked(self, n: str, node, out) -> None:
        """A call that gives several values is unpacked into exactly as many names."""
        if node["kind"] in ("item", "output", "loss"):
            return
        count = len(out) if isinstance(out, tuple) else 1
        want = node.get("unpack", 1)
        if count == want:
            return
        if want == 1:
            names = ", ".join(f"{node['name']}{i}" for i in range(count))
            raise SynthError("S108", f"'{node['label']}' gives {count} values; unpack them "
                             "into as many names", node["span"], hint=f"{names} = ...")
        raise SynthError("S108", f"'{node['label']}' gives {count} value"
                         f"{'s' if count != 1 else ''}, but {want} names receive them",
                         node["span"])

    def run_loss(self, n, node, args):
        kind = node["name"]
        if kind not in LOSSES:
            raise SynthError("S402", f"unknown loss '{kind}'", node["kind_span"],
                             hint=did_you_mean(kind, LOSSES) or "losses: " + ", ".join(LOSSES))
        count, allowed = LOSSES[kind]
        if len(args) != count:
            raise SynthError("S402", f"loss {kind} takes {count} value{'s' if count > 1 else ''},"
                             f" found {len(args)}", node["span"])
        for key, value in node["options"].items():
            if key not in allowed:
                raise SynthError("S402", f"loss {kind} has no option '{key}'",
                                 node["option_spans"][key],
                                 hint=did_you_mean(key, allowed) or "its options: "
                                 + ", ".join(allowed))
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                    or (key in ("alpha",) and value > 1) \
                    or (key == "label_smoothing" and value >= 1) \
                    or (key == "temperature" and value == 0):
                raise SynthError("S402", f"loss {kind} option '{key}' expects "
                                 f"{allowed[key]}, found {value!r}", node["option_spans"][key])
        if any(not isinstance(a, torch.Tensor) for a in args):
            raise SynthError("S302", f"loss {kind} takes tensors", node["span"])
        if kind == "ce" and args[0].dim() != 2:
            raise SynthError("S301", f"loss ce takes class scores [B, classes]; "
                             f"{self.describe(node['inputs'][0])} is "
                             f"{fmt_shape(self.shape_of(args[0]))}", node["span"])
        if count == 2 and args[0].shape != args[1].shape:
            raise SynthError("S301", f"loss {kind} compares two values of one shape: "
                             f"{self.describe(node['inputs'][0])} is "
                             f"{fmt_shape(self.shape_of(args[0]))}, "
                             f"{self.describe(node['inputs'][1])} is "
                             f"{fmt_shape(self.shape_of(args[1]))}", node["span"],
                             hint="add an adapter layer (e.g. Linear) to match them")
        return args[0]

    def inheritance(self) -> None:
        """Every `inherit` statement mapped tensor by tensor, with shapes, before any read."""
        from synthdsl.library.weights import ADAPT_MODES, persistent_tensors, transform

        modules = self.all_modules()
        for rec in self.g.graph.get("inherits", []):
            opts, spans = rec["options"], rec["option_spans"]
            bad = next((k for k in opts if k not in INHERIT_OPTIONS), None)
            if bad is not None:
                self.err("S402", f"inherit has no option '{bad}'", spans[bad],
                         hint=did_you_mean(bad, INHERIT_OPTIONS)
                         or "its options: " + ", ".join(INHERIT_OPTIONS))
                continue
            problem = _inherit_option_problem(opts, ADAPT_MODES)
            if problem:
                key, msg = problem
                self.err("S402", msg, spans.get(key, rec["span"]))
                continue
            target = rec["target"]
            tnode = self.g.nodes[target]
            if tnode["kind"] not in ("part", "layer") or tnode.get("shares"):
                self.err("S208", f"'{tnode['name']}' is made by {tnode['kind']} "
                         f"'{tnode['label']}'; only parts and new layers inherit tensors",
                         rec["target_span"])
                continue
            if target in self.broken or rec["donor"] in self.broken:
                continue
            tpath = ".".join((tnode["module"], *rec["sub"]))
            tmod = modules.get(tpath)
            if tmod is None:
                self.err("S202", f"'{tnode['name']}' has no submodule "
                         f"'{'.'.join(rec['sub'])}'", rec["target_span"],
                         hint=did_you_mean(tpath, modules))
                continue
            targets = {n: tuple(t.shape) for n, t, _ in persistent_tensors(tmod)}
            donor = self.donor_tensors(rec)
            if donor is None:
                continue
            if opts.get("map") == "order" and str(self.g.nodes[rec["donor"]].get(
                    "weights", "")).endswith(".safetensors") \
                    and self.g.nodes[rec["donor"]]["kind"] == "checkpoint":
                self.err("S207", "a safetensors file does not keep the order of its tensors, so "
                         "it cannot be mapped by order", spans["map"],
                         hint="map it by name with rename=[...], or use the .pt/.pth file")
                continue
            strip = ".".join(rec["donor_path"]) + "." if rec["donor_path"] else ""
            mapping, problems, skipped = _map_tensors(targets, donor, opts, strip)
            mapped = []
            for tname, key in mapping:
                meta = torch.empty(donor[key], device="meta")
                try:
                    out, done = transform(meta, targets[tname], opts.get("rows"),
                                          opts.get("adapt"), opts.get("prefix_tokens"))
                except (IndexError, ValueError, RuntimeError) as e:
                    problems.append(f"'{key}' {list(donor[key])} cannot become "
                                    f"'{tpath}.{tname}' {list(targets[tname])}: {e}")
                    continue
                if tuple(out.shape) != targets[tname]:
                    problems.append(f"'{key}' has shape {list(donor[key])}"
                                    + (f" ({', '.join(done)}: {list(out.shape)})"
                                       if done != ["copy"] else "")
                                    + f", '{tpath}.{tname}' has {list(targets[tname])}")
                    continue
                mapped.append({"target": f"{tpath}.{tname}", "key": key,
                               "transform": ", ".join(done), "numel": out.numel()})
            strict = opts.get("strict", True)
            if problems or (strict and skipped):
                what = rec.get("donor_label") or self.donor_label(rec)
                notes = problems + skipped
                self.err("S207", f"'{tpath}' cannot inherit from {what}"
                         + ("" if problems else " strictly"), rec["span"],
                         notes=notes[:12] + ([f"... and {len(notes) - 12} more"]
                                             if len(notes) > 12 else []),
                         hint=None if problems else "say strict=false to copy what fits and "
                         "list the rest, or map names with map=\"order\" / rename=[...]")
                continue
            if skipped:
                self.warnings.append(SynthError(
                    "W002", f"'{tpath}' inherits {len(mapped)} tensors from "
                    f"{self.donor_label(rec)}; {len(skipped)} skipped (strict=false)",
                    rec["span"], notes=skipped[:12], severity="warning"))
            rec.update(mapping=mapped, skipped=skipped, target_path=tpath,
                       mode="strict" if strict else "partial",
                       donor_label=self.donor_label(rec))
            edge = self.g.edges[rec["donor"], target]
            edge["tensors"] = edge.get("tensors", 0) + len(mapped)
            edge["params"] = edge.get("params", 0) + sum(m["numel"] for m in mapped)
            edge["mode"] = "partial" if not strict or edge.get("mode") == "partial" else "strict"

    def donor_label(self, rec) -> str:
        if rec["donor"].startswith("checkpoint:"):
            return f"checkpoint '{self.g.nodes[rec['donor']]['weights_text']}'"
        return "'" + ".".join((rec["donor"], *rec["donor_path"])) + "'"

    def donor_tensors(self, rec) -> dict[str, tuple[int, ...]] | None:
        """Keys (as the donor's weights name them) and shapes of what the donor offers."""
        from synthdsl.library.sources import checkpoint_shapes
        from synthdsl.library.weights import persistent_tensors

        node = self.g.nodes[rec["donor"]]
        if node["kind"] == "checkpoint":
            path = Path(node["weights"])
            if not path.exists():
                self.err("S203", f"checkpoint '{node['weights_text']}' does not exist",
                         rec["donor_span"], hint="a relative path starts at the spec's folder")
                return None
            try:
                return checkpoint_shapes(path)
            except Exception as e:  # noqa: BLE001 - the user's file
                self.err("S203", f"cannot read checkpoint '{node['weights_text']}': "
                         f"{_reason(e)}", rec["donor_span"])
                return None
        model = self.models.get(rec["donor"])
        if model is not None:  # a fresh instance: a stage cut may have pruned the part's
            model = create_timm(node["target"], node["create_kwargs"], "meta")
        if model is None:
            if node.get("constructor") == "spec":
                self.err("S208", "inherit from a module of a timm source or a checkpoint; "
                         f"'{rec['donor']}' is a spec", rec["donor_span"])
            return None
        path = ".".join(rec["donor_path"])
        try:
            module = model.get_submodule(path) if path else model
        except AttributeError:
            self.err("S202", f"'{rec['donor']}' has no submodule '{path}'", rec["donor_span"],
                     hint=did_you_mean(path, dict(model.named_modules())))
            return None
        prefix = f"{path}." if path else ""
        return {prefix + n: tuple(t.shape) for n, t, _ in persistent_tensors(module)}

    def recipe(self) -> None:
        recipe = self.g.graph.get("recipe", {})
        spans = self.g.graph.get("recipe_spans", {})
        for key, value in recipe.items():
            if key not in RECIPE:
                self.err("S402", f"recipe has no option '{key}'", spans[key],
                         hint=did_you_mean(key, RECIPE) or "its options: " + ", ".join(RECIPE))
                continue
            types, ok, what = RECIPE[key]
            if (isinstance(value, bool) and bool not in types) or not isinstance(
                    value, types) or not ok(value):
                self.err("S402", f"recipe option '{key}' expects {what}, found {value!r}",
                         spans[key])
        stated = {k: v for k, v in recipe.items() if k in ("mean", "std")}
        if len(stated) == 1:
            (key, _), = stated.items()
            other = "std" if key == "mean" else "mean"
            self.err("S402", f"recipe gives '{key}' without '{other}': the images are "
                     f"normalised with both or with neither", spans[key],
                     hint=f"add {other}=..., or drop {key}")
        if stated and recipe.get("normalize") is False:
            self.err("S402", "recipe says normalize=false and also gives "
                     f"{' and '.join(stated)}: expected one or the other",
                     spans["normalize"], hint="drop normalize=false, or the mean and std")
        # one number, or one per channel of the image input (a [B, C, H, W] input)
        images = [self.g.nodes[n]["dims"] for n in self.g.of_kind("input")
                  if len(self.g.nodes[n]["dims"]) == 4]
        channels = images[0][1] if len(images) == 1 and isinstance(images[0][1], int) else None
        lengths = {k: len(v) if isinstance(v, (list, tuple)) else 1 for k, v in stated.items()}
        if channels is not None:
            for key, n in lengths.items():
                if n not in (1, channels):
                    self.err("S402", f"recipe gives {n} values of '{key}'; expected one per "
                             f"channel of the image input ({channels}), or a single number",
                             spans[key])
        elif len(lengths) == 2 and 1 not in lengths.values() and \
                lengths["mean"] != lengths["std"]:
            self.err("S402", f"recipe gives {lengths['mean']} means and {lengths['std']} stds; "
                     "expected the same number of each, or a single number", spans["std"])

    def run_item(self, n, node, args):
        return args[0][node["item"]]

    def describe(self, n: str) -> str:
        """How the spec spells a value: its name, or the call that makes it if it has none."""
        node = self.g.nodes[n]
        if n == node["name"] or node["kind"] == "input":
            return f"'{node['name']}'"
        return f"{node['label']}(...)"

    def described_inputs(self, node) -> list[str]:
        return [f"input {i + 1} {self.describe(src)} has shape "
                f"{fmt_shape(self.g.nodes[src]['shape'])}" for i, src in enumerate(node["inputs"])]

    def run_input(self, n, node, args) -> torch.Tensor:
        dims = [self.probes[d] if isinstance(d, str) else d for d in node["dims"]]
        return torch.empty(dims, device="meta")

    def run_output(self, n, node, args) -> torch.Tensor:
        return args[0]

    def run_part(self, n, node, args):
        if node["source"] in self.children:
            return self.run_spec_part(n, node, args)
        if node["source"] not in self.models:
            raise _Broken  # the source's own problem is reported already
        shared = node.get("shares")
        if shared is not None:
            if shared not in self.plans:
                raise _Broken
            plan = self.plans[shared]
        else:
            model = self.models[node["source"]]
            users = [p for p in self.g.successors(node["source"])
                     if self.g.nodes[p]["kind"] == "part" and not self.g.nodes[p].get("shares")]
            try:
                plan = plan_part(model, node, exclusive=len(users) == 1)
            except PartError as e:
                span = node["option_spans"].get(e.option, node["callee_span"]) \
                    if e.option else node["callee_span"]
                code = "S402" if e.option and "no option" in str(e) else "S202"
                raise SynthError(code, str(e), span, hint=e.hint) from None
            except Exception as e:  # noqa: BLE001 - tracing the model failed
                raise SynthError("S303", f"'{node['source']}' cannot be cut here",
                                 node["span"], notes=[_torch_reason(e)],
                                 hint="cut at another node, or use a submodule part") from None
            self.plans[n] = plan
            self.record_params(n, plan.modules)
        recorder = UsedTensors()
        try:
            with torch.no_grad(), recorder:
                out = plan.call(*args)
        except Exception as e:  # noqa: BLE001 - the part rejects its input
            module = next(iter(plan.modules.values()))
            raise self.input_mismatch(node, module, args, e) from None
        if isinstance(out, (list, tuple)) and plan.outputs == len(out) \
                and all(isinstance(t, torch.Tensor) for t in out):
            out = out[0] if len(out) == 1 else tuple(out)
        elif not isinstance(out, torch.Tensor):
            raise SynthError("S302", f"part '{node['label']}' returns {type(out).__name__}, "
                             "not a tensor", node["span"],
                             hint="take a part that returns one tensor, or cut it with at=")
        if shared is None:
            self.claim(n, node, recorder.ids)
        return out

    def claim(self, n: str, node, ids: set[int]) -> None:
        """Record the parameters a part really uses; a second use of one is an error."""
        model = self.models[node["source"]]
        used = [f"{node['source']}.{k}" for k, p in model.named_parameters()
                if id(p) in ids]
        node["used"] = used
        for name in used:
            first = self.used_by.setdefault(name, n)
            if first != n:
                other = self.g.nodes[first]
                raise SynthError(
                    "S109", f"part '{node['label']}' uses parameters that '{other['name']}' "
                    f"({other['label']}, line {other['span'].line}) already uses, e.g. '{name}'",
                    node["span"],
                    hint=f"to share them, apply the first value again: `... = "
                    f"{other['name']}(...)`; to use a copy, declare a second source")

    def run_spec_part(self, n, node, args):
        child = self.children[node["source"]]
        inputs = child.inputs
        if len(args) != len(inputs):
            raise SynthError("S301", f"spec '{child.name}' takes {len(inputs)} input"
                             f"{'s' if len(inputs) != 1 else ''} "
                             f"({', '.join(inputs)}), found {len(args)}", node["span"])
        bound: dict[str, int] = {}
        for name, a in zip(inputs, args):
            dims = child.nodes[name]["dims"]
            shape = tuple(a.shape)
            ok = len(dims) == len(shape)
            for d, v in zip(dims, shape) if ok else ():
                if isinstance(d, str):
                    ok = bound.setdefault(d, v) == v
                else:
                    ok = d == v
                if not ok:
                    break
            if not ok:
                raise SynthError("S301", f"spec '{child.name}' expects input '{name}' of shape "
                                 f"{fmt_shape(dims)}, found {fmt_shape(self.shape_of(a))}",
                                 node["span"], notes=self.described_inputs(node))
        params = _all_parameters(child)
        if node.get("shares") is not None:
            params = {}
        node["parameters"] = {f"{node['source']}.{k}": v for k, v in params.items()}
        node["buffers"] = {f"{node['source']}.{k}": v for k, v in _all_buffers(child).items()
                           if params}
        node["params"] = sum(params.values())
        if node.get("shares") is None:
            for name in node["parameters"]:
                first = self.used_by.setdefault(name, n)
                if first != n:
                    raise SynthError("S109", f"spec '{node['source']}' is already used by "
                                     f"'{self.g.nodes[first]['name']}'", node["span"],
                                     hint="to share it, apply the first value again")
        child_syms = child.graph.get("symbols", {})
        outs = []
        for o in child.outputs:
            shape = child.nodes[o]["shape"]
            outs.append(torch.empty([bound.get(d, child_syms.get(d)) if isinstance(d, str)
                                     else d for d in shape], device="meta"))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def input_mismatch(self, node, module: nn.Module, args, e: Exception) -> SynthError:
        """Name both sides: what the part's first layer expects, what flows in."""
        notes = self.described_inputs(node)
        first = next(((k, m) for k, m in module.named_modules()
                      if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        if first is not None and len(args) == 1:
            path, layer = first
            where = f"{node['module']}.{path}" if path else node["module"]
            shape, src = args[0].shape, self.describe(node["inputs"][0]).strip("'")
            if isinstance(layer, nn.Conv2d) and len(shape) == 4 \
                    and shape[1] != layer.in_channels:
                return SynthError(
                    "S301", f"part '{node['label']}' expects {layer.in_channels} input channels "
                    f"but '{src}' has {shape[1]}", node["span"],
                    notes=[*notes, f"its first layer '{where}' is {layer}"],
                    hint=f"declare '{src}' with {layer.in_channels} channels, or build the "
                    f"source with in_chans={shape[1]}")
            if isinstance(layer, nn.Linear) and shape[-1] != layer.in_features:
                return SynthError(
                    "S301", f"part '{node['label']}' expects {layer.in_features} input "
                    f"features but '{src}' has {shape[-1]}", node["span"],
                    notes=[*notes, f"its first layer '{where}' is {layer}"])
        return SynthError("S301", f"part '{node['label']}' cannot take its input",
                          node["span"], notes=[*notes, _torch_reason(e)])

    def run_layer(self, n, node, args) -> torch.Tensor:
        spec = LAYERS[node["layer"]]
        shared = node.get("shares")
        if shared is not None:
            if shared not in self.layers:
                raise _Broken
            node["build"] = self.g.nodes[shared]["build"]
            try:
                with torch.no_grad():
                    return self.layers[shared](*args)
            except Exception as e:  # noqa: BLE001
                raise SynthError("S301", f"'{self.g.nodes[shared]['name']}' applied again "
                                 "cannot take this input", node["span"],
                                 notes=[*self.described_inputs(node), _torch_reason(e)]) from None
        shapes = [tuple(a.shape) for a in args]
        try:
            build = spec.constructor_args(shapes, node["options"])
        except LayerArgError as e:
            span = node["option_spans"].get(e.option, node["span"]) if e.option else node["span"]
            code = "S402" if e.option or "option" in str(e) else "S301"
            raise SynthError(code, str(e), span, hint=e.hint,
                             notes=self.described_inputs(node) if code == "S301" else ()) from None
        node["build"] = build
        # one meta module per distinct layer, and one meta run per distinct input: a spec
        # of thousands of nodes has few distinct ones, and meta kernels dominate the check
        key = (spec.name, tuple(sorted(build.items(), key=lambda kv: kv[0])))
        try:
            module = self.meta_layers.get(key)
            if module is None:
                with torch.device("meta"):
                    module = self.meta_layers[key] = spec.build(**build)
        except TypeError:  # an unhashable option value: no sharing
            with torch.device("meta"):
                module = spec.build(**build)
        except Exception as e:  # noqa: BLE001
            raise SynthError("S402", f"{spec.name} cannot be built with these options",
                             node["span"], notes=[_torch_reason(e)]) from None
        self.layers[n] = module
        self.record_params(n, {node["module"]: module})
        return self.run_cached(key, module, args, lambda e: SynthError(
            "S301", f"{spec.name} cannot take its input", node["span"],
            notes=[*self.described_inputs(node), _torch_reason(e)]))

    def run_cached(self, key, fn, args, error):
        """`fn(*args)` on meta tensors, remembered by `key` and the inputs' shapes."""
        sig = (key, tuple((tuple(a.shape), a.dtype) for a in args))
        try:
            hit = self.meta_outputs.get(sig)
        except TypeError:
            hit, sig = None, None
        if hit is not None:
            return torch.empty(hit[0], dtype=hit[1], device="meta")
        try:
            with torch.no_grad():
                out = fn(*args)
        except Exception as e:  # noqa: BLE001
            raise error(e) from None
        if sig is not None and isinstance(out, torch.Tensor):
            self.meta_outputs[sig] = (tuple(out.shape), out.dtype)
        return out

    def run_op(self, n, node, args) -> torch.Tensor:
        spec = OPS[node["op"]]
        if bad := spec.check_options(node["options"]):
            msg, option = bad
            raise SynthError("S402", msg, node["option_spans"].get(option, node["span"]))
        if msg := spec.check([self.shape_of(a) for a in args], node["options"],
                             [self.describe(i) for i in node["inputs"]]):
            raise SynthError("S301", msg, node["span"], notes=self.described_inputs(node))
        options = {**spec.defaults(), **node["options"]}
        return self.run_cached(
            ("op", spec.name, tuple(sorted(options.items()))),
            lambda *a: spec.fn(*a, **options), args,
            lambda e: SynthError("S301", f"{spec.name} cannot take its inputs", node["span"],
                                 notes=[*self.described_inputs(node), _torch_reason(e)]))

    def record_params(self, n: str, modules: dict[str, nn.Module]) -> None:
        """The parameters and buffers a node installs, by qualified name."""
        node = self.g.nodes[n]
        node["parameters"] = {f"{path}.{k}": p.numel() for path, m in modules.items()
                              for k, p in m.named_parameters()}
        node["buffers"] = {f"{path}.{k}": b.numel() for path, m in modules.items()
                           for k, b in m.named_buffers()}
        node["params"] = sum(node["parameters"].values())

    # -- training sets -----------------------------------------------------------

    def training(self) -> None:
        names: dict[str, int] = {}
        for n in self.g.nodes:
            node = self.g.nodes[n]
            names.update(node.get("parameters", {}))
            names.update(node.get("buffers", {}))
        frozen = dict.fromkeys(names, False)
        options: dict[str, dict[str, Any]] = {}
        for s, child in self.children.items():  # a spec source brings its own training sets
            for k in child.graph.get("frozen", ()):
                if f"{s}.{k}" in frozen:
                    frozen[f"{s}.{k}"] = True
            for k, opt in child.graph.get("param_options", {}).items():
                if f"{s}.{k}" in frozen:
                    options[f"{s}.{k}"] = dict(opt)
        prefixes = sorted({".".join(k.split(".")[:i]) for k in names
                           for i in range(1, k.count(".") + 1)})
        adapted = self.adapters(names)
        for rule in self.g.graph["rules"]:
            if rule["action"] == "adapt":
                for k, v in adapted.get(id(rule), {}).items():
                    frozen[k] = v
                    options.pop(k, None) if v else None
                continue
            for key, value in rule["options"].items():
                span = rule["option_spans"][key]
                if key not in TRAIN_OPTIONS:
                    self.err("S402", f"train has no option '{key}'", span,
                             hint=did_you_mean(key, TRAIN_OPTIONS)
                             or "its options: " + ", ".join(TRAIN_OPTIONS))
                elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    self.err("S402", f"train option '{key}' expects {TRAIN_OPTIONS[key]}, "
                             f"found {value!r}", span)
            for pattern, span in rule["patterns"]:
                matched = self.match_at(pattern, names, span)
                if matched is None:
                    continue
                if not matched:
                    if self.may_name_broken(pattern):
                        continue  # the names of a broken part are unknown; do not guess
                    hint = did_you_mean(pattern.rstrip(".*"), prefixes)
                    self.err("S401", f"{rule['action']} pattern '{pattern}' matches no "
                             "parameter", span,
                             hint=hint or "patterns match qualified names such as "
                             + ", ".join(f"'{p}'" for p in list(prefixes)[:3]))
                for k in matched:
                    frozen[k] = rule["action"] == "freeze"
                    if rule["action"] == "train" and rule["options"]:
                        options.setdefault(k, {}).update(rule["options"])
                    elif rule["action"] == "freeze":
                        options.pop(k, None)
        policy = self.g.graph.get("policies", {}).get("norm", {}).get("value")
        if policy in ("frozen", "train"):
            for k in self.norm_tensors(buffers_only=policy == "train"):
                if k in frozen:
                    frozen[k] = policy == "frozen"
        self.g.graph["frozen"] = sorted(k for k, v in frozen.items() if v)
        self.g.graph["param_options"] = {k: options[k] for k in sorted(options)}
        frozen_set = set(self.g.graph["frozen"])
        for n in self.g.nodes:
            node = self.g.nodes[n]
            if "parameters" in node:
                node["frozen_params"] = sum(v for k, v in node["parameters"].items()
                                            if k in frozen_set)
                node["trainable_params"] = node["params"] - node["frozen_params"]

    def all_modules(self) -> dict[str, nn.Module]:
        """Every installed module (on meta), by qualified name."""
        roots = {p: m for plan in self.plans.values() for p, m in plan.modules.items()}
        roots.update({self.g.nodes[n]["module"]: m for n, m in self.layers.items()})
        out = {}
        for path, module in roots.items():
            for name, m in module.named_modules():
                out[f"{path}.{name}" if name else path] = m
        return out

    def adapters(self, names: dict[str, int]) -> dict[int, dict[str, bool]]:
        """Resolve `adapt` statements: the adapter parameters they add (now part of `names`)
        and, per statement, which tensors it freezes (True) or trains (False)."""
        from synthdsl.library.peft import ADAPTABLE, lora_shapes

        effects: dict[int, dict[str, bool]] = {}
        resolved = []
        modules = None
        for rule in self.g.graph["rules"]:
            if rule["action"] != "adapt":
                continue
            method, opts = rule["method"], rule["options"]
            if method not in ADAPT_METHODS:
                self.err("S402", f"unknown adapter '{method}'", rule["method_span"],
                         hint=did_you_mean(method, ADAPT_METHODS)
                         or "adapters: " + ", ".join(ADAPT_METHODS))
                continue
            allowed = ADAPT_METHODS[method]
            bad = next((k for k in opts if k not in allowed), None)
            if bad is not None:
                self.err("S402", f"{method} has no option '{bad}'", rule["option_spans"][bad],
                         hint=did_you_mean(bad, allowed) or (
                             "its options: " + ", ".join(allowed) if allowed else
                             "it takes no options"))
                continue
            rank, alpha = opts.get("rank", 8), opts.get("alpha", opts.get("rank", 8))
            if method == "lora" and not (isinstance(rank, int) and not isinstance(rank, bool)
                                         and rank > 0):
                self.err("S402", f"lora rank expects a whole number > 0, found {rank!r}",
                         rule["option_spans"].get("rank", rule["span"]))
                continue
            if method == "lora" and (isinstance(alpha, bool) or not isinstance(alpha, int | float)
                                     or alpha <= 0):
                self.err("S402", f"lora alpha expects a number > 0, found {alpha!r}",
                         rule["option_spans"].get("alpha", rule["span"]))
                continue
            effect: dict[str, bool] = {}
            for pattern, span in rule["patterns"]:
                matched = self.match_at(pattern, names, span)
                if matched is None:
                    continue
                if method == "bias":
                    if not any(k.endswith(".bias") for k in matched):
                        self.err("S401", f"adapt pattern '{pattern}' matches no bias", span)
                    effect.update({k: not k.endswith(".bias") for k in matched})
                    continue
                modules = modules if modules is not None else self.all_modules()
                targets = sorted({k.rsplit(".", 1)[0] for k in matched if k.endswith(".weight")
                                  and isinstance(modules.get(k.rsplit(".", 1)[0]), ADAPTABLE)})
                if not targets:
                    self.err("S401", f"adapt pattern '{pattern}' matches no Linear or Conv2d "
                             "layer", span, hint="LoRA adapts Linear and Conv2d layers")
                    continue
                for t in targets:
                    try:
                        shapes = lora_shapes(modules[t], rank)
                    except ValueError as e:
                        self.err("S402", f"cannot adapt '{t}': {e}", span)
                        continue
                    for pname, shape in shapes.items():
                        numel = 1
                        for d in shape:
                            numel *= d
                        names[f"{t}.{pname}"] = numel
                        effect[f"{t}.{pname}"] = False
                        self.own(t, f"{t}.{pname}", numel)
                    for k in (f"{t}.weight", f"{t}.bias"):
                        if k in names:
                            effect[k] = True
                    resolved.append({"module": t, "method": "lora", "rank": rank,
                                     "alpha": alpha})
            effects[id(rule)] = effect
        self.g.graph["adapters"] = resolved
        return effects

    def own(self, module: str, name: str, numel: int) -> None:
        """Attribute a new tensor (an adapter's) to the node that installs `module`."""
        for n in self.g.nodes:
            node = self.g.nodes[n]
            if f"{module}.weight" in node.get("parameters", {}):
                node["parameters"][name] = numel
                node["params"] += numel
                return

    def may_name_broken(self, pattern: str) -> bool:
        """Whether a pattern could name tensors of a node the check could not build."""
        heads = set()
        for n in self.broken:
            node = self.g.nodes[n]
            if node["kind"] == "source":
                heads.add(n)
            elif node["kind"] in ("part", "layer", "apply") or node.get("invalid"):
                heads.add(node.get("source") or node.get("module") or n)
        head = pattern.split("@")[0]
        return any(fnmatch.fnmatchcase(h, head.split(".")[0]) or h.startswith(head)
                   for h in {h.split(".")[0] for h in heads})

    def norm_tensors(self, buffers_only: bool = False) -> set[str]:
        """Qualified names of the tensors of every normalisation layer in the model."""
        modules = {p: m for plan in self.plans.values() for p, m in plan.modules.items()}
        modules.update({self.g.nodes[n]["module"]: m for n, m in self.layers.items()})
        out = set()
        for path, module in modules.items():
            for name, m in module.named_modules():
                if is_norm(m):
                    prefix = f"{path}.{name}" if name else path
                    tensors = [] if buffers_only else [k for k, _ in
                                                       m.named_parameters(recurse=False)]
                    tensors += [k for k, _ in m.named_buffers(recurse=False)]
                    out.update(f"{prefix}.{k}" for k in tensors)
        return out

    def match_at(self, pattern: str, names: Iterable[str], span) -> list[str] | None:
        """`match`, with a pattern's own problem reported at its span (then None)."""
        try:
            return self.match(pattern, names)
        except SynthError as e:
            self.errors.add(SynthError(e.code, e.message, span, e.hint))
            return None

    def match(self, pattern: str, names: Iterable[str]) -> list[str]:
        """Names a freeze/train pattern selects: a glob, a value's name, or `source@stageN`."""
        if pattern in self.g and self.g.nodes[pattern]["kind"] in ("part", "layer"):
            return sorted(set(self.g.nodes[pattern].get("parameters", {}))
                          | set(self.g.nodes[pattern].get("buffers", {})))
        if "@" in pattern:
            return self.match_stage(pattern, names)
        return [k for k in names if pattern_matches(k, pattern)]

    def match_stage(self, pattern: str, names: Iterable[str]) -> list[str]:
        """`r50@stage2`: the modules of timm feature stage 2 (and what runs between stages)."""
        from synthdsl.library.parts import feature_info

        source, _, stage = pattern.partition("@")
        model = self.models.get(source)
        if model is None:
            raise SynthError("S401", f"'{source}' in '{pattern}' is not a timm source",
                             hint=did_you_mean(source, self.models))
        info = feature_info(model)
        if not stage.startswith("stage") or not stage[5:].isdigit() \
                or int(stage[5:]) >= len(info):
            raise SynthError("S401", f"'{pattern}' names no stage: '{source}' has stages "
                             f"{source}@stage0 to {source}@stage{len(info) - 1}",
                             hint="stages follow timm's feature_info: " + ", ".join(
                                 f"{i}={d.get('module')}" for i, d in enumerate(info)))
        k = int(stage[5:])
        # a stage is every top-level module from after the previous stage's module to its own
        order = list(model._modules)
        ends = [order.index(d["module"].split(".")[0]) for d in info
                if d["module"].split(".")[0] in order]
        if len(ends) != len(info):
            raise SynthError("S401", f"the stages of '{source}' are not whole modules; freeze "
                             "them by name instead")
        tops = order[(ends[k - 1] + 1 if k else 0):ends[k] + 1]
        nested = info[k]["module"].split(".")
        if len(nested) > 1:  # stages inside one container, e.g. `stages.2` or `blocks.3`
            tops = [info[k]["module"]]
            prev = info[k - 1]["module"] if k else None
            if k == 0 or prev.split(".")[0] != nested[0]:
                tops = [m for m in order[:ends[k]]
                        if k == 0 or order.index(m) > ends[k - 1]] + tops
        prefixes = [f"{source}.{t}" for t in tops]
        return [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]

    def policies(self) -> None:
        policies = self.g.graph.get("policies", {})
        for name, p in policies.items():
            if name not in POLICIES:
                self.err("S402", f"unknown policy '{name}'", p["span"],
                         hint=did_you_mean(name, POLICIES) or "policies: " + ", ".join(POLICIES))
            elif p["value"] not in POLICIES[name]:
                self.err("S402", f"policy {name} takes " + ", ".join(
                    f'"{v}"' for v in POLICIES[name]) + f", found {p['value']!r}",
                    p["value_span"])
        self.g.graph["norm_policy"] = policies.get("norm", {}).get("value", "follow") \
            if policies.get("norm", {}).get("value") in POLICIES["norm"] else "follow"

    def unused(self) -> None:
        used = set()
        for o in [*self.g.outputs, *self.g.of_kind("loss")]:
            used |= nx.ancestors(self.g, o) | {o}
        for n in self.g.topological_order():
            node = self.g.nodes[n]
            if n not in used and node["kind"] not in ("output", "loss"):
                what = "source" if node["kind"] == "source" else "value"
                self.warnings.append(SynthError(
                    "W001", f"{what} '{node['name']}' does not reach any output", node["span"],
                    severity="warning", hint="remove it, or output it"))


class _Broken(Exception):
    """A node that cannot be checked because something it needs is already reported."""


#: What an `inherit ... with` statement may say.
INHERIT_OPTIONS = ("map", "rename", "rows", "adapt", "strict", "prefix_tokens")


def _inherit_option_problem(opts: dict, adapt_modes) -> tuple[str, str] | None:
    if "map" in opts and opts["map"] not in ("name", "order"):
        return "map", f'inherit map= is "name" or "order", found {opts["map"]!r}'
    if "rename" in opts:
        r = opts["rename"]
        if not isinstance(r, tuple) or len(r) % 2 or not all(isinstance(x, str) for x in r):
            return "rename", ("inherit rename= takes pairs of strings: "
                              '[\"regex\", \"replacement\", ...]')
        for pat in r[::2]:
            try:
                re.compile(pat)
            except re.error as e:
                return "rename", f"inherit rename= pattern {pat!r} is not a regular expression: {e}"
    if "rows" in opts:
        r = opts["rows"]
        ok = (isinstance(r, int) and not isinstance(r, bool) and r > 0) or (
            isinstance(r, tuple) and r and all(isinstance(i, int) and not isinstance(i, bool)
                                               for i in r))
        if not ok:
            return "rows", ("inherit rows= takes a count (the first N rows) or a list of row "
                            f"indices, found {r!r}")
    if "adapt" in opts and opts["adapt"] not in adapt_modes:
        return "adapt", ("inherit adapt= is one of " + ", ".join(f'"{m}"' for m in adapt_modes)
                         + f", found {opts['adapt']!r}")
    if "strict" in opts and not isinstance(opts["strict"], bool):
        return "strict", f"inherit strict= is true or false, found {opts['strict']!r}"
    if "prefix_tokens" in opts and not (isinstance(opts["prefix_tokens"], int)
                                        and opts["prefix_tokens"] >= 0):
        return "prefix_tokens", "inherit prefix_tokens= is a whole number ≥ 0"
    return None


def _map_tensors(targets: dict[str, tuple], donor: dict[str, tuple], opts: dict,
                 strip: str = "") -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Pair target tensors (local names) with donor keys: by name (after `rename`) or by
    order. Returns the pairs, count problems, and what is left unpaired on either side."""
    renamed: dict[str, str] = {}
    pairs = list(opts.get("rename", ()))
    for key in donor:
        name = key[len(strip):] if strip and key.startswith(strip) else key
        for pat, rep in zip(pairs[::2], pairs[1::2]):
            if re.fullmatch(pat, key):
                name = re.sub(pat, rep, key, count=1)
                break
        renamed[name] = key
    if opts.get("map", "name") == "order":
        tkeys, dkeys = list(targets), list(donor)
        n = min(len(tkeys), len(dkeys))
        mapping = list(zip(tkeys[:n], dkeys[:n]))
        skipped = [f"'{k}' of the target has no counterpart (map by order)" for k in tkeys[n:]]
        skipped += [f"'{k}' of the donor is not used (map by order)" for k in dkeys[n:]]
        return mapping, [], skipped
    mapping = [(t, renamed[t]) for t in targets if t in renamed]
    used = {k for _, k in mapping}
    skipped = [f"'{t}' of the target is not in the donor" for t in targets if t not in renamed]
    skipped += [f"'{k}' of the donor is not used" for k in donor if k not in used]
    return mapping, [], skipped


def _reason(e: Exception) -> str:
    from synthdsl.library.sources import _reason as reason

    return reason(e)


def _all_parameters(g: SynthGraph) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in g.nodes:
        out.update(g.nodes[n].get("parameters", {}))
    return out


def _all_buffers(g: SynthGraph) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in g.nodes:
        out.update(g.nodes[n].get("buffers", {}))
    return out


def _torch_reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:400] if text else ''}"


def check_graph(graph: SynthGraph, raise_errors: bool = True,
                weights: bool = True) -> SynthGraph:
    """Annotate `graph` with shapes, parameter counts and the training set; raise on errors.

    With ``raise_errors=False`` the problems are left on ``graph.graph["errors"]``
    instead, so a broken spec can still be summarised and drawn. With
    ``weights=False`` checkpoints are not consulted (a compiled artifact brings its
    own tensors), and inheritance edges are not mapped.
    """
    c = _Checker(graph, weights)
    c.cycles()
    c.sources()
    c.run()
    if weights:
        c.inheritance()
    c.policies()
    c.training()
    c.recipe()
    if not c.errors.errors:  # with errors, "unused" is mostly their echo
        c.unused()
    graph.graph["errors"] = SynthErrors(c.errors.errors).errors if c.errors.errors else []
    graph.graph["warnings"] = c.warnings
    graph.graph["symbols"] = dict(c.probes)
    graph.graph["checked"] = True
    for n in c.broken:
        graph.nodes[n]["broken"] = True
    if raise_errors and c.errors.errors:
        raise SynthErrors(c.errors.errors)
    return graph
