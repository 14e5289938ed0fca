"""Evaluating a model (what `synth eval SPEC|RUN|ARTIFACT --data ...` runs).

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
``sklearn.metrics``). The two values of every ``loss contrastive`` are scored by
retrieval, recall@1 and @5 both ways (:mod:`synthdsl.train.retrieval`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from synthdsl.build.artifact import load_compiled, read_metadata
from synthdsl.files import (WEIGHTS_MAX_BYTES, NotReadable, read_regular, regular_file,
                            write_text)
from synthdsl.lang.errors import SynthError
from synthdsl.library.sources import read_state_dict
from synthdsl.pipeline import compile_spec
from synthdsl.train.checkpoint import checkpoints_in, load_checkpoint, refusal
from synthdsl.train.data import DataSpec, parse_classes
from synthdsl.train.errors import DataError, EvalError
from synthdsl.train.images import ImageData
from synthdsl.train.metrics import ClassificationMetrics, classification_metrics
from synthdsl.train.overrides import checked_with, compiled_with, parse_overrides
from synthdsl.train.predict import graph_with_members, predict_values
from synthdsl.train.captions import tokenizer_folder
from synthdsl.train.feed import Feed, feed_for, read_feed
from synthdsl.train.preprocess import Preprocess
from synthdsl.train.retrieval import RetrievalMetrics, contrastive_pairs, retrieval_of


@dataclass
class Loaded:
    """A model ready to evaluate, with the preprocessing and run record that go with it."""

    model: Any
    preprocess: Preprocess | Feed
    run: dict[str, Any] | None = None
    description: str = ""


#: Most bytes a run's ``run.json`` may have.
RUN_RECORD_MAX_BYTES = 16 * 2**20


def _read_run(folder: Path) -> dict[str, Any] | None:
    f = folder / "run.json"
    if not f.is_file():
        return None
    try:
        run = json.loads(read_regular(f, RUN_RECORD_MAX_BYTES, "run record").decode("utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"cannot read '{f}': {getattr(e, 'strerror', None) or e}") from None
    except (ValueError, RecursionError) as e:
        raise EvalError(f"'{f}' is not valid JSON: {e}") from None
    if problem := run_record_problem(run):
        raise EvalError(f"'{f}' is not a run record: {problem}",
                        hint="point at a folder `synth train` wrote")
    return run


#: The keys of a run record that are read back, and the types they must have.
_RUN_KEYS = {"spec": (str, type(None)), "spec_name": str, "spec_sha256": str,
             "recipe": dict, "preprocess": (dict, type(None)), "data": (dict, type(None)),
             "overrides": list}


def run_record_problem(run: Any) -> str | None:
    """What is wrong with a parsed ``run.json`` for being read back, or None."""
    if not isinstance(run, dict):
        return f"it holds a JSON {type(run).__name__}, not an object"
    for key, kinds in _RUN_KEYS.items():
        if key in run and not isinstance(run[key], kinds):
            return f"its '{key}' is a {type(run[key]).__name__}"
    if not all(isinstance(item, str) for item in run.get("overrides", ())):
        return "its 'overrides' are not all strings"
    return None


def _weights_file(path: Path, what: str) -> None:
    """`path` is a regular file, or E001 says what it is instead (nothing is opened)."""
    try:
        regular_file(path, WEIGHTS_MAX_BYTES, what)
    except FileNotFoundError:
        raise EvalError(f"{what} '{path}' does not exist") from None
    except NotReadable as e:  # a FIFO would block, a device would never end
        raise EvalError(f"cannot read {e}", hint="name a regular file") from None
    except OSError as e:
        raise EvalError(f"cannot read {what} '{path}': {e.strerror or e}") from None


def _load_weights(model, path: Path) -> None:
    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else \
            read_state_dict(path)
    except SynthError:
        raise
    except Exception as e:  # noqa: BLE001 - a foreign or torn file: say so in our words
        raise EvalError(f"cannot read weights '{path}': {refusal(e)}",
                        hint="give a state dict (.safetensors, or a .pt of tensors) or a "
                        "compiled artifact") from None
    _load_state(model, state, path)


def _load_state(model, state: dict, path: Path) -> None:
    """`state` into `model`: every tensor by name and shape, or E001 saying what differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and (not isinstance(state[k], torch.Tensor)
                                                or tuple(state[k].shape) != tuple(own[k].shape))]
    if missing or unexpected or shaped:
        raise EvalError(f"'{path.name}' does not fit spec '{model.graph.name}': "
                        f"{len(missing)} tensors missing (e.g. {missing[:2]}), "
                        f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
                        f"{len(shaped)} of another shape (e.g. {shaped[:2]})")
    model.load_state_dict(state)


