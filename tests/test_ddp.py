"""`torchrun --nproc_per_node=2 synth train ...` (DDP over gloo) ends where one process
does: the same losses, metrics and weights, with frozen parameters left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

SPEC = """synth Ddp
input image: [B, 1, 8, 8]
trunk  = Flatten(image) |> Linear(out=32) |> ReLU
hidden = Linear(trunk, out=32) |> ReLU
logits = Linear(hidden, out=5)
freeze trunk
recipe epochs=2, lr=0.01, batch_size=50, seed=1
output logits
"""

ARGS = ["--data", "digits", "--classes", "5-9", "--no-progress", "--save-every", "7"]


def _torchrun(spec, out, args: list[str]) -> subprocess.CompletedProcess:
    """`synth train SPEC -o OUT ARGS` under two gloo processes, which must succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "synthdsl.cli", "train", str(spec), "-o", str(out), *args],
        env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ddp     2 processes (gloo)" in proc.stdout
    return proc


def test_two_gloo_processes_equal_one(tmp_path):
    from safetensors.torch import load_file

    from synthdsl.cli import run

    spec = tmp_path / "ddp.synth"
    spec.write_text(SPEC)
    assert run(["train", str(spec), "-o", str(tmp_path / "one"), "-q", *ARGS]) == 0
    proc = _torchrun(spec, tmp_path / "two", ARGS)
    assert proc.stdout.count("epoch 2/2") == 1  # only the first process prints

    def log(name):
        return [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text()
                .splitlines()]

    one, two = log("one"), log("two")
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["train_accuracy"] == a["train_accuracy"]
        assert b["val"] == a["val"]
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["confusion"] == m2["confusion"]
    w1 = load_file(str(tmp_path / "one" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6)
    # the frozen trunk is bit-for-bit what the seed made
    import synthdsl

    fresh = synthdsl.compile_spec(spec, seed=1).state_dict()
    assert torch.equal(w2["trunk.1.weight"], fresh["trunk.1.weight"])
    assert not torch.equal(w2["hidden.0.weight"], fresh["hidden.0.weight"])


def test_two_gloo_processes_equal_one_on_named_inputs(tmp_path):
    """A spec of an image and token ids, from an .npz of one array per input: each process
    takes its share of every dict batch, and two end where one does."""
    from safetensors.torch import load_file

    from synthdsl.cli import run
    from tests.test_train_multi import TWO_INPUTS, _two_input_arrays

    spec = tmp_path / "two.synth"
    spec.write_text(TWO_INPUTS.replace("epochs=4", "epochs=2"))
    np.savez(tmp_path / "two.npz", **_two_input_arrays(150))
    args = ["--data", str(tmp_path / "two.npz"), "--no-progress"]
    assert run(["train", str(spec), "-o", str(tmp_path / "one"), "-q", *args]) == 0
    _torchrun(spec, tmp_path / "two", args)
    one, two = ([json.loads(line) for line in (tmp_path / n / "log.jsonl").read_text()
                 .splitlines()] for n in ("one", "two"))
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["val"] == a["val"]
    w1 = load_file(str(tmp_path / "one" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6)


def test_a_learned_temperature_trains_under_two_processes(tmp_path):
    """The logit scale is read by the loss, not by the forward pass: its gradient still
    reaches every process, and the run ends with it moved."""
    import math

    from safetensors.torch import load_file

    from tests.test_train_multi import _digit_pairs

    spec = tmp_path / "clip.synth"
    spec.write_text("synth C\ninput image: [B, 8, 8]\ninput tokens: [B, 8] int64\n"
                    "input mask: [B, 8] bool\nimg = Flatten(image) |> Linear(out=16)\n"
                    "txt = masked_mean(Embedding(tokens, num=30, dim=16), mask) "
                    "|> Linear(out=16)\nloss contrastive(img, txt, learn_temperature=true)\n"
                    "recipe epochs=2, lr=0.01, batch_size=40, seed=1\noutput img, txt\n")
    arrays = _digit_pairs(160)
    arrays.pop("labels")
    np.savez(tmp_path / "pairs.npz", **arrays)
    _torchrun(spec, tmp_path / "two", ["--data", str(tmp_path / "pairs.npz"),
                                       "--no-progress"])
    scale = float(load_file(str(tmp_path / "two" / "model.safetensors"))["loss.logit_scale_0"])
    assert math.isfinite(scale) and scale != pytest.approx(math.log(1 / 0.07), abs=1e-4)
