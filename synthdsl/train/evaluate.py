"""Evaluating a model: `synth eval SPEC|RUN|ARTIFACT --data ...`.

What can be evaluated (:func:`load_model`):

* a ``.synth`` spec, compiled with its sources' weights (``--weights FILE`` loads a
  state dict or a compiled artifact over them);
* a compiled artifact (``.safetensors`` written by ``synth compile -o`` or by a
  training run), rebuilt from the file alone;
* a run folder of ``synth train`` (its ``model.safetensors``; the run's data
  options and preprocessing are the defaults), or one of its checkpoints.

Every output that gives one score per class is evaluated, and so is every member
of an ``Ensemble`` layer: a person sees what each member scores alone and what the
combination adds. Metrics are those of :mod:`synthdsl.train.metrics` (equal to
``sklearn.metrics``).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import fx

from synthdsl.train.data import DataError, ImageData, Preprocess, preprocess_for
from synthdsl.lang.errors import SynthError
from synthdsl.train.metrics import ClassificationMetrics, classification_metrics


class EvalError(SynthError):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__("E001", message, None, hint=hint)


@dataclass
class Loaded:
    """A model ready to evaluate, with the preprocessing and run record that go with it."""

    model: Any
    preprocess: Preprocess
    run: dict[str, Any] | None = None
    description: str = ""


def _read_run(folder: Path) -> dict[str, Any] | None:
    f = folder / "run.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text("utf-8"))
    except ValueError as e:
        raise EvalError(f"'{f}' is not valid JSON: {e}") from e


def _load_weights(model, path: Path) -> None:
    from safetensors.torch import load_file

    from synthdsl.library.sources import read_state_dict

    state = load_file(str(path)) if path.suffix == ".safetensors" else read_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EvalError(f"'{path.name}' does not fit spec '{model.graph.name}': "
                        f"{len(missing)} tensors missing (e.g. {missing[:2]}), "
                        f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")


def load_model(target: str | Path, weights: str | Path | None = None,
               device: str | torch.device = "cpu", seed: int = 0) -> Loaded:
    """The model `target` names: a spec, a compiled artifact, a run folder or a training
    checkpoint (see the module docstring)."""
    from synthdsl.build.artifact import load_compiled

    path = Path(target)
    run = None
    if path.is_dir():
        run = _read_run(path)
        if run is None:
            raise EvalError(f"'{path}' is not a training run (it has no run.json)")
        artifact = path / "model.safetensors"
        if artifact.exists():
            model = load_compiled(artifact)
            desc = f"run {path} ({run.get('spec_name', '?')}, final weights)"
        else:
            from synthdsl.train.checkpoint import checkpoints_in

            found = checkpoints_in(path)
            if not found:
                raise EvalError(f"run '{path}' has neither model.safetensors nor a checkpoint",
                                hint="train it first, or resume it with `synth train --resume`")
            return load_model(found[-1], weights, device, seed)
    elif path.suffix == ".pt":
        from synthdsl.pipeline import compile_spec
        from synthdsl.train.checkpoint import load_checkpoint

        ck = load_checkpoint(path)
        run = _read_run(path.parent.parent)
        if run is None or not run.get("spec"):
            raise EvalError(f"checkpoint '{path}' is not inside a run folder with run.json")
        model = compile_spec(Path(run["spec"]), seed=run["recipe"].get("seed", seed))
        own = dict(model.named_parameters()) | dict(model.named_buffers())
        with torch.no_grad():
            for k, v in ck["model"].items():
                own[k].copy_(v)
        desc = f"checkpoint {path} (epoch {ck['epoch']})"
    elif path.suffix == ".safetensors":
        model = load_compiled(path)
        run = _read_run(path.parent)
        desc = f"compiled artifact {path}"
    elif path.suffix == ".synth":
        from synthdsl.pipeline import compile_spec

        model = compile_spec(path, seed=seed)
        desc = f"spec {path}"
    else:
        raise EvalError(f"cannot evaluate '{target}'",
                        hint="give a .synth spec, a compiled .safetensors artifact, a run "
                        "folder or a checkpoint .pt")
    if weights is not None:
        wp = Path(weights)
        try:
            from synthdsl.build.artifact import read_metadata

            read_metadata(wp)
            model.load_state_dict(load_compiled(wp).state_dict())
        except SynthError:
            _load_weights(model, wp)
        desc += f" with weights {wp}"
    if run and run.get("preprocess"):
        pre = Preprocess.from_dict(run["preprocess"])
    else:
        pre = preprocess_for(model)
    model.to(device).eval()
    return Loaded(model, pre, run, desc)


# -- predictions ------------------------------------------------------------------------------


def graph_with_members(model) -> tuple[fx.GraphModule, dict[str, tuple[str, str]]]:
    """The inference graph with every Ensemble member as an extra output; for each extra
    output, the ensembles it is a member of (comma-separated) and the member's name.
    A member of several ensembles is one output, named after the member (``a``), or
    ``averaged/a`` where that name is taken."""
    from synthdsl.library.layers import Ensemble

    gm = model.graph_module
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out_value = graph.graph_copy(gm.graph, env)
    outputs = dict(out_value) if isinstance(out_value, dict) else {
        model.output_names[0]: out_value}
    members: dict[fx.Node, list[str]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), Ensemble):
            continue
        ens = node.meta.get("synth", {}).get("name", node.name)
        for member in node.args:
            if isinstance(member, fx.Node):
                members.setdefault(member, []).append(ens)
    extra: dict[str, tuple[str, str]] = {}
    taken = set(outputs)
    for member, ensembles in members.items():
        if any(v is env[member] for v in outputs.values()):
            continue  # already an output of its own
        name = member.meta.get("synth", {}).get("name", member.name) or member.name
        key = name if name not in taken else f"{ensembles[0]}/{name}"
        while key in taken:  # a name that is taken both ways: number it
            key = f"{key}'"
        taken.add(key)
        outputs[key] = env[member]
        extra[key] = (", ".join(ensembles), name)
    graph.output(outputs)
    graph.lint()
    return fx.GraphModule(gm, graph, class_name=f"{type(gm).__name__}WithMembers"), extra


@torch.no_grad()
def predict_values(model, data: ImageData, preprocess: Preprocess, batch_size: int = 256,
                   device: str | torch.device = "cpu", names: Sequence[str] | None = None,
                   members: bool = False, dist=None, amp: torch.dtype | None = None
                   ) -> dict[str, torch.Tensor]:
    """Every output (or those in `names`), and with `members` every Ensemble member, for
    each sample of `data` in order, on the CPU. The model runs in eval mode; its mode is
    restored afterwards. Under DDP each process predicts a share and all get the whole."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    gm, _ = graph_with_members(model) if members else (None, {})
    positions = torch.arange(len(data))
    if dist is not None and dist.active:
        positions = positions[dist.rank::dist.world]
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        for i in range(0, len(positions), batch_size):
            pos = positions[i:i + batch_size]
            x = preprocess(data.images(pos).to(device))
            ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
            with ctx:
                out = gm(x) if gm is not None else model(x)
            out = out if isinstance(out, dict) else {model.output_names[0]: out}
            for k, v in out.items():
                if names is not None and k not in names:
                    continue
                if isinstance(v, torch.Tensor):
                    chunks.setdefault(k, []).append(v.float().cpu())
    finally:
        model.train(was_training)
    values = {k: torch.cat(v) for k, v in chunks.items()}
    if dist is not None and dist.active:
        import torch.distributed as tdist

        gathered: list[Any] = [None] * dist.world
        tdist.all_gather_object(gathered, (positions, values))
        full: dict[str, torch.Tensor] = {}
        for pos, vals in gathered:
            for k, v in vals.items():
                if k not in full:
                    full[k] = torch.empty((len(data), *v.shape[1:]), dtype=v.dtype)
                full[k][pos] = v
        values = full
    return values


