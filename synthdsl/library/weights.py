"""Filling weights: only the tensors a compiled module keeps, and where each one came from.

:func:`materialize` fills modules built on the ``meta`` device from a
:class:`~synthdsl.library.checkpoints.TensorReader` (all checkpoint I/O lives in
`synthdsl.library.checkpoints`), recording each tensor's provenance; the
transforms of inherited tensors (rows, channel adaptation, interpolation, fit)
are here too.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from synthdsl.lang.options import INHERIT_OPTIONS
from synthdsl.library.checkpoints import TensorReader, TorchReader


class ChangedError(ValueError):
    """A checkpoint that no longer matches what the check saw in it."""


def persistent_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(name, tensor, is_parameter) for everything `state_dict()` holds, in its order."""
    params = {id(p) for p in module.parameters()}
    for name, t in module.state_dict(keep_vars=True).items():
        yield name, t, id(t) in params


def has_hidden_state(model: nn.Module) -> bool:
    """Tensors a checkpoint cannot restore: non-persistent buffers, or tensors kept as plain
    attributes. Such a model must be built for real before its weights are loaded."""
    persistent = set(model.state_dict(keep_vars=True))
    if any(name not in persistent for name, _ in model.named_buffers()):
        return True
    return any(isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter)
               for m in model.modules() for k, v in vars(m).items()
               if not k.startswith("_"))


def dtype_kind(dtype: torch.dtype) -> str:
    """``bool``, ``integer``, ``float`` or ``complex``: what casting between kinds changes."""
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "integer"


def dtype_problems(expected: Mapping[str, torch.dtype],
                   found: Mapping[str, torch.dtype]) -> list[str]:
    """Tensors whose checkpoint dtype is of another kind than the model's (an integer or
    bool tensor into a float one, or the reverse): a cast would change their values.
    Precision changes within a kind (float16 into float32) are not problems."""
    problems = []
    for k, want in expected.items():
        have = found.get(k)
        if have is not None and dtype_kind(have) != dtype_kind(want):
            problems.append(f"'{k}' is {str(have).removeprefix('torch.')} in the checkpoint, "
                            f"the model holds it as {str(want).removeprefix('torch.')}")
    return problems


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor, is_param: bool) -> None:
    *path, leaf = name.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    if is_param:
        old = owner._parameters[leaf]
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        owner._buffers[leaf] = value


def materialize(module: nn.Module, key_of: Callable[[str], str], reader: TensorReader,
                provenance: dict[str, dict], prefix: str, source: str) -> None:
    """Replace every persistent tensor of `module` (built on meta) by its checkpoint value.

    `key_of(local_name)` gives the checkpoint key; `provenance` gets an entry per tensor
    under `prefix.local_name`."""
    for name, t, is_param in list(persistent_tensors(module)):
        key = key_of(name)
        try:
            value = reader.get(key)
        except KeyError:
            raise ChangedError(f"'{key}' is no longer in the file") from None
        if tuple(value.shape) != tuple(t.shape):
            raise ChangedError(f"'{key}' now has shape {list(value.shape)}, the model expects "
                               f"{list(t.shape)}")
        problems = dtype_problems({key: t.dtype}, {key: value.dtype})
        if problems:
            raise ChangedError(problems[0] + ": a cast would change its values")
        # a memory-mapped tensor is copied out of the file; safetensors already gives a copy
        value = value.to(dtype=t.dtype, copy=isinstance(reader, TorchReader))
        _set_tensor(module, name, value, is_param)
        provenance[f"{prefix}.{name}"] = {"source": source, **reader.origin(key),
                                          "transform": "copy"}


# ---- transforms of inherited tensors ------------------------------------------------

#: How an inherited tensor of another shape is made to fit (the language's `adapt=`).
ADAPT_MODES = INHERIT_OPTIONS["adapt"].choices


def adapt_channels(w: torch.Tensor, channels: int, mode: str) -> torch.Tensor:
    """A first layer's weight for a new input-channel count (dimension 1), as timm's
    `adapt_input_conv` does: to one channel the sum (or mean) over channels; to more,
    the channels repeated and scaled so activations keep their size."""
    old = w.shape[1]
    if channels == old:
        return w
    if channels == 1:
        return w.sum(1, keepdim=True) if mode == "channels_sum" else w.mean(1, keepdim=True)
    if channels < old:
        out = w[:, :channels]
        return out * (old / channels) if mode == "channels_sum" else out
    reps = -(-channels // old)
    return w.repeat(1, reps, *([1] * (w.dim() - 2)))[:, :channels] * (old / channels)


def _grid(n: int) -> int | None:
    r = int(round(n ** 0.5))
    return r if r * r == n else None


def interpolate_to(t: torch.Tensor, shape: tuple[int, ...], prefix_tokens: int | None = None
                   ) -> torch.Tensor:
    """Resize a position embedding ([1, prefix + H*W, C]) or a spatial map (last two dims)."""
    import torch.nn.functional as F

    if t.dim() == 3 and tuple(t.shape[::2]) == (shape[0], shape[2]):
        candidates = [prefix_tokens] if prefix_tokens is not None else range(0, 9)
        for p in candidates:
            old, new = _grid(t.shape[1] - p), _grid(shape[1] - p)
            if old and new:
                from timm.layers import resample_abs_pos_embed

                return resample_abs_pos_embed(t, [new, new], [old, old], num_prefix_tokens=p,
                                              verbose=False)
        raise ValueError(f"cannot see a square grid of positions in {list(t.shape)} → "
                         f"{list(shape)}")
    if t.dim() >= 3 and t.shape[:-2] == torch.Size(shape[:-2]):
        flat = t.reshape(-1, 1, *t.shape[-2:]).float()
        out = F.interpolate(flat, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
        return out.reshape(shape).to(t.dtype)
    raise ValueError(f"interpolation resizes position embeddings [1, N, C] or the last two "
                     f"dimensions; {list(t.shape)} → {list(shape)} is neither")


def fit_to(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Truncate or zero-pad every dimension to `shape` (same rank)."""
    if t.dim() != len(shape):
        raise ValueError(f"cannot fit rank {t.dim()} into rank {len(shape)}")
    out = t[tuple(slice(0, min(a, b)) for a, b in zip(t.shape, shape))]
    pad = []
    for a, b in reversed(list(zip(out.shape, shape))):
        pad += [0, b - a]
    return torch.nn.functional.pad(out, pad) if any(pad) else out


def transform(t: torch.Tensor, target_shape: tuple[int, ...], rows, adapt: str | None,
              prefix_tokens: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Apply an inheritance edge's transforms to one donor tensor; what was done."""
    done = []
    if rows is not None and t.dim() >= 1:
        index = list(range(rows)) if isinstance(rows, int) else list(rows)
        t = t[index]
        done.append(f"rows {rows}" if isinstance(rows, int) else f"rows {index}")
    shape = tuple(target_shape)
    if tuple(t.shape) != shape and adapt is not None:
        if adapt.startswith("channels") and t.dim() >= 2 and t.dim() == len(shape) \
                and t.shape[0] == shape[0] and t.shape[2:] == torch.Size(shape[2:]):
            t = adapt_channels(t, shape[1], adapt)
            done.append(f"adapt-channels ({adapt[len('channels_'):]})")
        elif adapt == "interpolate":
            t = interpolate_to(t, shape, prefix_tokens)
            done.append("interpolate")
        elif adapt == "fit":
            t = fit_to(t, shape)
            done.append("fit")
    return t, done or ["copy"]
