"""``hf("ckpt/tiny_bert")``: Hugging Face Transformers models as a kind of source.

The target is a folder in the ``save_pretrained`` layout (``config.json`` and
``model.safetensors``, or an older ``pytorch_model.bin``), resolved from the spec's
folder, or a name on the Hugging Face hub (``hf("bert-base-uncased")``) for machines
with a network or a cache: a target that is no folder here and reads like a hub name
(``name`` or ``org/name``) is looked up there (``HF_HUB_OFFLINE=1``: the cache only;
neither is S203).

The model is Transformers' base model of the config (``AutoModel.from_config``, never
the folder's own code), built on the ``meta`` device for the check; the other options
of ``hf(...)`` override entries of the config (``hidden_dropout_prob=0.0``; an entry the
config does not have is S402). Its tensors come from the weights file through
:class:`HFReader`, under the model's own names: Transformers' checkpoint renamings of
the model type apply (a ViT saved as ``encoder.layer.0.attention.attention.query``
is read into ``layers.0.attention.q_proj``), and a task model's checkpoint (keys
under ``bert.``) gives its base model's tensors, its head's left unread. The file's
header is checked against the model before anything is read (S205); the compiler
fills the meta model tensor by tensor, reading only what the spec keeps, once the
model's non-persistent buffers (``position_ids``) are made by Transformers' own
initialisation (:meth:`HFKind.restore_hidden`).

Parts are :mod:`synthdsl.library.hf_parts`; the preprocessing of a vision model is
its folder's ``preprocessor_config.json`` (mean, std, size), else None.
"""

from __future__ import annotations

import contextvars
import functools
import importlib.util
import json
import os
import re
import weakref
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from synthdsl.files import read_regular
from synthdsl.lang.errors import SynthError, did_you_mean
from synthdsl.library.checkpoints import ReaderCache, TensorReader, reason
from synthdsl.library.hf_parts import hf_plan
from synthdsl.library.sources import (SourceKind, compare_state, model_state_dtypes,
                                      model_state_shapes, register_source_kind)
from synthdsl.library.weights import dtype_problems

#: The weights files of a folder, in the order they are preferred (an index: the model
#: saved in shards, :mod:`synthdsl.library.shards`).
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
#: What is fetched of a hub model: its config, weights (whole or in shards), preprocessing
#: and tokenizer.
HUB_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json",
             "model-*-of-*.safetensors", "preprocessor_config.json",
             "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "vocab.txt", "vocab.json", "merges.txt")
#: The largest config or preprocessor file read.
CONFIG_MAX_BYTES = 4 * 2**20
#: What a hub name looks like: ``name`` or ``org/name``.
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
#: How a spec asks for the extra that brings Transformers.
INSTALL_HINT = "pip install synthdsl[hf] (Hugging Face Transformers)"
#: PIL's resampling codes, as preprocessing names them.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def has_transformers() -> bool:
    return importlib.util.find_spec("transformers") is not None


def _offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


# ---- where the model is ----------------------------------------------------------------


def is_hub_name(target: str, folder: Path) -> bool:
    """A target that names no folder here and reads like a hub name (``org/name``)."""
    return not folder.is_dir() and bool(_HUB_NAME.match(target))


def weights_file(folder: Path) -> Path | None:
    """The folder's weights file (safetensors preferred), or None."""
    return next((folder / n for n in WEIGHTS_FILES if (folder / n).is_file()), None)


