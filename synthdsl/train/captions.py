"""A folder of images with a captions file: images for a spec's image input, captions turned
into token ids (and a mask) for its integer inputs.

``root/captions.tsv`` (or ``captions.txt``) holds one sample a line,
``file<TAB>caption`` or ``file<TAB>caption<TAB>label``; blank lines and lines starting
with ``#`` are skipped, and ``file`` is a path under ``root``. The image goes to the
spec's image input (read at that input's size, :mod:`synthdsl.train.images`), the caption
is tokenized into the spec's integer input and, where the spec has one, its mask (a
``bool`` input, or an integer input whose name holds ``mask``). Ids are padded or cut to
the input's fixed length ``T``, or padded to the longest caption of each batch when ``T``
is symbolic. Labels name classes (sorted); a sample without one is unlabelled.

The tokenizer is a Hugging Face tokenizer read from a folder, never from the network and
never running code from it (:func:`load_tokenizer`): the folder of the spec's first
``hf(...)`` source that holds one, else ``root/tokenizer/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from synthdsl.files import NotReadable, read_regular
from synthdsl.train.errors import DataError
from synthdsl.train.feed import Feed, InputSpec
from synthdsl.train.images import FolderImages
from synthdsl.train.named import Column, ImagesColumn, NamedData, fixed_split

#: The names a captions file may have, in the order they are looked for.
CAPTION_FILES = ("captions.tsv", "captions.txt")
#: Files that mark a folder as holding a Hugging Face tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
#: Most bytes a captions file may have.
CAPTIONS_MAX_BYTES = 256 * 2**20


def caption_file(root: Path) -> Path | None:
    """The captions file of folder `root`, or None."""
    return next((root / n for n in CAPTION_FILES if (root / n).is_file()), None)


def has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f).is_file() for f in TOKENIZER_FILES)


def tokenizer_folder(graph) -> Path | None:
    """The folder of the spec's first ``hf(...)`` source that holds a tokenizer."""
    for s in graph.of_kind("source"):
        node = graph.nodes[s]
        if node.get("constructor") != "hf" or not isinstance(node.get("target"), str):
            continue
        folder = Path(node["target"])
        if not folder.is_absolute():
            folder = Path(graph.graph.get("base_dir", ".")) / folder
        if has_tokenizer(folder):
            return folder
    return None


