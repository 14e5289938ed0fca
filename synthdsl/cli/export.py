"""`synth export SPEC|ARTIFACT|RUN -o model.onnx|model.pt2`: a deployable file, checked.

The suffix of ``-o`` picks the format: ``.onnx`` (the dynamo ONNX exporter; needs
``pip install synthdsl[export]``) or ``.pt2`` (a ``torch.export`` program, saved with
``torch.export.save``). The file is loaded back and compared with the module on example
inputs at two batch sizes (:mod:`synthdsl.build.export`); a difference beyond ``--atol`` is
X002 and writes nothing. ``--json`` prints what was written and the measured differences.
"""

from __future__ import annotations

import json
from pathlib import Path

from synthdsl.build.artifact import load_compiled
from synthdsl.build.export import ExportError, export_format, export_model, require_onnx
from synthdsl.build.locks import checkpoints
from synthdsl.cli.common import EXIT_OK, check_output, print_warnings, read_text
from synthdsl.cli.spec import checked
from synthdsl.lang.errors import fmt_shape
from synthdsl.pipeline import compile_locked

#: What each format is checked with.
RUNNERS = {"onnx": "onnxruntime", "pt2": "torch.export.load"}


def load_target(path: str, seed: int, output: str):
    """The module a spec (compiled with `seed`), a compiled artifact or a run folder of
    `synth train` (its ``model.safetensors``) stands for."""
    p = Path(path)
    if p.is_dir():
        if not (p / "model.safetensors").is_file():
            raise ExportError(f"cannot export '{path}': a folder is exported as a run of "
                              "`synth train`, and it has no model.safetensors",
                              hint="train it to the end (or resume it with synth train "
                              "--resume), or export one of its artifacts")
        p = p / "model.safetensors"
    if p.suffix == ".safetensors":
        return load_compiled(p)
    if p.suffix != ".synth":
        raise ExportError(f"cannot export '{path}': expected a .synth spec, a compiled "
                          f"'.safetensors' artifact or a run folder, found "
                          f"'{p.suffix or 'no suffix'}'",
                          hint="synth export SPEC.synth -o model.onnx, or synth compile SPEC "
                          "-o model.safetensors first")
    graph = checked(path)
    check_output(output, checkpoints(graph), "exported model")  # nor a weights file it reads
    print_warnings(graph, read_text(path))
    return compile_locked(graph, seed=seed)


def _input(shape: list, dtype: str) -> str:
    return fmt_shape(tuple(shape)) + ("" if dtype == "float32" else f" {dtype}")


def cmd_export(args) -> int:
    fmt = export_format(args.output)  # the suffix first: nothing is built for a wrong one
    if fmt == "onnx":
        require_onnx()
    check_output(args.output, [args.file], "exported model")
    model = load_target(args.file, args.seed, args.output)
    if args.external_data and fmt != "onnx":
        raise ExportError("--external-data keeps an ONNX model's weights beside it; a .pt2 "
                          "program holds its own", hint="drop --external-data, or -o "
                          "model.onnx")
    result = export_model(model, args.output, atol=args.atol,
                          external=True if args.external_data else None)
    if args.json:
        print(json.dumps({"spec": model.graph.name, "source": args.file, **result.to_json()},
                         indent=2))
        return EXIT_OK
    dtypes = {n: model.graph.nodes[n].get("input_dtype", "float32") for n in model.input_names}
    data = Path(result.path).with_name(Path(result.path).name + ".data")
    beside = f", weights in {data.name}" if result.external else ""
    print(f"synth {model.graph.name}: exported {result.path} ({fmt.upper()}, "
          f"{result.bytes:,} bytes{beside}) in {result.seconds:.2f}s")
    print("  inputs  " + ", ".join(f"{n} {_input(s, dtypes[n])}"
                                   for n, s in result.inputs.items()))
    print("  outputs " + ", ".join(result.outputs))
    if result.dynamic:
        print("  dynamic " + "; ".join(f"{s} ({', '.join(places)})"
                                       for s, places in result.dynamic.items()))
    checks = ", ".join(
        (", ".join(f"{s}={v}" for s, v in c.sizes.items()) or "example") +
        f": max |diff| {c.max_diff:.2g}" for c in result.comparisons)
    print(f"  checked with {RUNNERS[fmt]} against the module: {checks} (atol {result.atol:g})")
    return EXIT_OK
