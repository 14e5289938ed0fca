"""Metrics equal scikit-learn's on the same predictions, and render as table, JSON and PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from synthdsl.train.metrics import (ClassificationMetrics, classification_metrics, confusion_matrix,
                              plot_bars, plot_curves)


def _random_case(seed: int, n_classes: int, n: int, skew: bool):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    pred = y.copy()
    flip = rng.random(n) < 0.35
    pred[flip] = rng.integers(0, n_classes, int(flip.sum()))
    if skew:  # a class nobody predicts and a class absent from the truth
        pred[pred == n_classes - 1] = 0
        y[y == 1] = 2
    return y, pred


@pytest.mark.parametrize("seed,n_classes,n,skew", [
    (0, 2, 50, False), (1, 5, 300, False), (2, 10, 997, False), (3, 5, 120, True),
    (4, 3, 7, True),
])
def test_metrics_equal_sklearn(seed, n_classes, n, skew):
    y, pred = _random_case(seed, n_classes, n, skew)
    m = classification_metrics(y, pred, n_classes)
    labels = list(range(n_classes))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(m.precision, p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.recall, r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.f1, f, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(m.support, s)
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    for avg, ours in (("macro", (m.macro_precision, m.macro_recall, m.macro_f1)),):
        theirs = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg,
                                                     zero_division=0)[:3]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(m.confusion, skm.confusion_matrix(y, pred, labels=labels))


def test_json_round_trip_and_table():
    m = classification_metrics([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], ["cat", "dog", "eel"])
    d = json.loads(m.to_json())
    assert d["accuracy"] == pytest.approx(0.8)
    assert d["per_class"]["dog"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3),
                                     "support": 2}
    assert ClassificationMetrics.from_dict(d).confusion.tolist() == m.confusion.tolist()
    table = m.table()
    assert "macro avg" in table and "confusion matrix" in table
    assert table.splitlines()[1].split() == ["cat", "1.000", "1.000", "1.000", "1"]


def test_confusion_refuses_out_of_range():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        confusion_matrix([0, 1], [0], 3)


def test_plots_are_png(tmp_path):
    m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], 2)
    for path in (m.plot(tmp_path / "c.png", "t"),
                 plot_bars([{"name": "a", "mean": 0.8, "std": 0.02},
                            {"name": "b", "mean": 0.6, "std": 0.05}], tmp_path / "b.png"),
                 plot_curves({"a": [0.1, 0.5, 0.7]}, tmp_path / "l.png", "accuracy")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))
