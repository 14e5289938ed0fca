"""The training loop as timm users know it: gradient accumulation, clipping, an EMA of the
weights, a held-out validation split with the best epoch and early stopping, and
torch.compile; each through `train` / `synth train` on digits, a few steps."""

from __future__ import annotations

import json

import pytest
import torch

import synthdsl
from tests.train_specs import PLAIN
from synthdsl.train.data import DataSpec
from synthdsl.train.errors import TrainError
from synthdsl.train.options import Options
from synthdsl.train.recipe import Recipe
from synthdsl.train.run import hold_out, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():  # the training split at its own 8x8 size, as synth train reads it
    return DataSpec("digits").load("train")
QUIET = Options(quiet=True)



def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("schedule", [
    dict(epochs=1, schedule="constant"),
    dict(epochs=2, warmup_epochs=1, schedule="cosine"),   # the rate moves every step
    dict(epochs=2, schedule="step"),                      # ×0.1 from the second epoch
])
def test_accumulating_k_batches_is_one_k_times_larger_batch(digits, schedule):
    got, steps = [], []
    for batch, accum in ((64, 1), (32, 2), (16, 4)):
        model = synthdsl.compile_spec(PLAIN, seed=0)
        result = train(model, digits, options=QUIET, recipe=Recipe(
            lr=0.1, batch_size=batch, accum_steps=accum, optimizer="sgd", **schedule))
        got.append(_params(model))
        steps.append([(r["step"], r["lr"]) for r in result.history])
    for other in got[1:]:   # 1400 = 21 × 64 + 56: the short last group is weighed by its sizes
        for k, v in got[0].items():
            torch.testing.assert_close(other[k], v, rtol=1e-4, atol=1e-5)
    assert steps[0][0][0] == 22 and steps[1] == steps[0] and steps[2] == steps[0]


def test_a_step_is_an_optimizer_update(digits, tmp_path):
    """With accum_steps=3 the schedule, the records, --save-every and the checkpoint names
    count updates: 1400 images in batches of 100 are 14 batches, 5 updates an epoch."""
    from synthdsl.train.optim import lr_factor
    from synthdsl.train.stepping import group_size

    recipe = Recipe(epochs=2, lr=0.1, batch_size=100, accum_steps=3, optimizer="sgd",
                    warmup_epochs=1, schedule="cosine")
    seen = []

    def look(trainer, epoch, k):
        seen.append((epoch, k, trainer.global_step, trainer.opt.param_groups[0]["lr"]))

    result = train(synthdsl.compile_spec(PLAIN, seed=0), digits, tmp_path / "run",
                   recipe=recipe, options=Options(quiet=True, save_every=2, keep=10),
                   callback=look)
    assert [(r["epoch"], r["step"]) for r in result.history] == [(1, 5), (2, 10)]
    for epoch, k, after, lr in seen:  # each batch at the rate of the update it belongs to
        update = 5 * epoch + k // 3
        assert after == update + (k % 3 + 1 == group_size(k, 3, 14))
        assert lr == pytest.approx(0.1 * lr_factor(recipe, update, steps_per_epoch=5))
    assert result.history[-1]["lr"] == pytest.approx(0.1 * lr_factor(recipe, 9, 5))
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert names == [f"step-{n:08d}.pt" for n in (2, 4, 5, 6, 8, 10)]


def test_clipping_bounds_every_step(digits):
    model = synthdsl.compile_spec(PLAIN, seed=0)
    before = _params(model)
    steps = []

    def look(trainer, epoch, k):
        steps.append(_params(trainer.model))

    train(model, digits, recipe=Recipe(epochs=1, lr=1.0, batch_size=128, optimizer="sgd",
                                       momentum=0.0, schedule="constant", clip_grad=1e-3),
          options=QUIET, callback=look)
    previous = before
    for now in steps:   # plain SGD at lr 1: each step moves the weights by at most the clip
        moved = torch.cat([(now[k] - previous[k]).flatten() for k in now]).norm()
        assert 0 < float(moved) <= 1e-3 * (1 + 1e-4)
        previous = now


