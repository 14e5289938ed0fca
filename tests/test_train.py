"""Training: what is optimised, the losses, the run folder, exact resume, the frozen prefix
and its cache, adapters, and the `synth train` / `synth eval` commands."""

from __future__ import annotations

import json

import pytest
import torch

import synthdsl
from synthdsl.train.data import DataSpec, load_dataset
from synthdsl.train.frozen import cache_problems, split_frozen
from synthdsl.train.checkpoint import load_checkpoint
from synthdsl.train.errors import TrainError
from synthdsl.train.losses import LossTerm, objective
from synthdsl.train.optim import lr_factor
from synthdsl.train.options import Options
from synthdsl.train.preprocess import Preprocess
from synthdsl.train.recipe import Recipe
from synthdsl.train.run import train

QUIET = Options(quiet=True)
pytestmark = pytest.mark.usefixtures("one_thread")


# digits at their own 8×8 size: new layers only, so a test trains in a second
SMALL = """synth Small
input image: [B, 1, 8, 8]
trunk  = Flatten(image) |> Linear(out=32) |> ReLU
logits = Dropout(trunk, p=0.2) |> Linear(out=5)
freeze trunk
output logits
"""


def _digits(classes=(5, 6, 7, 8, 9), **kw):
    spec = DataSpec("digits", classes, **kw)
    return spec.load("train"), DataSpec("digits", classes).load("test")


@pytest.fixture(scope="module")
def five():
    return _digits()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_only_trainable_parameters_move_and_lr_multipliers_apply(five, pretrained_resnet):
    ckpt, _ = pretrained_resnet
    spec = f"""synth Transfer
        input image: [B, 3, 32, 32]
        source net = timm("test_resnet", num_classes=10, weights="{ckpt}")
        f = net.forward_head(net.forward_features(image), pre_logits=true)
        logits = Linear(f, out=5)
        freeze net
        train net.layer4 with lr_mult=0.1
        output logits"""
    model = synthdsl.compile_spec(spec, seed=0)
    train_data, test_data = five
    before = _state(model)
    frozen = set(model.graph.graph["frozen"])
    seen = {}

    def look(trainer, epoch, step):
        seen.update({tuple(g["names"]): g["lr"] for g in trainer.opt.param_groups})

    # the fixture trained the trunk on values in [0, 1], without timm's normalisation
    result = train(model, train_data, recipe=Recipe(epochs=2, lr=0.01, batch_size=64,
                                                      schedule="constant"),
                   options=QUIET, test_data=test_data, callback=look,
                   preprocess=Preprocess(size=(32, 32), channels=3))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in frozen), "a frozen tensor moved"
    # BatchNorm statistics of the frozen trunk did not drift either
    assert any(k.endswith("running_mean") for k in frozen)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and moved.isdisjoint(frozen)
    lrs = {names[0].split(".")[0] + ("4" if "layer4" in names[0] else ""): lr
           for names, lr in seen.items()}
    assert lrs == {"net4": pytest.approx(0.001), "logits": pytest.approx(0.01)}
    # the pretrained trunk makes a good classifier of new digits in two epochs
    assert result.metrics.accuracy > 0.8


def test_lr_schedules():
    r = Recipe(epochs=4, lr=1.0, warmup_epochs=1)
    assert [round(lr_factor(r, s, 2), 3) for s in range(8)] == [
        0.5, 1.0, 1.0, 0.933, 0.75, 0.5, 0.25, 0.067]
    step = Recipe(epochs=4, schedule="step")
    assert [lr_factor(step, s, 1) for s in range(4)] == [1.0, 1.0, pytest.approx(0.1),
                                                          pytest.approx(0.01)]
    assert lr_factor(Recipe(schedule="constant"), 99, 3) == 1.0
    with pytest.raises(TrainError, match="schedule must be"):
        Recipe.resolve({"schedule": "linear"})
    assert Recipe.resolve({"epochs": 3}, {"epochs": 5, "lr": None}).epochs == 5