def load_model(target: str | Path, weights: str | Path | None = None,
               device: str | torch.device = "cpu", seed: int = 0) -> Loaded:
    """The model `target` names: a spec, a compiled artifact, a run folder or a training
    checkpoint (see the module docstring)."""
    path = Path(target)
    run = None
    if not path.exists():
        raise EvalError(f"cannot evaluate '{target}': no such file or folder",
                        hint="give a .synth spec, a compiled .safetensors artifact, a run "
                        "folder or a checkpoint .pt")
    if weights is not None:
        _weights_file(Path(weights), "weights file")
    if path.is_dir():
        run = _read_run(path)
        if run is None:
            raise EvalError(f"'{path}' is not a training run (it has no run.json)")
        artifact = path / "model.safetensors"
        if artifact.exists():
            model = load_compiled(artifact)
            desc = f"run {path} ({run.get('spec_name', '?')}, final weights)"
        else:
            found = checkpoints_in(path)
            if not found:
                raise EvalError(f"run '{path}' has neither model.safetensors nor a checkpoint",
                                hint="train it first, or resume it with `synth train --resume`")
            return load_model(found[-1], weights, device, seed)
    elif path.suffix == ".pt":
        ck = load_checkpoint(path)
        run = _read_run(path.parent.parent)
        if run is None or not run.get("spec"):
            raise EvalError(f"checkpoint '{path}' is not inside a run folder with run.json")
        spec_file = Path(run["spec"])
        changes = parse_overrides(run.get("overrides", ()))  # the spec as the run trained it
        model = compiled_with(checked_with(spec_file, changes), changes,
                              seed=run["recipe"].get("seed", seed))
        text = model.graph.graph.get("text", "")
        if run.get("spec_sha256") and \
                hashlib.sha256(text.encode()).hexdigest() != run["spec_sha256"]:
            # the spec the run trained, unchanged since: else its checkpoint means nothing
            raise EvalError(f"checkpoint '{path}': the run's spec '{spec_file}' changed since "
                            "the run was trained", hint="evaluate the run's model.safetensors, "
                            "or restore the spec it was trained from")
        own = dict(model.named_parameters()) | dict(model.named_buffers())
        state = ck.get("model") if isinstance(ck, dict) else None
        if not isinstance(state, dict):
            raise EvalError(f"checkpoint '{path}' holds no model state",
                            hint="give a checkpoint `synth train` wrote")
        foreign = [k for k, v in state.items() if k not in own or not isinstance(
            v, torch.Tensor) or tuple(v.shape) != tuple(own[k].shape)]
        if foreign:
            raise EvalError(f"checkpoint '{path}' does not fit spec '{model.graph.name}': "
                            f"{len(foreign)} tensors it lacks or holds in another shape "
                            f"(e.g. {foreign[:2]})")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v)
        desc = f"checkpoint {path} (epoch {ck.get('epoch', '?')})"
    elif path.suffix == ".safetensors":
        model = load_compiled(path)
        run = _read_run(path.parent)
        desc = f"compiled artifact {path}"
    elif path.suffix == ".synth":
        model = compile_spec(path, seed=seed)
        desc = f"spec {path}"
    else:
        raise EvalError(f"cannot evaluate '{target}'",
                        hint="give a .synth spec, a compiled .safetensors artifact, a run "
                        "folder or a checkpoint .pt")
    if weights is not None:
        wp = Path(weights)
        try:  # an artifact is loaded as one, checked against itself (S210 when edited)
            read_metadata(wp)
        except SynthError:
            _load_weights(model, wp)
        else:
            _load_state(model, load_compiled(wp).state_dict(), wp)
        desc += f" with weights {wp}"
    if run and run.get("preprocess"):
        pre = read_feed(run["preprocess"])
    else:
        pre = feed_for(model)
    model.to(device).eval()
    return Loaded(model, pre, run, desc)


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
    retrieval: list[RetrievalMetrics] = field(default_factory=list)

    @property
    def primary(self) -> EvalRow | None:
        return self.rows[0] if self.rows else None

    @property
    def n(self) -> int:
        return self.rows[0].metrics.n if self.rows else self.retrieval[0].n

    def summary_table(self) -> str:
        if not self.rows:
            return ""
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
        parts = [f"{self.target} on {self.data} ({self.n} {'images' if self.rows else 'pairs'})"]
        if self.rows:
            parts += ["", self.summary_table()]
        for r in self.rows:
            if r.role == "output":
                parts += ["", r.metrics.table(f"-- {r.name} --")]
        for m in self.retrieval:
            parts += ["", f"-- retrieval {m.a} <-> {m.b} --", m.table()]
        if self.skipped:
            parts += ["", "not evaluated: " + "; ".join(self.skipped)]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "data": self.data,
                "results": [{"name": r.name, "role": r.role, **r.metrics.to_dict()}
                            for r in self.rows],
                "retrieval": [m.to_dict() for m in self.retrieval],
                "skipped": self.skipped}

    def write(self, folder: str | Path) -> list[Path]:
        """metrics.json, report.txt and a confusion-matrix PNG per output and member."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "metrics.json", folder / "report.txt"]
        write_text(written[0], json.dumps(self.to_dict(), indent=2) + "\n")
        write_text(written[1], self.text() + "\n")
        for r in self.rows:
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in r.name)
            written.append(r.metrics.plot(folder / f"confusion-{safe}.png",
                                          f"{r.name} ({r.role}) on {self.data}"))
        return written


def evaluate(model, data: ImageData, preprocess: Preprocess | None = None,
             batch_size: int = 256, device: str | torch.device = "cpu",
             target: str = "") -> EvalReport:
    """Metrics of every class-score output of `model`, and of every ensemble member."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise EvalError(f"the batch size must be a whole number ≥ 1, not {batch_size!r}")
    preprocess = preprocess or feed_for(model)
    pairs = contrastive_pairs(model.graph)
    retrieval = [retrieval_of(model, data, preprocess, p, batch_size, device) for p in pairs]
    labelled = data.targets >= 0
    if not bool(labelled.any()):
        if retrieval:
            return EvalReport(target or model.graph.name, data.name, [], [], retrieval)
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
    if not rows and retrieval:
        return EvalReport(target or model.graph.name, data.name, [], skipped, retrieval)
    if not rows:
        raise EvalError(f"no output of '{model.graph.name}' gives {data.num_classes} class "
                        f"scores per image: " + "; ".join(skipped),
                        hint="choose the classes the model was trained on with --classes")
    return EvalReport(target or model.graph.name, data.name, rows, skipped, retrieval)


def data_for(loaded: Loaded, source: str | None, classes: str | None, split: str):
    """The evaluation data: given on the command line, or the run's own (its test split)."""
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
    return spec.load_for(split, loaded.preprocess, tokenizer_folder(loaded.model.graph))