def load_tokenizer(folder: str | Path) -> Any:
    """The Hugging Face tokenizer saved in `folder` (its files only: nothing is downloaded
    and no code of the folder runs)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise DataError(f"the tokenizer in '{folder}' needs Hugging Face Transformers, which "
                        "is not installed", hint="pip install transformers, or give token ids "
                        "in an .npz (one array per input)") from None
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                             trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - files from anywhere: any failure is theirs
        raise DataError(f"cannot read a tokenizer from '{folder}': "
                        f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else e!r}"
                        ) from None


class TokenColumn:
    """Token ids (or their mask) of every caption, padded per batch: to `length` when the
    input's length is fixed (cut there when longer), else to the batch's longest."""

    def __init__(self, ids: Sequence[Sequence[int]], length: int | None, pad: int,
                 mask: bool, dtype: str) -> None:
        self.ids, self.length, self.pad = [list(r) for r in ids], length, pad
        self.mask, self.dtype = mask, getattr(torch, dtype)

    def take(self, positions: torch.Tensor) -> torch.Tensor:
        rows = [self.ids[int(i)] for i in positions]
        width = self.length or max((len(r) for r in rows), default=1)
        out = torch.full((len(rows), width), 0 if self.mask else self.pad, dtype=torch.long)
        for k, r in enumerate(rows):
            r = r[:width]
            out[k, :len(r)] = 1 if self.mask else torch.tensor(r, dtype=torch.long)
        return out.to(self.dtype)

    def describe(self) -> str:
        what = "mask" if self.mask else "token ids"
        return f"{what} [{self.length or 'longest'}] {str(self.dtype).removeprefix('torch.')}"


def roles(specs: Sequence[InputSpec], where: str
          ) -> tuple[InputSpec | None, InputSpec | None, InputSpec | None]:
    """Which input takes the image, the token ids and the mask; D001 when the spec's
    inputs are not what a captions folder fills."""
    images = [s for s in specs if s.is_image]
    masks = [s for s in specs if s.dtype == "bool" or (s.is_integer and "mask" in s.name)]
    ids = [s for s in specs if s.is_integer and s not in masks]
    other = [s for s in specs if s not in images + masks + ids]
    if len(images) > 1 or len(ids) > 1 or len(masks) > 1 or other or not (images or ids) \
            or any(len(s.dims) != 2 for s in ids + masks):
        raise DataError(f"'{where}' gives each sample one image and one caption, which fill "
                        "an image input [B, C, H, W], a token-id input [B, T] and a mask "
                        "[B, T]; the spec declares " + ", ".join(s.describe() for s in specs),
                        hint="give the data as an .npz with one array per input ("
                        + ", ".join(s.name for s in specs) + ")")
    return (images[0] if images else None, ids[0] if ids else None,
            masks[0] if masks else None)


def read_captions(path: Path, root: Path) -> list[tuple[Path, str, str | None]]:
    """The lines of a captions file: (image file, caption, label or None)."""
    try:
        text = read_regular(path, CAPTIONS_MAX_BYTES, "captions file").decode("utf-8")
    except (OSError, NotReadable, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the captions file '{path}': "
                        f"{getattr(e, 'strerror', None) or e}") from None
    out = []
    base = root.resolve()
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) not in (2, 3) or not fields[0].strip():
            raise DataError(f"'{path}' line {no}: expected file<TAB>caption or "
                            f"file<TAB>caption<TAB>label, found {len(fields)} fields",
                            hint="separate the fields with one tab each")
        file = (root / fields[0].strip()).resolve()
        if base not in file.parents:
            raise DataError(f"'{path}' line {no}: image '{fields[0]}' lies outside '{root}'",
                            hint="name image files by their path under the captions' folder")
        label = fields[2].strip() if len(fields) == 3 and fields[2].strip() else None
        out.append((file, fields[1], label))
    if not out:
        raise DataError(f"'{path}' holds no captions")
    return out


def load_captions(root: Path, split: str, feed: Feed, tokenizer_dir: Path | None) -> NamedData:
    """The `split` of the captions folder `root` for the inputs `feed` describes."""
    path = caption_file(root)
    if path is None:
        raise DataError(f"'{root}' has no {' or '.join(CAPTION_FILES)}")
    image, ids, mask = roles(feed.specs, str(path))
    lines = read_captions(path, root)
    classes = sorted({lab for _, _, lab in lines if lab is not None})
    y = np.array([classes.index(lab) if lab is not None else -1 for _, _, lab in lines],
                 dtype=np.int64)
    pos = fixed_split(y, bool(classes), split)
    lines, y = [lines[i] for i in pos], y[pos]
    targets = torch.from_numpy(y)
    columns: dict[str, Column] = {}
    if image is not None:
        pre = feed.image(image.name)
        columns[image.name] = ImagesColumn(FolderImages(
            f"{root.name}/{split}", [f for f, _, _ in lines], targets, classes,
            pre.size if pre else None, (pre.channels if pre else None) or 3))
    if ids is not None:
        folder = tokenizer_dir or (root / "tokenizer" if has_tokenizer(root / "tokenizer")
                                   else None)
        if folder is None:
            raise DataError(f"input '{ids.name}' takes token ids, and no tokenizer is at hand "
                            f"to make them from the captions of '{path}'",
                            hint="give the ids in an .npz (one array per input: "
                            + ", ".join(s.name for s in feed.specs) + "), save a Hugging Face "
                            f"tokenizer in '{root / 'tokenizer'}', or take the text tower from "
                            "an hf(...) source whose folder holds one (pip install "
                            "transformers)")
        columns.update(_tokenized(load_tokenizer(folder), folder, [c for _, c, _ in lines],
                                  ids, mask))
    return NamedData(f"{root.name}/{split}", columns, targets, classes)


def _tokenized(tok, folder: Path, captions: list[str], ids: InputSpec,
               mask: InputSpec | None) -> dict[str, Column]:
    length = ids.fixed(1)
    kwargs = {"truncation": True, "max_length": length} if length else {}
    rows = tok(captions, add_special_tokens=True, **kwargs)["input_ids"]
    top = max((max(r) for r in rows if r), default=0)
    if ids.bound is not None and top >= ids.bound:
        raise DataError(f"the tokenizer in '{folder}' gives id {top}, but input '{ids.name}' "
                        f"feeds an Embedding of {ids.bound} rows (ids 0..{ids.bound - 1})",
                        hint=f"give the Embedding num={len(tok)} (the tokenizer's vocabulary)",
                        code="D004")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: dict[str, Column] = {ids.name: TokenColumn(rows, length, pad, False, ids.dtype)}
    if mask is not None:
        out[mask.name] = TokenColumn(rows, mask.fixed(1) or length, pad, True, mask.dtype)
    return out
