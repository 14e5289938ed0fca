"""Export: a compiled module as a file to deploy, ONNX or a torch.export program, checked.

:func:`export_model` exports a module in eval mode with the spec's symbolic dimensions
dynamic (one ``torch.export.Dim`` per symbol, however many inputs share it: ``B`` of
``input image: [B, 3, 32, 32]``), named as the spec names its inputs and outputs. Then it
loads what it wrote (onnxruntime for ``.onnx``, ``torch.export.load`` for ``.pt2``) and
runs it on example inputs at two batch sizes (and, for symbols other than a batch size,
at twice their example size), against the module itself: the largest ``|diff|`` of each
output is measured, and one beyond the tolerance is X002. The file goes
to a temporary name and is renamed into place only when the comparison passes, so a failed
export leaves nothing behind.

An operation the exporter refuses (Python control flow on a tensor's values, a conversion to
a Python number, an op ONNX cannot express) is X001 naming the spec's node and its line.

>>> from synthdsl.pipeline import compile_spec
>>> model = compile_spec("synth A input x: [B, 4] input y: [B, 4] z = add(x, y) output z")
>>> {n: {a: d.__name__ for a, d in axes.items()} for n, axes in dynamic_shapes(model).items()}
{'x': {0: 'B'}, 'y': {0: 'B'}}
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from synthdsl.build.module import SynthModule, spec_node_at, spec_node_of
from synthdsl.files import atomic_path
from synthdsl.lang.errors import SynthError

#: The formats, by the suffix of the file written.
FORMATS = {".onnx": "onnx", ".pt2": "pt2"}
#: The batch sizes the exported file is compared at: the example it was traced with, and a
#: second one that shows the batch dimension is dynamic.
BATCHES = (2, 3)
#: The largest |diff| between the exported file's outputs and the module's that passes.
ATOL = 1e-4
#: What installs the ONNX exporter and runtime.
EXTRA = "pip install synthdsl[export]"
#: The packages that extra brings, by what they are imported as.
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


class ExportError(SynthError):
    """A module that cannot be exported as asked (X001), or whose exported file computes
    other outputs than the module does (X002)."""

    def __init__(self, message: str, hint: str | None = None, code: str = "X001",
                 span=None) -> None:
        super().__init__(code, message, span, hint=hint)


@dataclass(frozen=True)
class Comparison:
    """The exported file against the module on one batch of example inputs."""

    #: the size of every symbolic dimension in this batch
    sizes: dict[str, int]
    #: the largest |exported - module| of each output, by output name
    diffs: dict[str, float]

    @property
    def max_diff(self) -> float:
        return max(self.diffs.values(), default=0.0)


@dataclass(frozen=True)
class Exported:
    """What :func:`export_model` wrote, and what the comparison measured."""

    path: str
    format: str
    #: input name -> its shape as the spec spells it (symbols by name)
    inputs: dict[str, list]
    outputs: list[str]
    #: symbol -> the ``input:axis`` places it is dynamic at
    dynamic: dict[str, list[str]]
    atol: float
    comparisons: list[Comparison] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    #: the weights are in ``NAME.data`` beside the ONNX file (its bytes counted in `bytes`)
    external: bool = False

    @property
    def max_diff(self) -> float:
        return max((c.max_diff for c in self.comparisons), default=0.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["max_diff"] = self.max_diff
        return data


def export_format(path: str | os.PathLike) -> str:
    """``onnx`` or ``pt2``, from the suffix of `path`; X001 for any other."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ExportError(f"cannot tell the export format of '{path}': expected a file "
                          "ending in .onnx (ONNX) or .pt2 (a torch.export program), found "
                          f"'{Path(path).suffix or 'no suffix'}'",
                          hint="name the output model.onnx or model.pt2")
    return fmt


def require_onnx() -> None:
    """X001 naming the extra when the ONNX exporter or runtime is not installed."""
    import importlib.util

    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise ExportError(f"exporting to ONNX needs {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed",
                          hint=f"{EXTRA} (or export a torch.export program: -o model.pt2)")


