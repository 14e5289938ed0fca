"""`synth search`: the space, its edits of the spec, and a resumable study of real trials."""

from __future__ import annotations

import json

import pytest

from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError
from synthdsl.lang.parse import parse_spec
from synthdsl.lang.printer import format_spec
from synthdsl.train.search import apply_values, pareto, parse_space

SPEC = """synth Search
input image: [B, 3, 16, 16]
source r = timm("test_resnet", num_classes=0)
feats = r(image, stage=2) |> GlobalAvgPool
logits = Linear(feats, out=10)
freeze r
adapt r.layer1 with lora(rank=4)
recipe epochs=1, lr=0.003, batch_size=128
output logits
"""


def test_the_space_and_its_mistakes():
    [lr, stage, frozen] = parse_space(["recipe.lr=1e-4:1e-2:log", "feats.stage=2|3",
                                       "frozen_stages.r=0..3"])
    assert (lr.kind, lr.log, stage.options, frozen.low, frozen.high) == \
        ("float", True, (2, 3), 0, 3)
    for bad in ("lr", "recipe.lr=", "recipe.lr=3:1", "recipe.lr=0:1:log", "x.y=1:2:lin",
                "frozen_stages.r=3..1"):
        with pytest.raises(SynthError) as e:
            parse_space([bad])
        assert e.value.code == "S010", bad
    with pytest.raises(SynthError):
        parse_space(["recipe.lr=1:2", "recipe.lr=3:4"])


def test_a_trial_is_an_edit_of_the_spec_printed_back():
    spec = parse_spec(SPEC)
    edited = apply_values(spec, {"recipe.lr": 0.01, "feats.stage": 3, "adapt.rank": 8,
                                 "frozen_stages.r": 2, "logits.out": 10})
    text = format_spec(edited)
    assert "feats = r(image, stage=3) |> GlobalAvgPool" in text
    assert "adapt r.layer1 with lora(rank=8)" in text
    assert "recipe epochs=1, lr=0.01, batch_size=128" in text
    # the rest of the source trains, its first two stages stay frozen; then the output
    assert text.rstrip().endswith("train r\nfreeze r@stage0, r@stage1\noutput logits")
    assert parse_spec(text) == edited
    for name in ("nothing.here", "feats.nosuch", "logits", "adapt.rank"):
        with pytest.raises(SynthError):
            apply_values(parse_spec(SPEC.replace("adapt r.layer1 with lora(rank=4)\n", "")),
                         {name: 1})


def test_pareto_keeps_the_trials_nothing_beats():
    recs = [{"trial": 0, "val_accuracy": 0.9, "trainable": 100},
            {"trial": 1, "val_accuracy": 0.8, "trainable": 10},
            {"trial": 2, "val_accuracy": 0.7, "trainable": 50},
            {"trial": 3, "val_accuracy": 0.9, "trainable": 200}]
    assert pareto(recs, "trainable") == [0, 1]


def test_a_study_runs_real_trials_and_resumes(tmp_path, capsys):
    pytest.importorskip("optuna")
    spec = tmp_path / "s.synth"
    spec.write_text(SPEC)
    out = tmp_path / "study"
    args = ["search", str(spec), "--data", "digits", "--space", "recipe.lr=1e-3:1e-2:log",
            "--space", "feats.stage=1|2", "-o", str(out), "--json"]
    assert run([*args, "--trials", "2"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert [r["trial"] for r in first] == [0, 1]
    for r in first:
        assert 0 <= r["val_accuracy"] <= 1 and r["trainable"] > 0 and r["seconds"] > 0
        assert 1e-3 <= r["values"]["recipe.lr"] <= 1e-2 and r["values"]["feats.stage"] in (1, 2)
        trial = (out / "trials" / f"{r['trial']:04d}.synth").read_text()
        assert f"stage={r['values']['feats.stage']}" in trial
    assert run([*args, "--trials", "3"]) == 0  # resumed: one more trial, the first two kept
    again = json.loads(capsys.readouterr().out)
    assert [r["trial"] for r in again] == [0, 1, 2] and again[:2] == first
    assert (out / "pareto.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["trials"] == again
    # a choice the spec cannot take fails its trial, says why, and the study goes on
    assert run(["search", str(spec), "--data", "digits", "--space", "feats.stage=6|7",
                "-o", str(tmp_path / "bad"), "--trials", "1"]) == 0
    said = capsys.readouterr().out
    assert "trial 0 failed" in said and "stage" in said
