"""One zoo's tensor names in another's: the rules behind ``inherit ... with map="..."``.

``map="hf_vit_to_timm"`` initialises a timm Vision Transformer (its ``blocks``, one block,
or the whole model) from a Hugging Face ViT (its ``layers``, one layer, or the whole
model). Names are relative to the donor and the target modules, and translated by one
fixed table (:data:`HF_VIT_TO_TIMM`, Transformers 5's names and 4's):

==================================================  ======================================
Transformers (``layers.N.`` / ``encoder.layer.N.``)  timm (``blocks.N.``)
==================================================  ======================================
``layernorm_before``                                ``norm1``
``attention.q_proj``, ``k_proj``, ``v_proj``         ``attn.qkv``: q, k, v joined on dim 0
(``attention.attention.query``, ``key``, ``value``)
``attention.o_proj`` (``attention.output.dense``)    ``attn.proj``
``layernorm_after``                                 ``norm2``
``mlp.fc1`` (``intermediate.dense``)                 ``mlp.fc1``
``mlp.fc2`` (``output.dense``)                       ``mlp.fc2``
``embeddings.cls_token``                            ``cls_token``
``embeddings.position_embeddings``                  ``pos_embed``
``embeddings.patch_embeddings.projection``          ``patch_embed.proj``
``layernorm``                                       ``norm``
==================================================  ======================================

timm's fused ``qkv`` Linear computes ``x @ [Wq; Wk; Wv]ᵀ + [bq; bk; bv]``, its output
split into q, k and v in that order, so joining Transformers' three projections in that
order along their output dimension gives the same attention. A fused tensor needs all
three (else S207); everything else is paired one to one and strict as ``map="name"``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch

#: Where a layer's names start: (donor prefix pattern, the target's prefix).
_LAYER_PREFIXES = ((r"layers\.(\d+)\.", r"blocks.\1."),
                   (r"encoder\.layer\.(\d+)\.", r"blocks.\1."), (r"(\d+)\.", r"\1."), (r"", r""))
#: Within a layer or the model: (donor pattern, target name, slot of a joined tensor).
HF_VIT_TO_TIMM: tuple[tuple[str, str, int | None], ...] = (
    (r"layernorm_before\.(weight|bias)", r"norm1.\1", None),
    (r"layernorm_after\.(weight|bias)", r"norm2.\1", None),
    (r"attention\.q_proj\.(weight|bias)", r"attn.qkv.\1", 0),
    (r"attention\.k_proj\.(weight|bias)", r"attn.qkv.\1", 1),
    (r"attention\.v_proj\.(weight|bias)", r"attn.qkv.\1", 2),
    (r"attention\.attention\.query\.(weight|bias)", r"attn.qkv.\1", 0),
    (r"attention\.attention\.key\.(weight|bias)", r"attn.qkv.\1", 1),
    (r"attention\.attention\.value\.(weight|bias)", r"attn.qkv.\1", 2),
    (r"attention\.o_proj\.(weight|bias)", r"attn.proj.\1", None),
    (r"attention\.output\.dense\.(weight|bias)", r"attn.proj.\1", None),
    (r"mlp\.fc1\.(weight|bias)", r"mlp.fc1.\1", None),
    (r"intermediate\.dense\.(weight|bias)", r"mlp.fc1.\1", None),
    (r"mlp\.fc2\.(weight|bias)", r"mlp.fc2.\1", None),
    (r"output\.dense\.(weight|bias)", r"mlp.fc2.\1", None),
)
#: Names outside the layers (a whole model as donor).
_MODEL_NAMES = ((r"embeddings\.cls_token", "cls_token"),
                (r"embeddings\.position_embeddings", "pos_embed"),
                (r"embeddings\.patch_embeddings\.projection\.(weight|bias)",
                 r"patch_embed.proj.\1"),
                (r"layernorm\.(weight|bias)", r"norm.\1"))
#: The zoo maps by name; the names of a joined tensor's parts, by slot.
ZOO_MAPS = {"hf_vit_to_timm": ("q", "k", "v")}


def translate(name: str) -> tuple[str, int | None] | None:
    """timm's name of a Transformers ViT tensor and its slot in a joined tensor; None for
    a tensor timm's ViT has no counterpart of (the pooler)."""
    for pattern, target in _MODEL_NAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, target, name), None
    for prefix, into in _LAYER_PREFIXES:
        m = re.match(prefix, name)
        if m is None:
            continue
        rest = name[m.end():]
        for pattern, target, slot in HF_VIT_TO_TIMM:
            if re.fullmatch(pattern, rest):
                return m.expand(into) + re.sub(pattern, target, rest), slot
    return None


def map_by_zoo(targets: Mapping[str, tuple], donor: Mapping[str, tuple], strip: str = ""
               ) -> tuple[list[tuple[str, Any]], list[str], list[str]]:
    """Pair target tensors with donor keys by :func:`translate`: (target, key) or (target,
    [q, k, v keys]) for a joined one; the problems (a joined tensor lacking a part); what
    is left unpaired on either side."""
    groups: dict[str, dict[int | None, str]] = {}
    unused = []
    for key in donor:
        name = key[len(strip):] if strip and key.startswith(strip) else key
        found = translate(name)
        if found is None:
            unused.append(f"'{key}' of the donor has no counterpart in timm's ViT")
            continue
        groups.setdefault(found[0], {})[found[1]] = key
    mapping, problems, skipped = [], [], []
    for t in targets:
        group = groups.pop(t, None)
        if group is None:
            skipped.append(f"'{t}' of the target is not in the donor")
        elif None in group:
            mapping.append((t, group[None]))
        elif sorted(group) != [0, 1, 2]:
            have = ", ".join(f"'{k}'" for k in group.values())
            problems.append(f"'{t}' joins q, k and v; the donor gives only {have}")
        else:
            mapping.append((t, [group[0], group[1], group[2]]))
    skipped += [f"'{k}' of the donor is not used" for g in groups.values() for k in g.values()]
    return mapping, problems, skipped + unused


def donor_shape(donor: Mapping[str, tuple], key: str | Sequence[str]) -> tuple[int, ...]:
    """The shape of a donor tensor, or of several joined on their first dimension."""
    if isinstance(key, str):
        return tuple(donor[key])
    shapes = [tuple(donor[k]) for k in key]
    if any(s[1:] != shapes[0][1:] for s in shapes):
        raise ValueError("the parts of a joined tensor differ beyond their first dimension: "
                         + ", ".join(str(list(s)) for s in shapes))
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def read_joined(reader, key: str | Sequence[str]) -> torch.Tensor:
    """A donor tensor, or several joined on their first dimension (q, k, v)."""
    if isinstance(key, str):
        return reader.get(key)
    return torch.cat([reader.get(k) for k in key], dim=0)


def joined_origin(reader, key: str | Sequence[str]) -> dict[str, Any]:
    """Where a donor tensor came from; for a joined one, its first part's file and every
    part's key (as the file names it), in order."""
    if isinstance(key, str):
        return reader.origin(key)
    parts = [reader.origin(k) for k in key]
    return {**parts[0], "key": [p.get("key", k) for p, k in zip(parts, key)]}
