"""What the optimizer is given: `optimize` statements (options without thawing),
layer-wise learning-rate decay, no decay on norms and biases, and the command line's
`--set` overrides; each through the Python API or `synth train` as a user runs it."""

from __future__ import annotations

import pytest
import torch

import synthdsl
from synthdsl.lang.errors import SynthError
from synthdsl.train.layer_decay import layer_scales
from synthdsl.train.optim import make_optimizer
from synthdsl.train.recipe import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")

#: a frozen trunk under a trainable head, on digits at their own 8×8 size
FROZEN_TRUNK = """synth Trunk
input image: [B, 1, 8, 8]
trunk  = Flatten(image) |> Linear(out=16) |> LayerNorm |> ReLU
logits = Linear(trunk, out=10)
freeze trunk
{extra}
output logits
"""


def _groups(model, recipe: Recipe) -> dict[str, dict]:
    """Each trainable parameter's optimizer group (lr and weight decay), by name."""
    opt = make_optimizer(model, recipe)
    return {n: g for g in opt.param_groups for n in g["names"]}


def test_optimize_sets_weight_decay_without_thawing_anything():
    model = synthdsl.compile_spec(FROZEN_TRUNK.format(
        extra="optimize *.bias with weight_decay=0\noptimize logits with lr_mult=2"), seed=0)
    frozen = set(model.graph.graph["frozen"])
    assert {"trunk.1.bias", "trunk.1.weight", "trunk.2.bias", "trunk.2.weight"} <= frozen
    groups = _groups(model, Recipe(lr=0.1, weight_decay=0.05))
    assert set(groups) == {"logits.weight", "logits.bias"}   # the trunk's biases stay frozen
    assert groups["logits.bias"]["weight_decay"] == 0.0
    assert groups["logits.weight"]["weight_decay"] == 0.05
    assert groups["logits.weight"]["lr"] == pytest.approx(0.2)


def test_train_with_options_still_thaws_and_later_statements_win():
    model = synthdsl.compile_spec(FROZEN_TRUNK.format(
        extra="train *.bias with weight_decay=0\noptimize trunk.1 with lr_mult=0.5\n"
              "freeze trunk.2"), seed=0)
    groups = _groups(model, Recipe(lr=0.1, weight_decay=0.05))
    assert set(groups) == {"logits.weight", "logits.bias", "trunk.1.bias"}
    assert groups["trunk.1.bias"]["weight_decay"] == 0.0
    assert groups["trunk.1.bias"]["lr"] == pytest.approx(0.05)
    assert model.graph.graph["param_options"].get("trunk.2.bias") is None  # frozen later


@pytest.mark.parametrize("extra, code, text", [
    ("optimize *.bais with weight_decay=0", "S401", "optimize pattern '*.bais'"),
    ("optimize logits with lr=2", "S402", "optimize has no option 'lr'"),
])
def test_optimize_problems_are_diagnostics(extra, code, text):
    with pytest.raises(SynthError) as e:
        synthdsl.compile_spec(FROZEN_TRUNK.format(extra=extra), seed=0)
    assert e.value.code == code and text in str(e.value)


def test_optimize_round_trips_through_the_printer():
    from synthdsl.lang.parse import parse_spec
    from synthdsl.lang.printer import format_spec

    spec = parse_spec(FROZEN_TRUNK.format(extra="optimize *.bias, logits with weight_decay=0"))
    assert "optimize *.bias, logits with weight_decay=0\n" in format_spec(spec)
    assert parse_spec(format_spec(spec)) == spec


def _timm_scales(model, decay: float) -> dict[str, float]:
    """What timm's own layer-decay groups give each parameter of `model`."""
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(model, layer_decay=decay, weight_decay=0.0)
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}


