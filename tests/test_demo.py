"""`synth demo --quick`: the whole synthesis loop, end to end, at smoke-test size.

The real demo's numbers are in the README; here only the machinery is checked: the
existing models are trained and saved, the specs are written and compile, every arm
trains and is evaluated, and the results, table and plots are written."""

from __future__ import annotations

import json

import pytest

import synthdsl
from synthdsl.train.demo import DemoConfig, arms, run_demo


pytestmark = pytest.mark.usefixtures("one_thread")


def test_quick_demo_runs_the_whole_loop(tmp_path, capsys):
    cfg = DemoConfig.quick_config(tmp_path / "demo", data="digits")
    results = run_demo(cfg)
    out = capsys.readouterr().out
    assert "synthesised: fused trunks + new head, fine-tuned" in out
    keys = [a.key for a in arms(cfg)]
    assert [r["key"] for r in results["rows"]] == keys
    for row in results["rows"]:
        assert 0.0 <= row["accuracy"][0] <= 1.0 and row["accuracy"][1] == 0.0
    written = json.loads((cfg.out / "results.json").read_text())
    assert written["rows"] == json.loads(json.dumps(results["rows"]))
    assert (cfg.out / "table.md").read_text().count("\n|") >= len(keys)
    assert [p["shots"] for p in results["sweep"]] == [3, 5]
    assert results["sweep"][0]["synth_ft"][0] == results["rows"][0]["accuracy"][0]
    for png in ("accuracy.png", "confusion-synth_ft.png", "confusion-scratch.png", "labels.png"):
        assert (cfg.out / png).read_bytes()[:4] == b"\x89PNG"
    # the existing models are real checkpoints the generated specs read
    for arch in cfg.sources:
        assert (cfg.out / "sources" / f"{arch}.safetensors").exists()
    fused = synthdsl.compile_spec(cfg.out / "specs" / "synth_frozen.synth", seed=0)
    assert fused.parameter_totals()["trainable"] == results["rows"][1]["trainable"]
    # every arm left an ordinary run folder that `synth eval` reads
    from synthdsl.cli import run

    assert run(["eval", str(cfg.out / "runs" / "synth" / "seed-0"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["accuracy"] == pytest.approx(results["rows"][1]["accuracy"][0])
    # a second run reuses the existing models
    from synthdsl.train.demo import train_sources

    again = train_sources(cfg)
    assert "reused" in capsys.readouterr().out
    assert again == results["sources"]
