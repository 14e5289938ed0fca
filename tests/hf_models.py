"""Tiny Hugging Face models of every family hf(...) is tested on, saved as save_pretrained
folders (random weights, fixed seeds): for tests and for the examples' folders."""

from __future__ import annotations

from pathlib import Path

#: family -> (config class, config options, input shape, input dtype, submodule, layers)
FAMILIES = {
    "bert": ("BertConfig", dict(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=37,
                                max_position_embeddings=64),
             (2, 12), "int64", "embeddings", "encoder.layer"),
    "roberta": ("RobertaConfig", dict(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=37,
                                      max_position_embeddings=66, pad_token_id=1),
                (2, 12), "int64", "embeddings", "encoder.layer"),
    "distilbert": ("DistilBertConfig", dict(vocab_size=100, dim=32, n_layers=2, n_heads=2,
                                            hidden_dim=37, max_position_embeddings=64),
                   (2, 12), "int64", "embeddings", "transformer.layer"),
    "wav2vec2": ("Wav2Vec2Config", dict(hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=37,
                                        conv_dim=(16, 16), conv_stride=(5, 2),
                                        conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                                        num_conv_pos_embedding_groups=2),
                 (2, 400), "float32", "feature_extractor", "encoder.layers"),
    "hubert": ("HubertConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=37, conv_dim=(16, 16),
                                    conv_stride=(5, 2), conv_kernel=(10, 3),
                                    num_conv_pos_embeddings=16,
                                    num_conv_pos_embedding_groups=2),
               (2, 400), "float32", "feature_extractor", "encoder.layers"),
    "vit": ("ViTConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=37, image_size=32, patch_size=8),
            (2, 3, 32, 32), "float32", "embeddings", "layers"),
    "dinov2": ("Dinov2Config", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    mlp_ratio=2, image_size=32, patch_size=8),
               (2, 3, 32, 32), "float32", "embeddings", "encoder.layer"),
    "siglip": ("SiglipVisionConfig", dict(hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=37,
                                          image_size=32, patch_size=8),
               (2, 3, 32, 32), "float32", "embeddings", "encoder.layers"),
    "clip": ("CLIPVisionConfig", dict(hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=37,
                                      image_size=32, patch_size=8),
             (2, 3, 32, 32), "float32", "embeddings", "encoder.layers"),
}


def tiny_config(family: str, **changes):
    import transformers

    cls, options, *_ = FAMILIES[family]
    return getattr(transformers, cls)(**{**options, **changes})


def write_folder(family: str, folder: Path, seed: int = 0, preprocessor: bool = False,
                 **changes) -> Path:
    """A tiny model of `family` with "pretrained"-looking weights, saved into `folder`
    by save_pretrained (config.json, model.safetensors); with `preprocessor`, an image
    processor's preprocessor_config.json too."""
    import torch
    import transformers

    from tests.conftest import randomize_

    torch.manual_seed(seed)
    model = randomize_(transformers.AutoModel.from_config(tiny_config(family, **changes)))
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    if preprocessor:
        (tmp / "preprocessor_config.json").write_text(
            '{"image_processor_type": "ViTImageProcessor", "do_normalize": true, '
            '"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3], '
            '"size": {"height": 32, "width": 32}, "resample": 3}\n')
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.replace(folder)
    return folder


#: The folders the examples in models/ read (not committed): family, seed, config changes.
EXAMPLE_FOLDERS = {"hf_tiny_bert": ("bert", 0, {}), "hf_tiny_wav2vec2": ("wav2vec2", 0, {}),
                   # the golden of weights that do not fit: a BERT whose config says
                   # another intermediate size than its weights have
                   "hf_misfit_bert": ("bert", 0, {})}


def write_example_folders(root: Path) -> None:
    """The hf folders of models/ckpt/ (when transformers is installed)."""
    import importlib.util
    import json

    if importlib.util.find_spec("transformers") is None:
        return
    for name, (family, seed, changes) in EXAMPLE_FOLDERS.items():
        folder = root / name
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            continue
        write_folder(family, folder, seed, **changes)
        if name == "hf_misfit_bert":
            config = json.loads((folder / "config.json").read_text())
            config["intermediate_size"] = 40
            (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
