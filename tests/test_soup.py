"""Model soups: the greedy rule, and `synth soup` end to end on a tiny spec."""

from __future__ import annotations

import json

import pytest
import torch

import synthdsl
from synthdsl.cli.app import run
from synthdsl.train.soup import average, greedy_order, greedy_soup, soup

SPEC = ("synth Tiny\ninput image: [B, 1, 8, 8]\n"
        "h = Conv2d(image, out=8, kernel=3) |> ReLU |> GlobalAvgPool\n"
        "logits = Linear(h, out=3)\n"
        "recipe epochs=1, lr=0.02, batch_size=32\noutput logits\n")


def test_greedy_adds_an_ingredient_only_when_the_average_does_not_get_worse():
    states = [{"w": torch.tensor([float(i)])} for i in range(4)]
    # the score of an average is how close its weight is to 1.2
    score = lambda s: -abs(float(s["w"]) - 1.2)  # noqa: E731
    chosen, best = greedy_soup(states, [score(s) for s in states], score)
    # by score: 1 (0.2 away), 2 (0.8), 0 (1.2), 3 (1.8); avg(1,2)=1.5 is worse than 1 alone;
    # avg(1,0)=0.5 is worse too; avg(1,3)=2 worse: only 1
    assert chosen == [1] and best == pytest.approx(-0.2)
    score2 = lambda s: -abs(float(s["w"]) - 1.4)  # noqa: E731
    chosen, _ = greedy_soup(states, [score2(s) for s in states], score2)
    assert chosen == [1, 2]  # avg(1,2)=1.5 is 0.1 away, better than 1 alone (0.4)


def test_average_keeps_integer_tensors_of_the_first():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(4)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    out = average([a, b])
    assert out["w"].tolist() == [2.0, 4.0] and int(out["n"]) == 4
    assert greedy_order([0.1, 0.5, 0.5]) == [1, 2, 0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("soup")
    (folder / "tiny.synth").write_text(SPEC)
    return folder


def test_soup_is_the_average_of_its_ingredients(tiny, one_thread):
    result = soup(tiny / "tiny.synth", "digits", variants=3, lrs=[0.02, 0.005],
                  classes=[0, 1, 2])
    assert [v.seed for v in result.variants] == [1, 2, 3]
    assert [v.lr for v in result.variants] == [0.02, 0.005, 0.02]
    assert result.greedy[0] == result.best
    # different training seeds and rates: the variants differ
    w = [v.state["logits.weight"] for v in result.variants]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])
    want = average([result.variants[j].state for j in result.greedy])
    got = result.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    # the greedy soup never scores below its first ingredient on validation
    assert result.scores["greedy"]["val"] >= result.scores["best"]["val"]
    record = result.record()
    assert set(record["scores"]) == {"best", "uniform", "greedy"}


def test_synth_soup_writes_the_soup_and_a_report(tiny, capsys, one_thread):
    out, report = tiny / "soup.safetensors", tiny / "soup.json"
    assert run(["soup", str(tiny / "tiny.synth"), "--data", "digits", "--classes", "0-2",
                "--variants", "2", "-o", str(out), "--report", str(report)]) == 0
    text = capsys.readouterr().out
    assert "greedy soup" in text and "uniform soup" in text
    data = json.loads(report.read_text())
    assert len(data["variants"]) == 2
    loaded = synthdsl.load_compiled(out)
    prov = next(iter(loaded.provenance.values()))
    assert prov["soup"]["method"] == "greedy"
    assert run(["soup", str(tiny / "tiny.synth"), "--data", "digits", "--classes", "0-2",
                "--variants", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # the progress goes to stderr
    assert set(printed["scores"]) == {"best", "uniform", "greedy"}


def test_a_soup_needs_two_variants(tiny, capsys):
    assert run(["soup", str(tiny / "tiny.synth"), "--data", "digits", "--variants", "1"]) != 0
    assert "at least 2 variants" in capsys.readouterr().err
