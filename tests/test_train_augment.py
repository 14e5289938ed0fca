"""Mixup, CutMix and RandAugment through timm's own data tools, trained as `synth train
--mixup 0.8 --cutmix 1.0 --randaugment rand-m9-mstd0.5` trains, on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import synthdsl
from tests.train_specs import PLAIN
from synthdsl.train.augment import Mixer, RandAugment
from synthdsl.train.checkpoint import load_checkpoint
from synthdsl.train.data import DataSpec
from synthdsl.train.errors import TrainError
from synthdsl.train.losses import SOFT_TARGETS, LossTerm, objective
from synthdsl.train.options import Options
from synthdsl.train.recipe import Recipe
from synthdsl.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():  # the training split at its own 8x8 size, as synth train reads it
    return DataSpec("digits").load("train")



def test_mixer_is_timms_mixup_seeded_per_batch():
    from timm.data import Mixup

    x = torch.rand(8, 1, 8, 8)
    y = torch.arange(8) % 4
    got_x, got_y = Mixer(0.8, 1.0, 0.1, 4)(x, y, seed=7)
    np.random.seed(7)
    want_x, want_y = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1,
                           num_classes=4)(x.clone(), y)
    assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y)
    assert not torch.equal(got_x, x)                        # the batch itself is untouched
    again = Mixer(0.8, 1.0, 0.1, 4)(x, y, seed=7)
    assert torch.equal(again[0], got_x)
    odd_x, odd_y = Mixer(0.8, 1.0, 0.1, 4)(x[:3], y[:3], seed=7)   # odd: smoothed, unmixed
    assert torch.equal(odd_x, x[:3]) and torch.allclose(odd_y.max(1).values,
                                                        torch.full((3,), 0.925))


def test_soft_targets_give_timms_soft_target_cross_entropy():
    from timm.loss import SoftTargetCrossEntropy

    logits = torch.randn(6, 4)
    soft = torch.softmax(torch.randn(6, 4), -1)
    y, w = torch.zeros(6, dtype=torch.long), torch.ones(6)
    loss, _ = objective([LossTerm("ce", ("logits",), {})], {"logits": logits,
                        SOFT_TARGETS: soft}, y, w, 6.0, 6.0)
    torch.testing.assert_close(loss, SoftTargetCrossEntropy()(logits, soft))


def test_randaugment_is_timms_policy_seeded_and_keeps_shapes():
    x = torch.rand(4, 3, 16, 16)
    aug = RandAugment("rand-m9-mstd0.5", (16, 16))
    a, b = aug(x, seed=3), aug(x, seed=3)
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= float(a.min()) <= float(a.max()) <= 1
    assert not torch.allclose(a, x, atol=1 / 255)
    grey = aug(torch.rand(2, 1, 8, 8), seed=1)
    assert grey.shape == (2, 1, 8, 8)
    with pytest.raises(TrainError, match="not a RandAugment policy"):
        RandAugment("rand-q9", (16, 16))


def test_trainer_mixes_training_batches_only(digits):
    model = synthdsl.compile_spec(PLAIN, seed=0)
    trainer = Trainer(model, digits, Recipe(batch_size=32, mixup=0.8, randaugment="rand-m5"),
                      Options(quiet=True))
    pos = torch.arange(32)
    trainer.train_mode()
    values, _, _ = trainer._forward(pos, pos, cached=False, epoch=0, step=1)
    soft = values[SOFT_TARGETS]
    assert soft.shape == (32, 10) and torch.allclose(soft.sum(1), torch.ones(32))
    assert bool((soft.max(1).values < 1).any())             # mixed: not one-hot
    model.eval()
    values, _, _ = trainer._forward(pos, pos, cached=False)
    assert SOFT_TARGETS not in values                       # evaluation sees the images


def test_mixing_refuses_the_frozen_cache_and_unlabelled_data(digits):
    spec = PLAIN.replace("output logits", "freeze h\noutput logits")
    model = synthdsl.compile_spec(spec, seed=0)
    from synthdsl.train.run import train

    with pytest.raises(TrainError, match="inputs are augmented"):
        train(model, digits, recipe=Recipe(epochs=1, cutmix=1.0),
              options=Options(quiet=True, cache_frozen=True))
    few = DataSpec("digits", shots=5, unlabelled=True).load("train")
    with pytest.raises(TrainError, match="some training samples have none"):
        Trainer(model, few, Recipe(mixup=0.8), Options(quiet=True))


def test_cli_trains_with_mixup_cutmix_and_randaugment(tmp_path, capsys):
    from synthdsl.cli.app import run

    spec = tmp_path / "plain.synth"
    spec.write_text(PLAIN)
    out = tmp_path / "run"
    code = run(["train", str(spec), "--data", "digits", "-o", str(out), "--epochs", "1",
                "--mixup", "0.8", "--cutmix", "1.0", "--randaugment", "rand-m9-mstd0.5",
                "--no-progress", "-q"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())["recipe"]
    assert (record["mixup"], record["cutmix"], record["randaugment"]) == \
        (0.8, 1.0, "rand-m9-mstd0.5")
    assert (out / "model.safetensors").exists()


def test_resumed_run_with_ema_accumulation_and_mixing_ends_where_one_run_ends(digits, tmp_path):
    """Killed in epoch 2 and resumed: the same log, weights, EMA and best epoch."""
    from synthdsl.train.run import hold_out, train

    keep, val = hold_out(digits.subset(torch.arange(600)), 0.2, seed=1)
    recipe = Recipe(epochs=3, lr=0.01, batch_size=32, seed=1, accum_steps=2, ema=0.9,
                    clip_grad=1.0, mixup=0.8, cutmix=1.0, randaugment="rand-m5",
                    warmup_epochs=1)
    opts = Options(quiet=True, save_every=4, keep=3, select_best=True)

    def run(folder, **kw):
        model = synthdsl.compile_spec(PLAIN, seed=1)
        return train(model, keep, folder, recipe=recipe, options=opts, val_data=val, **kw)

    class Killed(Exception):
        pass

    def kill(trainer, epoch, step):
        if epoch == 1 and step == 10:
            raise Killed

    full = run(tmp_path / "full")
    with pytest.raises(Killed):
        run(tmp_path / "cut", callback=kill)
    # 15 batches an epoch are 8 updates; every 4th is saved: the last inside epoch 2
    newest = sorted((tmp_path / "cut" / "checkpoints").glob("*.pt"))[-1]
    ck = load_checkpoint(newest)
    assert newest.name == "step-00000012.pt" and (ck["epoch"], ck["step_in_epoch"]) == (1, 8)
    resumed = run(tmp_path / "cut", resume=True)
    assert [r["step"] for r in resumed.history] == [8, 16, 24]

    def untimed(history):
        return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_second")}
                for r in history]

    assert untimed(resumed.history) == untimed(full.history)
    for name in ("model.safetensors", "model-ema.safetensors", "model-best.safetensors"):
        a = synthdsl.load_compiled(tmp_path / "full" / name).state_dict()
        b = synthdsl.load_compiled(tmp_path / "cut" / name).state_dict()
        assert all(torch.equal(v, b[k]) for k, v in a.items()), name