@functools.lru_cache(maxsize=32)
def hub_folder(repo: str, offline: bool) -> str:
    """The local snapshot of a hub model (its config, weights and preprocessing files),
    downloaded once; from the cache alone when `offline`. Raises what the hub raises."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo, allow_patterns=list(HUB_FILES), local_files_only=offline)


def folder_of(node: Mapping[str, Any]) -> Path:
    """The folder the source's model is in: its own, or a hub model's snapshot (S203 when
    the hub cannot give it)."""
    if not node.get("hub"):
        return Path(node["folder"])
    repo = node["hub"]
    try:
        return Path(hub_folder(repo, _offline()))
    except Exception as e:  # noqa: BLE001 - no network, no such model, not in the cache
        raise SynthError(
            "S203", f"'{repo}' is no folder beside the spec, and the Hugging Face hub cannot "
            f"give a model of that name" + (" (HF_HUB_OFFLINE=1 and it is not in the cache)"
                                              if _offline() else ""),
            node["target_span"],
            notes=[f"{type(e).__name__}: {str(e).splitlines()[0][:300]}" if str(e)
                   else type(e).__name__, f"looked for the folder '{node['folder']}'"],
            hint="a relative folder starts at the spec's own folder; a hub model is "
                 "downloaded once with a network (it is cached)") from None


def _where(node: Mapping[str, Any], name: str) -> str:
    """A file of the source's folder as the spec would write it."""
    return f"{node['target'].rstrip('/')}/{name}"