def symbol_axes(model: SynthModule) -> dict[str, list[tuple[str, int]]]:
    """Every symbolic dimension of the spec's inputs, with the (input, axis) places it is at."""
    axes: dict[str, list[tuple[str, int]]] = {}
    for n in model.input_names:
        for i, d in enumerate(model.graph.nodes[n]["dims"]):
            if isinstance(d, str):
                axes.setdefault(d, []).append((n, i))
    return axes


def dynamic_shapes(model: SynthModule) -> dict[str, dict[int, Any]]:
    """torch.export's ``dynamic_shapes`` by input name: one ``Dim`` per symbol, named by it
    (a bounded symbol, ``T<=512``, with that largest size)."""
    bounds = model.graph.graph.get("dim_bounds", {})
    dims = {s: torch.export.Dim(s, max=bounds[s]) if s in bounds else torch.export.Dim(s)
            for s in symbol_axes(model)}
    out: dict[str, dict[int, Any]] = {n: {} for n in model.input_names}
    for s, places in symbol_axes(model).items():
        for n, i in places:
            out[n][i] = dims[s]
    return out


def example_batch(model: SynthModule, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example inputs at batch size `batch` (ids below every Embedding's size, masks 0/1;
    other symbols at the sizes the check ran the whole graph with)."""
    return model.example_inputs(batch_size=batch, seed=seed)


def _sizes(model: SynthModule, inputs: tuple[torch.Tensor, ...]) -> dict[str, int]:
    found = dict(zip(model.input_names, inputs))
    return {s: int(found[n].shape[i]) for s, ((n, i), *_) in symbol_axes(model).items()}


# -- tracing -------------------------------------------------------------------------

def trace(model: SynthModule, example: tuple[torch.Tensor, ...]):
    """The ``torch.export`` program of `model` (in eval mode) for inputs like `example`,
    with every symbolic dimension dynamic; X001 naming the spec's node where it fails."""
    try:
        with torch.no_grad(), _quiet():
            return torch.export.export(model, example, dynamic_shapes=dynamic_shapes(model))
    except Exception as e:  # noqa: BLE001 - the exporter's refusal, in the spec's words
        raise _refused(model, e, "torch.export") from e


def _refused(model: SynthModule, error: BaseException, exporter: str,
             node: dict | None = None) -> ExportError:
    node = node or _spec_node_in(model, error)
    span = model.graph.nodes[node["node"]].get("span") if node is not None and node.get(
        "node") in model.graph else None
    where = f"spec '{model.graph.name}'" if node is None else (
        f"'{node['name']}' ({node['kind']})" + ("" if span is not None else
                                                 f" at {node['span']}"))
    return ExportError(f"{exporter} cannot export {where}: {_reason(error)}", span=span,
                       hint="an operation the exporter cannot trace (Python control flow on "
                       "a tensor's values, a conversion to a Python number or to numpy) or "
                       "express; compute it another way, or export the rest of the spec")


def _spec_node_in(model: SynthModule, error: BaseException) -> dict | None:
    """The spec node whose generated line raised `error` or an error it was raised from."""
    for e in _chain(error):
        node = spec_node_of(model.graph_module, e)
        if node is not None:
            return node
    return None


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and the errors it was raised from, outermost first."""
    found: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and all(e is not f for f in found):
        found.append(e)
        e = e.__cause__ or e.__context__
    return found


def _reason(error: BaseException) -> str:
    """The first line of the innermost error: the exporter's own words for what failed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(_chain(error)[-1])).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()),
                type(_chain(error)[-1]).__name__)
    return line if len(line) <= 300 else line[:297] + "..."


