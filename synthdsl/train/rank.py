"""Which starting point transfers best to the user's labels, before any fine-tuning.

`synth rank TARGET... --data D` computes each candidate's frozen features once — every
output of every target (a spec, artifact or run), maps pooled over their spatial
dimensions — on the training split, and scores them three ways, cheapest first:

* **LogME** (You et al., ICML 2021): the log marginal evidence of the labels under a
  Bayesian linear model on the features, maximised over its prior and noise precisions
  by the paper's fixed-point iteration, per class (one-hot targets), averaged and divided
  by the number of samples. No training, no hyper-parameters; higher is better.
* **kNN**: accuracy on the test split of a cosine k-nearest-neighbour vote over the
  training features (k = 10 by default).
* **linear probe**: accuracy on the test split of a multinomial logistic regression on
  the standardised training features (L-BFGS, L2 penalty), the classic "frozen
  features" probe.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> y = torch.arange(200) % 4
>>> good = torch.nn.functional.one_hot(y, 4).float() + 0.3 * torch.randn(200, 4, generator=g)
>>> noise = torch.randn(200, 4, generator=g)
>>> logme(good, y) > logme(noise, y)
True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from synthdsl.train.errors import EvalError

#: Fixed-point iterations of LogME at most, and the relative change of alpha/beta that ends
#: them, as the paper's own code has them. Where the features can fit the labels exactly
#: (fewer samples than dimensions) the evidence grows without bound as beta does, and the
#: score is the evidence where these stop.
LOGME_STEPS, LOGME_TOL = 11, 0.01


def logme(features: torch.Tensor, labels: torch.Tensor) -> float:
    """LogME of `features` [N, D] for integer `labels` [N]: the mean over classes of the
    maximised log evidence of a one-hot target, divided by N (higher is better)."""
    f = features.double()
    n, d = f.shape
    y = torch.nn.functional.one_hot(labels.long(), int(labels.max()) + 1).double()
    # the eigen-decomposition of F^T F (or of F F^T when there are fewer samples)
    if n >= d:
        sigma, v = torch.linalg.eigh(f.T @ f)
        proj = (f @ v).T @ y  # V^T F^T y, [D', C]
    else:
        sigma, u = torch.linalg.eigh(f @ f.T)
        proj = u.T @ y  # as the SVD: F^T y in the right-singular basis, scaled below
        proj = proj * sigma.clamp_min(0).sqrt()[:, None]
    sigma = sigma.clamp_min(0)
    evidences = []
    for k in range(y.shape[1]):
        yk, pk = y[:, k], proj[:, k]
        alpha, beta = 1.0, 1.0
        for _ in range(LOGME_STEPS):
            gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
            m2 = float((beta ** 2 * pk ** 2 / (alpha + beta * sigma) ** 2).sum())  # |m|^2
            res = _residual(yk, pk, sigma, alpha, beta)
            new_alpha = gamma / max(m2, 1e-300)
            new_beta = (n - gamma) / max(res, 1e-300)
            done = (abs(new_alpha / new_beta - alpha / beta) / (alpha / beta)) < LOGME_TOL
            alpha, beta = new_alpha, new_beta
            if done:
                break
        m2 = float((beta ** 2 * pk ** 2 / (alpha + beta * sigma) ** 2).sum())
        res = _residual(yk, pk, sigma, alpha, beta)
        ev = (d / 2 * math.log(alpha) + n / 2 * math.log(beta)
              - 0.5 * float(torch.log(alpha + beta * sigma).sum())
              - 0.5 * (d - sigma.numel()) * math.log(alpha)  # directions with no variance
              - beta / 2 * res - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi))
        evidences.append(ev / n)
    return float(sum(evidences) / len(evidences))


def _residual(yk: torch.Tensor, pk: torch.Tensor, sigma: torch.Tensor, alpha: float,
              beta: float) -> float:
    """||F m - y||^2 for m = beta A^-1 F^T y, from the eigen-decomposition: the part of
    y outside the features' span plus what the shrunk fit leaves of the rest."""
    shrink = alpha / (alpha + beta * sigma)
    inside = torch.where(sigma > 0, pk ** 2 / sigma.clamp_min(1e-300), torch.zeros_like(pk))
    return float((yk ** 2).sum() - inside.sum() + (shrink ** 2 * inside).sum())


def knn_accuracy(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor,
                 test_y: torch.Tensor, k: int = 10) -> float:
    """Accuracy of a cosine k-nearest-neighbour majority vote (ties: the nearer class)."""
    a = torch.nn.functional.normalize(train.float(), dim=1)
    b = torch.nn.functional.normalize(test.float(), dim=1)
    k = min(k, len(a))
    classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for i in range(0, len(b), 1024):
        sim = b[i:i + 1024] @ a.T
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(idx), classes)
        # each neighbour votes 1, plus a little for being nearer, which breaks ties
        votes.scatter_add_(1, train_y[idx].long(), 1 + 1e-3 * top)
        correct += int((votes.argmax(1) == test_y[i:i + 1024]).sum())
    return correct / len(b)