def read_config(node: Mapping[str, Any]) -> dict:
    """The folder's ``config.json`` as a table (S203: missing or unreadable; S201: no
    model type Transformers knows)."""
    if node.get("embedded"):
        return dict(node["embedded"]["config"])
    folder = folder_of(node)
    path = folder / "config.json"
    span = node["target_span"]
    if not folder.is_dir():
        raise SynthError("S203", f"folder '{node['target']}' does not exist", span,
                         hint="an hf(...) folder is what save_pretrained writes (config.json, "
                              "model.safetensors); a relative path starts at the spec's folder")
    if not path.is_file():
        raise SynthError("S203", f"folder '{node['target']}' has no config.json", span,
                         hint="an hf(...) folder is what save_pretrained writes: config.json "
                              "and model.safetensors")
    try:
        config = json.loads(read_regular(path, CONFIG_MAX_BYTES, "config file"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SynthError("S203", f"cannot read '{_where(node, 'config.json')}': "
                         f"{reason(e) if isinstance(e, OSError) else 'it is not valid JSON'}",
                         span) from None
    if not isinstance(config, dict):
        raise SynthError("S203", f"'{_where(node, 'config.json')}' is not a JSON object", span)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    kind = config.get("model_type")
    if not isinstance(kind, str) or kind not in CONFIG_MAPPING_NAMES:
        own = " (the folder brings its own code, which synthdsl never runs)" \
            if config.get("auto_map") else ""
        raise SynthError("S201", f"'{_where(node, 'config.json')}' names "
                         + (f"model_type '{kind}', which Transformers does not know{own}"
                            if isinstance(kind, str) else "no model_type"), span,
                         hint=did_you_mean(str(kind), CONFIG_MAPPING_NAMES)
                         or "Transformers' model types: bert, roberta, vit, wav2vec2, ...")
    if kind not in MODEL_MAPPING_NAMES:
        raise SynthError("S201", f"Transformers has no base model (AutoModel) for model_type "
                         f"'{kind}'", span)
    return config


def load_config(node: Mapping[str, Any]):
    """The model's config, the source's options overriding its entries."""
    from transformers import AutoConfig

    if node.get("embedded"):  # an artifact's own copy of config.json
        entries = dict(node["embedded"]["config"])
        kind = entries.pop("model_type")
        return AutoConfig.for_model(kind, **{**entries, **node.get("create_kwargs", {})})
    return AutoConfig.from_pretrained(str(folder_of(node)), local_files_only=True,
                                      trust_remote_code=False, **node.get("create_kwargs", {}))


def options_problem(node: Mapping[str, Any], config: Mapping[str, Any]) -> SynthError | None:
    """An option that is no entry of the config, or that names weights (S402 at it)."""
    from transformers import AutoConfig

    known = set(config) | set(AutoConfig.for_model(config["model_type"]).to_dict())
    for name in node.get("create_kwargs", {}):
        span = node.get("option_spans", {}).get(name, node["span"])
        if name in ("weights", "pretrained"):
            return SynthError("S402", f"hf('{node['target']}') takes no {name}=: its weights "
                              "are those of its folder", span,
                              hint="save other weights into a folder with save_pretrained")
        if name not in known:
            return SynthError("S402", f"hf('{node['target']}') has no option '{name}': the "
                              f"options of hf(...) override entries of its config.json",
                              span, hint=did_you_mean(name, sorted(known))
                              or "its entries are those of config.json")
    return None


# ---- its tensors ----------------------------------------------------------------------


def _conversions(model: nn.Module):
    """Transformers' renamings and converters of the model's checkpoints ([] before 5.0)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming
    except ImportError:
        return [], []
    transforms = get_model_conversion_mapping(model)
    return ([t for t in transforms if isinstance(t, WeightRenaming)],
            [t for t in transforms if isinstance(t, WeightConverter)])


def checkpoint_names(model: nn.Module, keys) -> tuple[dict[str, str], list[str], list[str]]:
    """How a checkpoint's keys name the model's tensors: model key -> file key; the file
    keys that name no tensor of the model (a task model's head, under no base prefix,
    is left out of them); and the keys only a Transformers converter (one tensor split or
    joined) turns into the model's."""
    state = model.state_dict()
    prefix = getattr(model, "base_model_prefix", "") or ""
    renamings, converters = _conversions(model)
    try:
        from transformers.core_model_loading import rename_source_key
    except ImportError:
        rename_source_key = None
    names, unknown, converted, stripped = {}, [], [], False
    for key in keys:
        if rename_source_key is not None:
            new, pattern = rename_source_key(key, renamings, converters, prefix or None, state)
        else:
            new, pattern = key, None
            if prefix and key.startswith(prefix + ".") and key[len(prefix) + 1:] in state:
                new = key[len(prefix) + 1:]
        stripped |= bool(prefix) and key.startswith(prefix + ".") and new in state
        if pattern is not None:
            converted.append(key)
        elif new in state:
            names[new] = key
        else:
            unknown.append(key)
    hidden = {n for n, _ in model.named_buffers()} - set(state)  # position_ids of old files
    unknown = [k for k in unknown if k not in hidden and not (
        stripped and not k.startswith(prefix + "."))]
    return names, unknown, converted


class HFReader(TensorReader):
    """A weights file's tensors under the model's names (:func:`checkpoint_names`)."""

    def __init__(self, file: TensorReader, names: Mapping[str, str],
                 unknown: list[str], converted: list[str]) -> None:
        self.file, self.path = file, file.path
        self.names, self.unknown, self.converted = dict(names), unknown, converted

    def keys(self) -> list[str]:
        return list(self.names)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        found = self.file.shapes()
        return {k: found[f] for k, f in self.names.items()}

    def dtypes(self) -> dict[str, torch.dtype]:
        found = self.file.dtypes()
        return {k: found[f] for k, f in self.names.items()}

    def get(self, key: str) -> torch.Tensor:
        return self.file.get(self.names[key])

    def origin(self, key: str) -> dict[str, Any]:
        return self.file.origin(self.names.get(key, key))

    def close(self) -> None:
        self.file.close()


# ---- the kind -------------------------------------------------------------------------

#: The folder each built model came from (its preprocessing is read from there).
_FOLDER_OF: "weakref.WeakKeyDictionary[nn.Module, Path]" = weakref.WeakKeyDictionary()

#: The preprocessor config an artifact carried for a model built from it.
_PREPROCESSOR_OF: "weakref.WeakKeyDictionary[nn.Module, dict | None]" = \
    weakref.WeakKeyDictionary()
#: While an artifact is rebuilt: the configs (and preprocessor configs) it carries, by the
#: hf(...) target as written; its sources are then built from these, reading no folder.
EMBEDDED: contextvars.ContextVar[dict[str, dict]] = contextvars.ContextVar(
    "synthdsl_hf_embedded", default={})


def embedded_configs(graph) -> dict[str, dict]:
    """What an artifact carries of each hf(...) source of `graph`: its config and
    preprocessor config, by target (read again here; the check has read them once)."""
    out = {}
    for s in graph.of_kind("source"):
        node = graph.nodes[s]
        if node.get("constructor") != "hf":
            continue
        if node.get("embedded"):
            out[node["target"]] = node["embedded"]
            continue
        folder = folder_of(node)
        out[node["target"]] = {"config": read_config(node),
                               "preprocessor": preprocessor_config(folder)}
    return out


class HFKind(SourceKind):
    """``hf("folder")`` or ``hf("org/name")``: see the module."""

    name = "hf"
    own_options = ("weights", "pretrained")  # refused: the weights are the folder's

    def resolve(self, node, base_dir):
        target = node["target"]
        if target in EMBEDDED.get():  # rebuilt from an artifact: no folder is read
            node["embedded"] = EMBEDDED.get()[target]
            node["folder"] = target
            return
        folder = Path(target).expanduser()
        folder = folder if folder.is_absolute() else Path(base_dir) / folder
        node["folder"] = str(folder)
        if is_hub_name(target, folder):
            node["hub"] = target
            return
        weights = weights_file(folder)
        if weights is not None:  # the lock covers it, and the summary names it
            node.update(weights=str(weights), weights_text=_where(node, weights.name),
                        weights_span=node["target_span"])
        if (folder / "config.json").is_file():
            node.setdefault("files", []).append({
                "option": "target", "index": None, "text": _where(node, "config.json"),
                "path": str(folder / "config.json"), "span": node["target_span"],
                "what": "config file"})

    def check(self, node):
        if not has_transformers():
            return SynthError("S201", f"hf('{node['target']}') needs Hugging Face "
                              "Transformers, which is not installed", node["span"],
                              hint=INSTALL_HINT)
        try:
            config = read_config(node)
        except SynthError as e:
            return e
        return options_problem(node, config)

    def build(self, node, device="cpu", load_weights=True):
        from transformers import AutoModel

        config = load_config(node)
        with torch.device(device):  # on meta: no memory, no weights read
            model = AutoModel.from_config(config, trust_remote_code=False)
        _FOLDER_OF[model] = folder_of(node)
        if node.get("embedded"):
            _PREPROCESSOR_OF[model] = node["embedded"].get("preprocessor")
        if str(device) == "meta" or not load_weights or not self.has_reader(node):
            return model.eval()
        readers = ReaderCache()
        try:
            reader = self.reader(node, readers, model)
            problem = self._fit(node, model, reader)
            if problem is not None:
                raise problem
            model.load_state_dict({k: reader.get(k) for k in reader.keys()}, strict=True)
        finally:
            readers.close()
        return model.eval()

    def weights_path(self, node) -> Path | None:
        if node.get("weights"):
            return Path(node["weights"])
        return weights_file(folder_of(node)) if node.get("hub") else None

    def has_reader(self, node) -> bool:
        return self.weights_path(node) is not None

    def reader(self, node, readers: ReaderCache, model: nn.Module | None = None) -> HFReader:
        model = model if model is not None else self.build(node, "meta")
        file = readers.open(self.weights_path(node))
        return HFReader(file, *checkpoint_names(model, file.keys()))

    def weights_problem(self, node, model, readers=None):
        path = self.weights_path(node)
        if path is None:
            return SynthError("S203", f"folder '{node['target']}' has no weights file "
                              f"({' or '.join(WEIGHTS_FILES)})", node["target_span"],
                              hint="save the model with save_pretrained")
        try:
            reader = self.reader(node, readers if readers is not None else ReaderCache(), model)
        except Exception as e:  # noqa: BLE001 - any failure to read is the user's file
            return SynthError("S203", f"cannot read weights file '{_where(node, path.name)}': "
                              f"{reason(e)}", node["target_span"])
        return self._fit(node, model, reader)

    def _fit(self, node, model: nn.Module, reader: HFReader) -> SynthError | None:
        """The weights file holds exactly the model's tensors, shapes and dtype kinds."""
        found = {**reader.shapes(), **{k: tuple(reader.file.shapes()[k])
                                       for k in reader.unknown}}
        problems = compare_state(model_state_shapes(model), found)
        if reader.converted:
            problems.append(f"{len(reader.converted)} tensor(s) that only Transformers' "
                            "conversions (split or joined tensors) turn into the model's: "
                            + ", ".join(f"'{k}'" for k in reader.converted[:3]))
        problems = problems or dtype_problems(model_state_dtypes(model), reader.dtypes())
        if not problems:
            return None
        path = Path(reader.path)
        return SynthError("S205", f"weights file '{_where(node, path.name)}' does not fit "
                          f"the {model.config.model_type} model of its config.json",
                          node["target_span"], notes=problems[:6],
                          hint="config.json and the weights are written together by "
                               "save_pretrained; an option of hf(...) may change the model")

    def restore_hidden(self, model, device="cpu"):
        return restore_buffers(model, device)

    def plan(self, model, node, exclusive=True):
        return hf_plan(model, dict(node), exclusive)

    def feature_info(self, model):
        return []

    def node_names(self, model):
        return []

    def data_config(self, model):
        folder = _FOLDER_OF.get(model)
        if folder is None or getattr(model, "main_input_name", None) != "pixel_values":
            return None
        if model in _PREPROCESSOR_OF:
            return _PREPROCESSOR_OF[model]
        return preprocessor_config(folder)


def restore_buffers(model: nn.Module, device: str | torch.device = "cpu") -> bool:
    """Make the non-persistent buffers of a model built on meta with Transformers' own
    initialisation of the modules that own them (``_init_weights``, what
    ``from_pretrained`` does). Each buffer is first filled with a value no
    initialisation gives; if one keeps it, or a module keeps tensors outside its
    state, False (the model is then built for real)."""
    init = getattr(model, "_init_weights", None)
    if init is None or any(isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter)
                           for m in model.modules() for k, v in vars(m).items()
                           if not k.startswith("_")):
        return False
    owners, made = {}, []
    for name, buf in list(model.named_buffers()):
        parent, _, leaf = name.rpartition(".")
        module = model.get_submodule(parent)
        if leaf not in module._non_persistent_buffers_set:
            continue
        if buf.dtype == torch.bool:
            return False
        fill = torch.finfo(buf.dtype).min if buf.dtype.is_floating_point \
            else torch.iinfo(buf.dtype).min
        module._buffers[leaf] = torch.full(buf.shape, fill, dtype=buf.dtype, device=device)
        owners[parent] = module
        made.append((module, leaf, fill))
    with torch.no_grad():
        for module in owners.values():
            init(module)
    return all(not (module._buffers[leaf] == fill).any() and
               module._buffers[leaf].device.type != "meta" for module, leaf, fill in made)


def preprocessor_config(folder: Path) -> dict | None:
    """mean, std, size and interpolation from a folder's ``preprocessor_config.json``;
    None without one (or without a mean and std)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(read_regular(path, CONFIG_MAX_BYTES, "preprocessor config"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    if not (isinstance(mean, list) and isinstance(std, list)):
        return None
    size = cfg.get("crop_size") if cfg.get("do_center_crop") else cfg.get("size")
    if isinstance(size, dict):
        size = (size.get("height"), size.get("width")) if "height" in size \
            else (size.get("shortest_edge"),) * 2
    elif isinstance(size, int):
        size = (size, size)
    out = {"mean": tuple(mean), "std": tuple(std),
           "interpolation": _RESAMPLE.get(cfg.get("resample"), "bilinear")}
    if size and all(isinstance(s, int) for s in size):
        out["input_size"] = (3, *size)
    return out


register_source_kind(HFKind())