def test_distillation_is_hintons_loss():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 1, -1, 3, -1, 4])  # two samples unlabelled
    w = torch.ones(6)
    term = LossTerm("distill", ["s", "t"], {"temperature": 3.0, "alpha": 0.6})
    loss, parts = objective([term], {"s": s, "t": t}, y, w, 6.0, 4.0)
    soft = torch.nn.functional.kl_div(torch.log_softmax(s / 3, -1), torch.softmax(t / 3, -1),
                                      reduction="batchmean") * 9
    lab = y >= 0
    hard = torch.nn.functional.cross_entropy(s[lab], y[lab])
    assert torch.allclose(loss, 0.6 * soft + 0.4 * hard, atol=1e-6)
    # feature: mean squared difference, the target gets no gradient
    a = torch.randn(6, 3, 2, requires_grad=True)
    b = torch.randn(6, 3, 2, requires_grad=True)
    loss, _ = objective([LossTerm("feature", ["a", "b"], {"weight": 2.0})], {"a": a, "b": b},
                        y, w, 6.0, 4.0)
    assert torch.allclose(loss, 2 * (a - b).pow(2).mean())
    loss.backward()
    assert a.grad is not None and b.grad is None


def test_run_folder_and_exact_resume(tmp_path, five):
    """Killed in the middle of epoch 2 and resumed, a run ends exactly where an uninterrupted
    one does: same log, same weights (dropout and augmentation included)."""
    train_data, test_data = five
    recipe = Recipe(epochs=3, lr=0.01, batch_size=32, seed=3)
    opts = Options(quiet=True, augment=1, save_every=5, keep=3)

    def run(folder, **kw):
        model = synthdsl.compile_spec(SMALL, seed=recipe.seed)
        return model, train(model, train_data, folder, recipe=recipe, options=opts,
                            val_data=test_data, test_data=test_data, **kw)

    full_model, full = run(tmp_path / "full")

    class Killed(Exception):
        pass

    def kill(trainer, epoch, step):
        if epoch == 1 and step == 13:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "cut", callback=kill)
    ck = load_checkpoint(sorted((tmp_path / "cut" / "checkpoints").glob("*.pt"))[-1])
    assert (ck["epoch"], ck["step_in_epoch"]) == (1, 12)  # saved mid-epoch at step 35
    with pytest.raises(TrainError, match="already holds a run"):
        run(tmp_path / "cut")
    resumed_model, resumed = run(tmp_path / "cut", resume=True)
    assert [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
            ] == resumed.history
    for a, b in zip(full.history, resumed.history):
        assert (a["loss"], a["val"], a["train_accuracy"]) == (b["loss"], b["val"],
                                                              b["train_accuracy"])
    for k, v in full_model.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    assert resumed.metrics.to_dict() == full.metrics.to_dict()
    # the run folder
    run_dir = tmp_path / "full"
    assert json.loads((run_dir / "run.json").read_text())["recipe"]["seed"] == 3
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 3
    assert len(list((run_dir / "checkpoints").glob("*.pt"))) == 3
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == full.metrics.accuracy
    assert (run_dir / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    rebuilt = synthdsl.load_compiled(run_dir / "model.safetensors")
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(rebuilt.eval()(x), full_model.eval()(x))
    # resuming a finished run does nothing more
    again_model, again = run(tmp_path / "full", resume=True)
    assert again.history == full.history


def test_frozen_prefix_runs_without_grad_and_its_cache_changes_nothing(five):
    train_data, test_data = five
    recipe = Recipe(epochs=3, lr=0.01, batch_size=50)
    spec = SMALL.replace("Dropout(trunk, p=0.2) |> Linear(out=5)", "Linear(trunk, out=5)")
    results = []
    for cache in (False, True):
        model = synthdsl.compile_spec(spec, seed=0)
        split = split_frozen(model)
        assert split.prefix_nodes == ["trunk_0", "trunk_1", "trunk_2"]
        assert split.boundary == ["trunk_2"]
        results.append((model, train(model, train_data, recipe=recipe,
                                     options=Options(quiet=True, cache_frozen=cache),
                                     test_data=test_data)))
    (m0, r0), (m1, r1) = results
    assert [h["loss"] for h in r0.history] == [h["loss"] for h in r1.history]
    assert all(torch.equal(v, m1.state_dict()[k]) for k, v in m0.state_dict().items())
    caches = [h["cache"] for h in r1.history]
    assert caches[0]["misses"] == len(train_data) and caches[0]["complete"]
    assert caches[1] == {**caches[0], "hits": len(train_data), "misses": 0}


@pytest.mark.parametrize("change,problem", [
    ("freeze trunk\npolicy norm = \"train\"", "updates its running statistics"),
    ("freeze trunk\n#augment", "inputs are augmented"),
    ("freeze trunk, net\n#timm", "differed between two runs"),
])
def test_cache_refuses_a_prefix_that_changes(five, change, problem):
    spec = """synth R
        input image: [B, 1, 8, 8]
        trunk  = Flatten(image) |> Linear(out=16) |> BatchNorm1d |> ReLU
        logits = Dropout(trunk, p=0.2) |> Linear(out=5)
        CHANGE
        output logits""".replace("CHANGE", change)
    if "#timm" in change:  # timm's resnet drops features with F.dropout: found by running it
        spec = spec.replace("input image: [B, 1, 8, 8]", """input image: [B, 1, 8, 8]
        source net = timm("test_resnet", num_classes=0, in_chans=1, drop_rate=0.5)
        """).replace("Flatten(image)", "net(image)")
    model = synthdsl.compile_spec(spec, seed=0)
    augment = 1 if "#augment" in change else 0
    with pytest.raises(TrainError, match=problem) as e:
        train(model, five[0], recipe=Recipe(epochs=1),
              options=Options(quiet=True, cache_frozen=True, augment=augment))
    assert "without --cache-frozen" in e.value.hint


def test_a_dropout_after_a_frozen_trunk_is_left_out_of_the_cached_prefix():
    model = synthdsl.compile_spec(SMALL, seed=0).train()
    assert "logits_0" in split_frozen(model).prefix_nodes       # no grad needed there ...
    cached = split_frozen(model, cacheable=True)                # ... but it is random
    assert cached.boundary == ["trunk_2"] and not cache_problems(cached)


def test_teacher_in_the_spec_is_frozen_prefix_and_distils(tmp_path, five):
    train_data, test_data = _digits(shots=10, unlabelled=True)
    teacher = synthdsl.compile_spec(SMALL, seed=1)
    train(teacher, _digits()[0], recipe=Recipe(epochs=3, lr=0.01), options=QUIET)
    synthdsl.save_compiled(teacher, tmp_path / "teacher.safetensors")
    (tmp_path / "teacher.synth").write_text(SMALL)
    spec = """synth Student
        input image: [B, 1, 8, 8]
        source teacher = spec("teacher.synth")
        logits = Flatten(image) |> Linear(out=5)
        teacher_logits = teacher(image)
        freeze teacher
        loss distill(logits, teacher_logits, temperature=2.0, alpha=0.9)
        output logits"""
    (tmp_path / "student.synth").write_text(spec)
    student = synthdsl.compile_spec(tmp_path / "student.synth", seed=0)
    student.teacher.load_state_dict(teacher.state_dict())
    split = split_frozen(student)
    assert "teacher_logits" in split.boundary and "teacher" in split.prefix_modules
    result = train(student, train_data, recipe=Recipe(epochs=4, lr=0.02, batch_size=64),
                   options=Options(quiet=True, cache_frozen=True), test_data=test_data)
    assert result.history[-1]["terms"]["distill"] < result.history[0]["terms"]["distill"]
    # 10 labels per class and the teacher's soft targets on the rest
    assert result.metrics.accuracy > 0.75


def test_lora_and_bias_only(five):
    train_data, _ = five
    base = """synth A
        input image: [B, 1, 8, 8]
        h = Flatten(image) |> Linear(out=16) |> ReLU
        logits = Linear(h, out=5)
        freeze h, logits
        ADAPT
        output logits"""
    lora = synthdsl.compile_spec(base.replace("ADAPT", "adapt h.1, logits with lora(rank=2, "
                                              "alpha=4)"), seed=0)
    before = _state(lora)
    train(lora, train_data, recipe=Recipe(epochs=2, lr=0.02), options=QUIET)
    moved = {k for k, v in lora.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {"h.1.lora_A", "h.1.lora_B", "logits.lora_A", "logits.lora_B"}
    x = torch.rand(6, 1, 8, 8)
    adapted = lora.eval()(x)
    assert sorted(lora.merge_adapters()) == ["h.1", "logits"]
    assert torch.allclose(lora(x), adapted, atol=1e-5)
    bias = synthdsl.compile_spec(base.replace("ADAPT", "adapt h, logits with bias()"), seed=0)
    before = _state(bias)
    train(bias, train_data, recipe=Recipe(epochs=1, lr=0.02), options=QUIET)
    moved = {k for k, v in bias.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {"h.1.bias", "logits.bias"}


def test_what_cannot_be_trained(five):
    frozen = synthdsl.compile_spec(SMALL.replace("freeze trunk", "freeze trunk, logits"))
    with pytest.raises(TrainError, match="nothing to train"):
        train(frozen, five[0], recipe=Recipe(epochs=1), options=QUIET)
    two = synthdsl.compile_spec(SMALL.replace("output logits", "output logits, trunk"))
    with pytest.raises(TrainError, match="has 2 outputs") as e:
        train(two, five[0], recipe=Recipe(epochs=1), options=QUIET)
    assert "loss ce(logits)" in e.value.hint


def test_cli_train_then_eval_equals_sklearn(tmp_path, capsys):
    from sklearn import metrics as skm

    from synthdsl.cli import run
    from synthdsl.train.evaluate import load_model
    from synthdsl.train.predict import predict_values

    spec = tmp_path / "small.synth"
    spec.write_text(SMALL + "recipe epochs=2, lr=0.01, batch_size=64\n")
    out = tmp_path / "run"
    assert run(["train", str(spec), "--data", "digits", "--classes", "5-9", "-o", str(out),
                "--cache-frozen", "--no-progress"]) == 0
    assert (out / "model.safetensors").exists()
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "frozen prefix of 3 nodes" in printed
    assert run(["eval", str(out), "--json", "-o", str(tmp_path / "ev")]) == 0
    report = json.loads(capsys.readouterr().out)
    res = report["results"][0]
    # the same predictions through scikit-learn
    loaded = load_model(out)
    test = load_dataset("digits", "test").select_classes([5, 6, 7, 8, 9])
    pred = predict_values(loaded.model, test, loaded.preprocess)["logits"].argmax(1).numpy()
    y = test.targets.numpy()
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert (res["macro"]["precision"], res["macro"]["recall"], res["macro"]["f1"]) == \
        pytest.approx((p, r, f), abs=1e-12)
    assert res["confusion"] == skm.confusion_matrix(y, pred).tolist()
    assert (tmp_path / "ev" / "confusion-logits.png").exists()
    # the spec, with the run's weights, evaluates the same
    assert run(["eval", str(spec), "--weights", str(out / "model.safetensors"), "--data",
                "digits", "--classes", "5-9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["accuracy"] == res["accuracy"]
    # a bad request is a one-line error, not a traceback
    assert run(["eval", str(out), "--data", "digits"]) == 1
    assert "class scores" in capsys.readouterr().err


def test_eval_reports_each_ensemble_member():
    from synthdsl.train.evaluate import evaluate

    spec = """synth E
        input image: [B, 1, 8, 8]
        a = Flatten(image) |> Linear(out=10)
        b = Flatten(image) |> Linear(out=10)
        both = Ensemble(a, b)
        voted = Ensemble(a, b, mode="vote")
        output both, voted"""
    model = synthdsl.compile_spec(spec, seed=0)
    test = load_dataset("digits", "test")
    report = evaluate(model, test)
    assert [(r.name, r.role) for r in report.rows] == [
        ("both", "output"), ("voted", "output"), ("a", "member of both, voted"),
        ("b", "member of both, voted")]
    with torch.no_grad():
        x = test.images(torch.arange(len(test)))
        a = model.get_submodule("a.1")(model.get_submodule("a.0")(x))
    assert report.rows[2].metrics.accuracy == pytest.approx(
        float((a.argmax(1) == test.targets).float().mean()))
    assert "member of both, voted" in report.text()


def test_cli_teacher_from_a_run_folder(tmp_path, capsys):
    from synthdsl.cli import run

    spec = tmp_path / "small.synth"
    spec.write_text(SMALL.replace("Dropout(trunk, p=0.2) |> Linear(out=5)",
                                  "Linear(trunk, out=5)"))
    common = ["--data", "digits", "--classes", "5-9", "--no-progress", "-q", "--lr", "0.02"]
    assert run(["train", str(spec), "-o", str(tmp_path / "teacher"), "--epochs", "4",
                *common]) == 0
    student = tmp_path / "student.synth"
    student.write_text("synth S input image: [B, 1, 8, 8] "
                       "logits = Flatten(image) |> Linear(out=5) output logits")
    assert run(["train", str(student), "-o", str(tmp_path / "kd"), "--epochs", "3",
                "--teacher", str(tmp_path / "teacher"), "--temperature", "2", "--alpha", "0.9",
                "--shots", "5", "--unlabelled", "--cache-frozen", *common]) == 0
    record = json.loads((tmp_path / "kd" / "run.json").read_text())
    assert record["teacher"]["temperature"] == 2.0 and record["data"]["unlabelled"]
    log = [json.loads(x) for x in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()]
    assert set(log[0]["terms"]) == {"distill"} and log[1]["cache"]["hits"] == 713
    teacher_acc = json.loads((tmp_path / "teacher" / "metrics.json").read_text())["accuracy"]
    student_acc = json.loads((tmp_path / "kd" / "metrics.json").read_text())["accuracy"]
    assert student_acc > 0.6 and teacher_acc > 0.6
    # a spec that states its own losses takes no teacher from the command line
    spec.write_text(spec.read_text().replace("output logits", "loss ce(logits)\noutput logits"))
    assert run(["train", str(spec), "-o", str(tmp_path / "x"), "--teacher",
                str(tmp_path / "teacher"), *common]) == 1
    assert "states its own losses" in capsys.readouterr().err


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_float32_weights(five, amp, monkeypatch):
    """--amp runs the forward pass under autocast (here on the CPU; on CUDA the same code):
    the model learns, its weights stay float32, and fp16 goes through a gradient scaler."""
    train_data, test_data = five
    scaled = []
    real_scale = torch.amp.GradScaler.scale

    def spy(self, outputs):
        scaled.append(self.is_enabled())
        return real_scale(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    spec = SMALL.replace("freeze trunk\n", "")
    model = synthdsl.compile_spec(spec, seed=0)
    before = _state(model)
    result = train(model, train_data, recipe=Recipe(epochs=3, lr=0.01, batch_size=50),
                   options=Options(quiet=True, amp=amp), test_data=test_data)
    assert all(v.dtype == before[k].dtype for k, v in model.state_dict().items())
    assert all(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    losses = [h["loss"] for h in result.history]
    assert all(map(lambda x: x == x and x < float("inf"), losses))
    assert losses[-1] < losses[0]
    assert result.metrics.accuracy > 0.6
    assert any(scaled) == (amp == "fp16")
    plain = train(synthdsl.compile_spec(spec, seed=0), train_data,
                  recipe=Recipe(epochs=3, lr=0.01, batch_size=50), options=QUIET)
    assert [h["loss"] for h in plain.history] != losses  # autocast did round the forward pass
    with pytest.raises(TrainError, match="--amp must be"):
        train(model, train_data, recipe=Recipe(epochs=1), options=Options(quiet=True,
                                                                           amp="fp8"))


def test_options_refuse_negative_counts():
    with pytest.raises(TrainError, match="--checkpoint-every must be a whole number"):
        Options(checkpoint_every=-1)