def probe_accuracy(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor,
                   test_y: torch.Tensor, l2: float = 1e-3, steps: int = 100) -> float:
    """Test accuracy of a multinomial logistic regression on standardised features."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    x, xt = (train - mean) / std, (test - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, train_y.long()) \
            + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xt @ w + b).argmax(1) == test_y).float().mean())


# ---- candidates -------------------------------------------------------------------------


@dataclass
class Candidate:
    """One output of one target, scored."""

    target: str
    output: str
    params: int
    dim: int
    seconds: float  #: computing its features on both splits
    logme: float
    knn: float
    probe: float

    @property
    def name(self) -> str:
        return f"{self.target}:{self.output}"


@dataclass
class RankReport:
    data: str
    train_samples: int
    test_samples: int
    candidates: list[Candidate] = field(default_factory=list)

    def ranked(self, by: str = "logme") -> list[Candidate]:
        return sorted(self.candidates, key=lambda c: -getattr(c, by))

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "train_samples": self.train_samples,
                "test_samples": self.test_samples,
                "candidates": [{**c.__dict__, "name": c.name} for c in self.ranked()]}

    def text(self) -> str:
        rows = [("rank", "candidate", "params", "dim", "features s", "LogME", "kNN acc",
                 "probe acc")]
        for i, c in enumerate(self.ranked(), 1):
            rows.append((str(i), c.name, f"{c.params:,}", str(c.dim), f"{c.seconds:.1f}",
                         f"{c.logme:.4f}", f"{c.knn:.3f}", f"{c.probe:.3f}"))
        widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) if j < 2 else v.rjust(w)
                           for j, (v, w) in enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return (f"{self.data}: {self.train_samples} training and {self.test_samples} test "
                "samples; ranked by LogME (cheapest first: LogME, kNN, linear probe)\n"
                + "\n".join(lines))

    def plot(self, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ranked = self.ranked()
        fig, axes = plt.subplots(1, 3, figsize=(12, 0.5 * len(ranked) + 1.6), sharey=True)
        names = [c.name for c in ranked][::-1]
        for ax, (key, title) in zip(axes, (("logme", "LogME"), ("knn", "kNN accuracy"),
                                           ("probe", "linear probe accuracy"))):
            ax.barh(names, [getattr(c, key) for c in ranked][::-1], color="#4c72b0")
            ax.set_title(title)
        fig.suptitle(f"candidates on {self.data}")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def features_of(values: torch.Tensor) -> torch.Tensor:
    """An output as one feature vector per sample: spatial maps averaged over their
    spatial dimensions ([B, C, H, W] -> [B, C]), sequences over tokens."""
    if values.dim() == 2:
        return values
    if values.dim() == 4:
        return values.mean((2, 3))
    if values.dim() == 3:
        return values.mean(1)
    raise EvalError(f"an output of shape {list(values.shape)} per batch is not a feature map")


def rank(targets: Sequence[str], data: str, classes: str | None = None,
         batch_size: int = 256, device: str = "cpu", k: int = 10,
         shots: int | None = None, shots_seed: int = 0) -> RankReport:
    """Score every output of every target on `data` (see the module): its training split
    (or `shots` labelled samples per class of it, seeded by `shots_seed`, as `synth train
    --shots` takes them) and its test split."""
    from synthdsl.train.captions import tokenizer_folder
    from synthdsl.train.data import DataSpec, parse_classes
    from synthdsl.train.evaluate import load_model
    from synthdsl.train.predict import predict_values

    chosen = parse_classes(classes) if classes else None
    spec = DataSpec(str(data), tuple(chosen) if chosen else None, shots, shots_seed)
    report = None
    for target in targets:
        loaded = load_model(target, device=device)
        model = loaded.model
        t0 = time.perf_counter()
        folder = tokenizer_folder(model.graph)
        train = spec.load_for("train", loaded.preprocess, folder)
        test = DataSpec(spec.source, spec.classes).load_for("test", loaded.preprocess, folder)
        ytr, yte = train.targets.long(), test.targets.long()
        if bool((ytr < 0).any()) or bool((yte < 0).any()):
            raise EvalError(f"{train.name} has unlabelled samples: ranking needs labels")
        vtr = predict_values(model, train, loaded.preprocess, batch_size, device)
        vte = predict_values(model, test, loaded.preprocess, batch_size, device)
        seconds = time.perf_counter() - t0
        report = report or RankReport(str(data), len(train), len(test))
        for name in model.output_names:
            if name not in vtr:
                continue
            ftr, fte = features_of(vtr[name]), features_of(vte[name])
            report.candidates.append(Candidate(
                str(target), name, _used_params(model, name), ftr.shape[1], seconds,
                logme(ftr, ytr), knn_accuracy(ftr, ytr, fte, yte, k),
                probe_accuracy(ftr, ytr, fte, yte)))
    if report is None:
        raise EvalError("name at least one candidate to rank")
    return report


def _used_params(model, output: str) -> int:
    """Parameters of the nodes an output depends on (each tensor once)."""
    import networkx as nx

    g = model.graph
    out = next(n for n in g.nodes if g.nodes[n]["kind"] == "output"
               and g.nodes[n]["name"] == output)
    names: dict[str, int] = {}
    for n in nx.ancestors(g, out):
        names.update(g.nodes[n].get("parameters") or {})
    return sum(names.values())
