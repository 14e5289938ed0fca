"""`synth rank`: LogME, kNN and linear probes on frozen features, before fine-tuning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from synthdsl.cli.app import run
from synthdsl.train.rank import knn_accuracy, logme, probe_accuracy


def reference_logme(f: np.ndarray, y: np.ndarray) -> float:
    """LogME written plainly: for each one-hot target, alpha and beta by the paper's fixed
    point (at most 11 steps, until alpha/beta moves by < 1%) with A = alpha I + beta F^T F
    inverted directly, then the log evidence at them / N."""
    n, d = f.shape
    out = []
    for k in range(y.max() + 1):
        t = (y == k).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            a = alpha * np.eye(d) + beta * f.T @ f
            m = beta * np.linalg.solve(a, f.T @ t)
            gamma = d - alpha * np.trace(np.linalg.inv(a))
            res = float(((f @ m - t) ** 2).sum())
            lam = alpha / beta
            alpha, beta = gamma / float(m @ m), (n - gamma) / res
            if abs(alpha / beta - lam) / lam < 0.01:
                break
        a = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.solve(a, f.T @ t)
        res = float(((f @ m - t) ** 2).sum())
        ev = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
              - beta / 2 * res - alpha / 2 * float(m @ m) - 0.5 * np.linalg.slogdet(a)[1])
        out.append(ev / n)
    return float(np.mean(out))


@pytest.mark.parametrize("n,d", [(120, 8), (20, 40)])  # more samples than features, fewer
def test_logme_equals_a_plain_reference(n, d):
    rng = np.random.default_rng(n + d)
    y = np.arange(n) % 3
    f = rng.normal(size=(n, d)) + np.eye(3)[y] @ rng.normal(size=(3, d))
    ours = logme(torch.tensor(f), torch.tensor(y))
    assert abs(ours - reference_logme(f, y)) < 1e-3 * abs(ours) + 1e-6


def test_scores_order_informative_above_random_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 5
    good = torch.nn.functional.one_hot(y, 5).float() @ torch.randn(5, 16, generator=g) \
        + 0.5 * torch.randn(300, 16, generator=g)
    noise = torch.randn(300, 16, generator=g)
    tr, te = slice(0, 200), slice(200, 300)
    assert logme(good, y) > logme(noise, y)
    assert knn_accuracy(good[tr], y[tr], good[te], y[te]) > 0.9
    assert knn_accuracy(noise[tr], y[tr], noise[te], y[te]) < 0.45
    assert probe_accuracy(good[tr], y[tr], good[te], y[te]) > 0.9
    assert probe_accuracy(noise[tr], y[tr], noise[te], y[te]) < 0.45


PIXELS = """synth Pixels
input image: [B, 3, 16, 16]
flat = reshape(image, shape=[768])
output flat
"""
RANDOM_TRUNK = """synth RandomTrunk
input image: [B, 3, 16, 16]
source r = timm("test_resnet", num_classes=0)
shallow, deep = r(image, stages=[1, 3])
freeze r
output deep, shallow
"""


def test_the_command_ranks_every_output_of_every_target(tmp_path, capsys):
    a, b = tmp_path / "pixels.synth", tmp_path / "trunk.synth"
    a.write_text(PIXELS)
    b.write_text(RANDOM_TRUNK)
    plot = tmp_path / "rank.png"
    assert run(["rank", str(a), str(b), "--data", "digits", "--json",
                "--plot", str(plot)]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in data["candidates"]]
    assert sorted(names) == sorted([f"{a}:flat", f"{b}:deep", f"{b}:shallow"])
    scores = [c["logme"] for c in data["candidates"]]
    assert scores == sorted(scores, reverse=True)  # ranked by LogME
    by = {c["output"]: c for c in data["candidates"]}
    # the digits' own pixels separate them well; a random trunk's features less so
    assert by["flat"]["knn"] > 0.9 and by["flat"]["logme"] > by["deep"]["logme"]
    assert by["shallow"]["dim"] > 0 and by["deep"]["dim"] > by["shallow"]["dim"]
    assert plot.stat().st_size > 1000
    assert run(["rank", str(a), "--data", "digits"]) == 0
    out = capsys.readouterr().out
    assert "LogME" in out and "probe acc" in out and f"{a}:flat" in out