def test_ema_follows_timms_model_ema_v3(digits, tmp_path):
    model = synthdsl.compile_spec(PLAIN, seed=0)
    seen = []

    def look(trainer, epoch, k):
        seen.append(_params(trainer.model))

    result = train(model, digits, tmp_path / "run", options=QUIET, callback=look,
                   recipe=Recipe(epochs=1, lr=0.05, batch_size=100, ema=0.8))
    trainer_ema = result.run / "model-ema.safetensors"
    assert trainer_ema.exists()
    # ModelEmaV3 with update(step=n): the first step copies the weights, then decay 0.8
    expected = seen[0]
    for now in seen[1:]:
        expected = {k: 0.8 * expected[k] + 0.2 * now[k] for k in now}
    ema = synthdsl.train.evaluate.load_model(str(trainer_ema)).model
    for k, v in ema.named_parameters():
        torch.testing.assert_close(v.detach(), expected[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(ema.get_parameter("logits.weight"), model.logits.weight.detach())
    log = [json.loads(line) for line in (result.run / "log.jsonl").read_text().splitlines()]
    assert "val_ema" not in log[0]   # no validation data: nothing validated


def test_val_split_is_stratified_and_seeded(digits):
    keep, val = hold_out(digits, 0.1, seed=3)
    assert len(keep) + len(val) == len(digits)
    assert set(keep.indices.tolist()).isdisjoint(val.indices.tolist())
    counts = torch.bincount(val.targets, minlength=10)
    totals = torch.bincount(digits.targets, minlength=10)
    assert torch.all((counts - totals * 0.1).abs() <= 1)
    again, _ = hold_out(digits, 0.1, seed=3)
    assert torch.equal(again.indices, keep.indices)
    with pytest.raises(TrainError):
        hold_out(digits, 1.5, seed=0)


def test_cli_val_split_keeps_the_best_and_stops_early(tmp_path, capsys):
    from synthdsl.cli.app import run

    spec = tmp_path / "plain.synth"
    spec.write_text(PLAIN)
    out = tmp_path / "run"
    # a rate so small that nothing improves after the first validation: patience 1 stops
    code = run(["train", str(spec), "--data", "digits", "-o", str(out), "--epochs", "5",
                "--lr", "1e-12", "--val-split", "0.1", "--patience", "1", "--ema", "0.5",
                "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and "stopped: 1 validations without a better one" in printed
    assert all("val_ema" in r for r in log)           # chosen by the EMA, as timm does
    assert log[0]["val"]["n"] == 140                   # 10% of the 1,400 training images
    assert (out / "model-best.safetensors").exists() and (out / "model-ema.safetensors").exists()
    record = json.loads((out / "run.json").read_text())
    assert record["val_split"] == 0.1 and record["recipe"]["patience"] == 1
    assert json.loads((out / "metrics.json").read_text())["n"] == 397   # the test split


def test_patience_without_a_val_split_is_refused(digits):
    model = synthdsl.compile_spec(PLAIN, seed=0)
    with pytest.raises(TrainError, match="held-out validation split"):
        train(model, digits, recipe=Recipe(epochs=2, patience=2), options=QUIET)


def test_compile_trains_the_same_model(digits):
    pytest.importorskip("torch._inductor")
    small = digits.subset(torch.arange(256))
    got = []
    for compiled in (False, True):
        model = synthdsl.compile_spec(PLAIN, seed=0)
        train(model, small, recipe=Recipe(epochs=1, lr=0.1, batch_size=64, optimizer="sgd",
                                          schedule="constant"),
              options=Options(quiet=True, compile=compiled))
        got.append(_params(model))
    for k, v in got[0].items():
        torch.testing.assert_close(got[1][k], v, rtol=1e-4, atol=1e-5)


def test_cli_logs_csv_and_draws_curves(tmp_path, capsys):
    import csv

    from synthdsl.cli.app import run

    spec = tmp_path / "plain.synth"
    spec.write_text(PLAIN)
    out = tmp_path / "run"
    code = run(["train", str(spec), "--data", "digits", "-o", str(out), "--epochs", "2",
                "--log", "csv", "--no-progress", "-q"])
    assert code == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, rec in zip(rows, log):
        assert float(row["loss"]) == pytest.approx(rec["loss"])
        assert float(row["val_accuracy"]) == pytest.approx(rec["val"]["accuracy"])
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_logs_or_names_its_package(tmp_path, capsys):
    from synthdsl.cli.app import run

    spec = tmp_path / "plain.synth"
    spec.write_text(PLAIN)
    out = tmp_path / "run"
    code = run(["train", str(spec), "--data", "digits", "-o", str(out), "--epochs", "1",
                "--log", "tensorboard,csv", "--no-progress", "-q"])
    err = capsys.readouterr().err
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert code == 1 and "needs the 'tensorboard' package" in err and "[tb]" in err
        assert not out.exists()
    else:
        assert code == 0 and any((out / "tb").iterdir())


def test_an_unknown_log_kind_is_refused(tmp_path, capsys):
    from synthdsl.cli.app import run

    spec = tmp_path / "plain.synth"
    spec.write_text(PLAIN)
    assert run(["train", str(spec), "--data", "digits", "-o", str(tmp_path / "r"),
                "--log", "wandb"]) == 1
    assert "--log has no kind 'wandb'" in capsys.readouterr().err