@pytest.mark.parametrize("arch", ["test_vit", "test_resnet"])
def test_layer_decay_gives_timms_scales_for_a_whole_timm_model(arch):
    import timm

    spec = f"""synth Whole
        input image: [B, 3, 32, 32]
        source net = timm("{arch}", num_classes=5)
        logits = net(image)
        output logits"""
    model = synthdsl.compile_spec(spec, seed=0)
    recipe = Recipe(lr=0.1, layer_decay=0.75)
    groups = _groups(model, recipe)
    want = _timm_scales(timm.create_model(arch, num_classes=5), 0.75)
    assert len(set(want.values())) > 2   # several depths: the comparison means something
    got = {n.removeprefix("net."): g["lr"] / recipe.lr for n, g in groups.items()}
    assert got.keys() == want.keys()
    for name, scale in want.items():
        assert got[name] == pytest.approx(scale), name


def test_layer_decay_leaves_new_layers_at_one_and_multiplies_lr_mult():
    spec = """synth Head
        input image: [B, 3, 32, 32]
        source vit = timm("test_vit", num_classes=0)
        f = vit(image)
        logits = Linear(f, out=5)
        train vit.blocks with lr_mult=0.5
        output logits"""
    model = synthdsl.compile_spec(spec, seed=0)
    plain = _groups(model, Recipe(lr=1.0))
    decayed = _groups(model, Recipe(lr=1.0, layer_decay=0.5))
    assert decayed["logits.weight"]["lr"] == 1.0
    assert plain["vit.blocks.0.attn.qkv.weight"]["lr"] == 0.5
    assert decayed["vit.blocks.0.attn.qkv.weight"]["lr"] < 0.5 * 0.5
    assert decayed["vit.norm.weight"]["lr"] == 1.0   # the top layer of the trunk
    scales = layer_scales(model, 0.5)
    assert "logits.weight" not in scales
    for name, group in decayed.items():                 # layer decay × lr_mult
        assert group["lr"] == pytest.approx(scales.get(name, 1.0) * plain[name]["lr"]), name


def test_no_decay_on_norms_and_biases_unless_the_spec_says_so():
    model = synthdsl.compile_spec(FROZEN_TRUNK.format(
        extra="train trunk\noptimize trunk.1.bias with weight_decay=0.01"), seed=0)
    same = _groups(model, Recipe(weight_decay=0.05))
    assert {g["weight_decay"] for n, g in same.items() if n != "trunk.1.bias"} == {0.05}
    groups = _groups(model, Recipe(weight_decay=0.05, decay_norm_bias=False))
    assert groups["trunk.1.weight"]["weight_decay"] == 0.05      # a matrix: decayed
    assert groups["logits.weight"]["weight_decay"] == 0.05
    for name in ("trunk.2.weight", "trunk.2.bias", "logits.bias"):  # LayerNorm, biases
        assert groups[name]["weight_decay"] == 0.0, name
    assert groups["trunk.1.bias"]["weight_decay"] == 0.01        # the spec's own word wins