# -- the report -------------------------------------------------------------------------------


@dataclass
class EvalRow:
    name: str
    role: str                          # "output", or "member of NAME"
    metrics: ClassificationMetrics


@dataclass
class EvalReport:
    target: str
    data: str
    rows: list[EvalRow]
    skipped: list[str] = field(default_factory=list)

    @property
    def primary(self) -> EvalRow:
        return self.rows[0]

    def summary_table(self) -> str:
        width = max(len(r.name) for r in self.rows)
        rw = max(len(r.role) for r in self.rows)
        lines = [f"{'output'.ljust(width)}  {'role'.ljust(rw)}  accuracy  macro-P  macro-R  "
                 "macro-F1"]
        for r in self.rows:
            m = r.metrics
            lines.append(f"{r.name.ljust(width)}  {r.role.ljust(rw)}  {m.accuracy:8.4f}  "
                         f"{m.macro_precision:7.4f}  {m.macro_recall:7.4f}  {m.macro_f1:8.4f}")
        return "\n".join(lines)

    def text(self) -> str:
        parts = [f"{self.target} on {self.data} ({self.primary.metrics.n} images)", "",
                 self.summary_table()]
        for r in self.rows:
            if r.role == "output":
                parts += ["", r.metrics.table(f"-- {r.name} --")]
        if self.skipped:
            parts += ["", "not evaluated: " + "; ".join(self.skipped)]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "data": self.data,
                "results": [{"name": r.name, "role": r.role, **r.metrics.to_dict()}
                            for r in self.rows],
                "skipped": self.skipped}

    def write(self, folder: str | Path) -> list[Path]:
        """metrics.json, report.txt and a confusion-matrix PNG per output and member."""
        from synthdsl.build.artifact import atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "metrics.json", folder / "report.txt"]
        atomic_write_text(written[0], json.dumps(self.to_dict(), indent=2) + "\n")
        atomic_write_text(written[1], self.text() + "\n")
        for r in self.rows:
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in r.name)
            written.append(r.metrics.plot(folder / f"confusion-{safe}.png",
                                          f"{r.name} ({r.role}) on {self.data}"))
        return written