#: torch's loggers that narrate a failed trace (the whole graph, as a warning) on stderr.
_CHATTY = ("torch.fx.experimental.symbolic_shapes", "torch.export", "torch._export",
           "torch.onnx")


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines kept off stdout (``--json`` prints only JSON), and their
    narration of a failed trace (the partial graph, on ``sys.stderr`` or straight to file
    descriptor 2) off stderr: the error says what failed and where. ``SYNTH_TRACEBACK=1`` lets both through."""
    if os.environ.get("SYNTH_TRACEBACK"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink, contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


# -- writing and running each format -------------------------------------------------

def write_pt2(program, path: Path) -> None:
    """The program saved with ``torch.export.save`` (through a file object: `path` is a
    temporary name, which torch would warn does not end in ``.pt2``)."""
    with open(path, "wb") as f:
        torch.export.save(program, f)


def run_pt2(path: Path, model: SynthModule) -> Callable[..., Any]:
    """The program saved at `path`, loaded back, to call like `model`."""
    with open(path, "rb") as f:
        module = torch.export.load(f).module()
    return lambda *inputs: module(*inputs)


def write_onnx(program, model: SynthModule, path: Path, external: bool = False) -> None:
    """The program converted to ONNX: inputs and outputs named as the spec names them, every
    dynamic axis named by its symbol; with `external`, the weights in ``NAME.data`` beside
    it (ONNX's external data: a protobuf file holds at most 2 GiB)."""
    try:
        with _quiet():
            onnx_program = torch.onnx.export(program, (), None, dynamo=True, verbose=False,
                                             input_names=list(model.input_names),
                                             output_names=list(model.output_names))
    except Exception as e:  # noqa: BLE001 - an op ONNX cannot express
        raise _refused(model, e, "the ONNX exporter", _onnx_node(model, program, e)) from e
    graph_inputs = {v.name: v for v in onnx_program.model.graph.inputs}
    rename = {}
    for s, places in symbol_axes(model).items():
        for n, i in places:
            if n in graph_inputs:
                rename[graph_inputs[n].shape[i]] = s
    onnx_program.rename_axes(rename)
    with _quiet():
        onnx_program.save(str(path), external_data=external)


def _onnx_node(model: SynthModule, program, error: BaseException) -> dict | None:
    """The spec node of the program's node that the ONNX exporter names in `error`."""
    text = "\n".join(str(e) for e in _chain(error))
    named = set(re.findall(r"translating node %(\w+)", text))
    gm = model.graph_module
    filename = type(gm).forward.__code__.co_filename
    for node in program.graph.nodes:
        if node.name in named:
            for m in re.finditer(rf'File "{re.escape(filename)}", line (\d+)',
                                 node.meta.get("stack_trace") or ""):
                found = spec_node_at(gm, int(m.group(1)))
                if found is not None:
                    return found
    return None


def run_onnx(path: Path, model: SynthModule) -> Callable[..., Any]:
    """The ONNX model at `path` under onnxruntime, to call like `model`: its outputs by name."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(*inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = dict(zip(model.input_names, inputs))
        values = session.run(outputs, {n: feed[n].cpu().numpy() for n in names if n in feed})
        return {n: torch.from_numpy(v) for n, v in zip(outputs, values)}

    return run


WRITERS = {"pt2": (lambda program, model, path: write_pt2(program, path), run_pt2),
           "onnx": (write_onnx, run_onnx)}


# -- the comparison ------------------------------------------------------------------

def _named(model: SynthModule, out) -> dict[str, torch.Tensor]:
    if isinstance(out, dict):
        return {str(k): v for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return dict(zip(model.output_names, out))
    return {model.output_names[0]: out}


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest |a - b| (inf for other shapes; NaN where both are NaN counts as equal)."""
    if tuple(a.shape) != tuple(b.shape):
        return float("inf")
    if a.numel() == 0:
        return 0.0
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    diff = (a - b).abs()
    diff = torch.where(torch.isnan(a) & torch.isnan(b), torch.zeros_like(diff), diff)
    diff = torch.where((a == b), torch.zeros_like(diff), diff)  # equal infinities
    return float("inf") if torch.isnan(diff).any() else float(diff.max())


def check_sizes(model: SynthModule, batches: tuple[int, ...] = BATCHES) -> list[dict[str, int]]:
    """The sizes each comparison runs at, as keyword arguments of ``example_inputs``: each
    batch size of `batches` with the other symbols (``H``, ``T``) at their example sizes,
    then, where the spec has such symbols, the first batch with them doubled (a size that
    keeps what the example size divides by), or at their bound where doubling passes it."""
    from synthdsl.checks.probes import probed

    dims = dict(probed(model.graph).example_dims)
    bounds = model.graph.graph.get("dim_bounds", {})
    sizes = [{"batch_size": b, **dims} for b in batches]
    if dims:
        sizes.append({"batch_size": batches[0], **{
            s: 2 * v if 2 * v <= bounds.get(s, 2 * v) else bounds[s] if bounds[s] != v
            else v - 1 for s, v in dims.items()}})
    return sizes


def compare(model: SynthModule, run: Callable[..., Any],
            batches: tuple[int, ...] = BATCHES) -> list[Comparison]:
    """The exported program `run` against `model` at each of :func:`check_sizes`; doubled
    sizes the module itself does not run at (a position embedding of fixed length) are not
    compared."""
    found = []
    for k, sizes in enumerate(check_sizes(model, batches)):
        inputs = model.example_inputs(seed=k, **sizes)
        with torch.no_grad():
            try:
                want = _named(model, model(*inputs))
            except Exception:  # noqa: BLE001 - only the doubled sizes can fail here
                if k < len(batches):
                    raise
                continue
            got = _named(model, run(*inputs))
        diffs = {n: max_abs_diff(got[n], want[n]) if n in got else float("inf")
                 for n in want}
        found.append(Comparison(_sizes(model, inputs), diffs))
    return found


def _mismatch(model: SynthModule, comparisons: list[Comparison], atol: float,
              fmt: str) -> ExportError | None:
    for c in comparisons:
        bad = {n: d for n, d in c.diffs.items() if not d <= atol}
        if bad:
            at = ", ".join(f"{s}={v}" for s, v in c.sizes.items()) or "the example inputs"
            worst = ", ".join(f"'{n}' by {d:.3g}" for n, d in bad.items())
            return ExportError(f"the exported {fmt} model's outputs differ from the "
                               f"module of spec '{model.graph.name}' beyond atol {atol:g} at "
                               f"{at}: {worst}; nothing was written",
                               hint="raise the tolerance with --atol if the difference is "
                               "rounding, or export the other format", code="X002")
    return None


#: The most bytes of weights kept inside an ONNX file (protobuf's limit is 2 GiB, and the
#: graph needs some of it); more go to ``NAME.data`` beside it.
INLINE_MAX_BYTES = 2**31 - 2**28


def weight_bytes(model: nn.Module) -> int:
    """Bytes of `model`'s parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _with_external_data(program, model: SynthModule, path: Path,
                        checked: Callable[[Path], list[Comparison]]
                        ) -> tuple[list[Comparison], int]:
    """The ONNX file and its ``.data`` written in a folder of their own beside `path`,
    checked there, then moved into place (the data first); nothing is left when the
    check fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        target = stage / path.name
        write_onnx(program, model, target, external=True)
        comparisons = checked(target)
        size = sum(f.stat().st_size for f in stage.iterdir())
        for f in sorted(stage.iterdir(), key=lambda f: f == target):  # the model file last
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return comparisons, size


def export_model(model: SynthModule, path: str | os.PathLike, atol: float = ATOL,
                 batches: tuple[int, ...] = BATCHES, external: bool | None = None
                 ) -> Exported:
    """Export `model` to `path` (``.onnx`` or ``.pt2``), checked against the module at each
    of `batches` (see the module docstring). The module is exported in eval mode, and left
    in the mode it was in. An ONNX model whose weights pass :data:`INLINE_MAX_BYTES` (or
    any, with `external`) keeps them in ``NAME.data`` beside it."""
    path = Path(path)
    fmt = export_format(path)
    if fmt == "onnx":
        require_onnx()
    external = fmt == "onnx" and (external if external is not None
                                  else weight_bytes(model) > INLINE_MAX_BYTES)
    write, load = WRITERS[fmt]
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        program = trace(model, example_batch(model, batches[0]))

        def checked(tmp: Path) -> list[Comparison]:
            run = load(tmp, model)
            found = compare(model, run, batches)
            if (problem := _mismatch(model, found, atol, fmt.upper())) is not None:
                raise problem
            return found

        if external:
            comparisons, size = _with_external_data(program, model, path, checked)
        else:
            with atomic_path(path) as tmp:
                write(program, model, tmp)
                comparisons = checked(tmp)
                size = tmp.stat().st_size
    finally:
        model.train(was_training)
    return Exported(str(path), fmt,
                    {n: list(model.graph.nodes[n]["dims"]) for n in model.input_names},
                    list(model.output_names),
                    {s: [f"{n}:{i}" for n, i in places]
                     for s, places in symbol_axes(model).items()},
                    atol, comparisons, size, time.perf_counter() - t0, external)