def test_cli_set_overrides_the_recipe_and_policy_and_is_recorded(tmp_path, capsys):
    import json

    from synthdsl.cli.app import run

    spec = tmp_path / "s.synth"
    spec.write_text(FROZEN_TRUNK.format(extra="recipe lr=0.01, epochs=3"))
    out = tmp_path / "run"
    code = run(["train", str(spec), "--data", "digits", "-o", str(out), "--epochs", "1",
                "--eval-split", "none", "--set", "recipe.lr=3e-4", "--set",
                "recipe.optimizer=sgd", "--set", "policy.norm=train", "-q",
                "--layer-decay", "0.5", "--no-decay-norm-bias"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["recipe"]["lr"] == 3e-4 and record["recipe"]["optimizer"] == "sgd"
    assert record["recipe"]["epochs"] == 1          # a flag wins over the spec and --set
    assert record["recipe"]["layer_decay"] == 0.5
    assert record["recipe"]["decay_norm_bias"] is False
    assert record["overrides"] == ["recipe.lr=3e-4", "recipe.optimizer=sgd", "policy.norm=train"]


@pytest.mark.parametrize("item, text", [
    ("recipe.lrr=1", "the recipe has no option 'lrr'"),
    ("model.lr=1", "'model' is not something --set can change"),
    ("recipe.lr", "--set expects KEY=VALUE"),
    ("recipe.lr=-1", "--set recipe.lr expects a number > 0"),
    ("policy.norm=frozn", "--set policy.norm expects"),
])
def test_cli_set_refuses_unknown_keys_with_s010(tmp_path, capsys, item, text):
    from synthdsl.cli.app import run

    spec = tmp_path / "s.synth"
    spec.write_text(FROZEN_TRUNK.format(extra=""))
    code = run(["train", str(spec), "--data", "digits", "-o", str(tmp_path / "r"),
                "--set", item])
    err = capsys.readouterr().err
    assert code == 1 and "error[S010]" in err and text in err, err
    assert not (tmp_path / "r").exists()


#: a trainable LayerNorm in the head: `policy norm = "frozen"` changes what trains
NORM_HEAD = """# a head with a norm of its own
synth NormHead
input image: [B, 1, 8, 8]
h = Flatten(image) |> Linear(out=16) |> LayerNorm |> ReLU   # trains unless a policy says
logits = Linear(h, out=10)
recipe lr=0.01, epochs=3

# the classifier
output logits
"""


def test_cli_set_is_in_the_spec_every_artifact_of_the_run_embeds(tmp_path, capsys):
    import json

    from synthdsl.cli.app import run
    from synthdsl.train.evaluate import load_model

    spec = tmp_path / "s.synth"
    spec.write_text(NORM_HEAD)
    before = synthdsl.compile_spec(NORM_HEAD, seed=0)
    assert before.get_submodule("h.2").weight.requires_grad   # the spec's own: it trains
    out = tmp_path / "run"
    flags = ["--set", "policy.norm=frozen", "--set", "recipe.lr=0.05", "--set",
             "recipe.batch_size=50"]
    args = ["train", str(spec), "--data", "digits", "-o", str(out), "--epochs", "1",
            "--eval-split", "none", "--ema", "0.9", "--no-progress", "-q"]
    assert run(args + flags) == 0, capsys.readouterr().err
    assert spec.read_text() == NORM_HEAD                      # the file is never edited
    for name in ("model.safetensors", "model-ema.safetensors"):
        rebuilt = synthdsl.load_compiled(out / name)
        graph = rebuilt.graph.graph
        assert graph["policies"]["norm"]["value"] == "frozen" and rebuilt.norm_policy == "frozen"
        assert not rebuilt.get_submodule("h.2").weight.requires_grad
        assert (graph["recipe"]["lr"], graph["recipe"]["batch_size"]) == (0.05, 50)
        assert graph["recipe"]["epochs"] == 3                 # a flag, not the spec, said 1
        text = rebuilt.spec
        assert '# synth train --set recipe.batch_size=50 --set recipe.lr=0.05 --set ' \
            'policy.norm="frozen"\npolicy norm = "frozen"\n# the classifier\n' in text
        assert "recipe lr=0.05, epochs=3, batch_size=50\n" in text
        assert "# trains unless a policy says" in text and text.startswith("# a head")
    # a checkpoint is evaluated with the spec as trained, and the run resumes with its flags
    ckpt = sorted((out / "checkpoints").glob("*.pt"))[-1]
    assert load_model(ckpt).model.norm_policy == "frozen"
    assert json.loads((out / "run.json").read_text())["overrides"] == flags[1::2]
    assert run(args + flags[2:] + flags[:2] + ["--resume"]) == 0   # the order is no matter
    capsys.readouterr()
    assert run(args + ["--set", "policy.norm=train", "--resume"]) == 1
    assert "the spec sha256 differs" in capsys.readouterr().err