def evaluate(model, data: ImageData, preprocess: Preprocess | None = None,
             batch_size: int = 256, device: str | torch.device = "cpu",
             target: str = "") -> EvalReport:
    """Metrics of every class-score output of `model`, and of every ensemble member."""
    preprocess = preprocess or preprocess_for(model)
    labelled = data.targets >= 0
    if not bool(labelled.any()):
        raise EvalError(f"{data.name} has no labelled samples")
    _, extra = graph_with_members(model)
    values = predict_values(model, data, preprocess, batch_size, device, members=bool(extra))
    rows, skipped = [], []
    names = list(model.output_names) + [k for k in values if k not in model.output_names]
    for name in names:
        v = values.get(name)
        role = "output" if name in model.output_names else f"member of {extra[name][0]}"
        if v is None:
            continue
        if v.dim() != 2 or v.shape[1] != data.num_classes:
            skipped.append(f"'{name}' gives {list(v.shape[1:])} per image, not "
                           f"{data.num_classes} class scores")
            continue
        pred = v.argmax(-1)
        rows.append(EvalRow(name, role, classification_metrics(
            data.targets[labelled], pred[labelled], data.classes)))
    if not rows:
        raise EvalError(f"no output of '{model.graph.name}' gives {data.num_classes} class "
                        f"scores per image: " + "; ".join(skipped),
                        hint="choose the classes the model was trained on with --classes")
    return EvalReport(target or model.graph.name, data.name, rows, skipped)


def data_for(loaded: Loaded, source: str | None, classes: str | None, split: str):
    """The evaluation data: given on the command line, or the run's own (its test split)."""
    from synthdsl.train.data import DataSpec, parse_classes

    run_data = (loaded.run or {}).get("data") or {}
    if source is None and not run_data:
        raise DataError("say what to evaluate on with --data (digits, mnist5k, a folder or "
                        "an .npz file)")
    chosen = parse_classes(classes) if classes else None
    if source is None:
        spec = DataSpec.from_dict(run_data)
        spec = DataSpec(spec.source, tuple(chosen) if chosen else spec.classes)
    else:
        spec = DataSpec(source, tuple(chosen) if chosen else None)
    size = loaded.preprocess.size
    return spec.load(split, size, loaded.preprocess.channels or 3)


# -- `synth eval` ------------------------------------------------------------------------------


def main_eval(args) -> int:
    """`synth eval`: see `synth eval --help`."""
    loaded = load_model(args.file, args.weights, args.device)
    data = data_for(loaded, args.data, args.classes, args.split)
    report = evaluate(loaded.model, data, loaded.preprocess, args.batch_size, args.device,
                      target=str(args.file))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(loaded.description)
        print(report.text())
    if args.output:
        written = report.write(args.output)
        if not args.json:
            print(f"\nwrote {', '.join(str(p) for p in written)}")
    if args.plot:
        report.primary.metrics.plot(args.plot, f"{report.primary.name} on {report.data}")
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


def add_arguments(p) -> None:
    """The options of `synth eval` (for the CLI's parser)."""
    p.add_argument("file", metavar="TARGET", help="a .synth spec, a compiled .safetensors "
                   "artifact, a run folder of `synth train`, or one of its checkpoints")
    p.add_argument("--data", help="digits, mnist5k, a folder or an .npz (default: the run's)")
    p.add_argument("--classes", help="keep these classes, renumbered from 0 (default: the run's)")
    p.add_argument("--split", default="test", choices=("test", "train", "all"))
    p.add_argument("--weights", help="a state dict or compiled artifact to load into a spec")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="write metrics.json, report.txt and confusion PNGs here")
    p.add_argument("--plot", metavar="PNG", help="the first output's confusion matrix")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
