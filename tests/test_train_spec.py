"""`train_spec`, the typed function behind `synth train`: called from Python it makes the same
run as the command line, and it fills in what the command line leaves to the recipe."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from synthdsl.cli import run
from synthdsl.train.options import Options
from synthdsl.train.run import train_spec

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = """synth Small
input image: [B, 1, 8, 8]
trunk  = Flatten(image) |> Linear(out=32) |> ReLU
logits = Linear(trunk, out=5)
freeze trunk
recipe epochs=2, lr=0.01, batch_size=32, seed=3
output logits
"""


def _log(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_train_spec_makes_the_run_synth_train_makes(tmp_path, capsys):
    spec = tmp_path / "small.synth"
    spec.write_text(SPEC)
    result = train_spec(spec, "digits", tmp_path / "api", classes=[5, 6, 7, 8, 9], shots=10,
                        recipe={"epochs": 3, "lr": None}, options=Options(quiet=True))
    assert run(["train", str(spec), "--data", "digits", "--classes", "5-9", "--shots", "10",
                "--epochs", "3", "-o", str(tmp_path / "cli"), "-q", "--no-progress"]) == 0
    capsys.readouterr()

    api, cli = _log(tmp_path / "api"), _log(tmp_path / "cli")
    assert len(api) == 3 and [r["loss"] for r in api] == [r["loss"] for r in cli]
    a = load_file(str(tmp_path / "api" / "model.safetensors"))
    b = load_file(str(tmp_path / "cli" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    record = json.loads((tmp_path / "api" / "run.json").read_text())
    assert record["recipe"]["epochs"] == 3 and record["recipe"]["lr"] == 0.01  # None: the spec's
    assert record["data"] == {"source": "digits", "classes": [5, 6, 7, 8, 9], "shots": 10,
                              "shots_seed": 3, "unlabelled": False}  # the recipe's seed
    assert result.run == tmp_path / "api" and result.metrics is not None
    assert result.split == "digits/test[5,6,7,8,9]"
