"""What a model costs, measured side by side: parameters, bytes of its saved state, MACs,
CPU latency, and its accuracy on labelled images.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of
the float model: every matrix multiply and convolution torch runs (``mm``, ``addmm``,
``bmm``, ``convolution`` and their kin, wherever they are in the fx graph or in a part's
traced code) counts its multiply-adds; a FLOP there is 2 MACs. An int8 model does the
same multiply-adds in int8, so it is given its float model's count.

>>> from torch import nn
>>> count_macs(nn.Linear(8, 4), (torch.zeros(2, 8),))   # 2 rows x 8 inputs x 4 outputs
64
"""

from __future__ import annotations

import io
import statistics
import time
from typing import Callable, Sequence

import torch
from torch import nn

from synthdsl.library.prune import count_macs  # noqa: F401 - measured here too
from synthdsl.train.images import ImageData
from synthdsl.train.metrics import ClassificationMetrics, classification_metrics


def state_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what storing the weights costs (int8
    tensors and packed weights included)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def weight_count(model: nn.Module) -> int:
    """Parameters of a float model; of an int8 one, the elements of its weights, biases and
    normalisation tensors (packed int8 weights are not parameters)."""
    params = sum(p.numel() for p in model.parameters())
    if params:
        return params
    total = 0
    for v in model.state_dict().values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            total += v.numel()
        elif isinstance(v, tuple):
            total += sum(t.numel() for t in v if isinstance(t, torch.Tensor))
    return total


def latencies(models: dict[str, Callable], inputs: dict[int, tuple[torch.Tensor, ...]],
              repeats: int = 20, threads: int = 1, warmup: int = 3
              ) -> dict[str, dict[int, float]]:
    """Median seconds of one call of each model per batch size, the models interleaved
    (model A, B, C, A, B, C, ...) so that a slower moment of the machine falls on all of
    them; torch uses `threads` threads meanwhile."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out: dict[str, dict[int, float]] = {k: {} for k in models}
        with torch.inference_mode():
            for batch, x in inputs.items():
                times: dict[str, list[float]] = {k: [] for k in models}
                for i in range(warmup + repeats):
                    for name, model in models.items():
                        t = time.perf_counter()
                        model(*x)
                        if i >= warmup:
                            times[name].append(time.perf_counter() - t)
                for name, ts in times.items():
                    out[name][batch] = statistics.median(ts)
        return out
    finally:
        torch.set_num_threads(before)


def predictions(model: Callable, data: ImageData, inputs: Callable[[torch.Tensor], tuple],
                batch_size: int = 256) -> torch.Tensor:
    """The class each image of `data` is given (the argmax of the model's output)."""
    preds = []
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            pos = torch.arange(i, min(i + batch_size, len(data)))
            out = model(*inputs(data.images(pos)))
            if isinstance(out, dict):
                out = next(iter(out.values()))
            preds.append(out.float().argmax(-1))
    return torch.cat(preds)


def accuracy_of(model: Callable, data: ImageData, inputs: Callable[[torch.Tensor], tuple]
                ) -> ClassificationMetrics:
    """Accuracy, precision, recall and macro F1 of `model` on the labelled images."""
    pred = predictions(model, data, inputs)
    keep = data.targets >= 0
    return classification_metrics(data.targets[keep], pred[keep], data.classes)
