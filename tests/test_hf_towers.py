"""Hugging Face folders of two towers (CLIP, SigLIP: text and vision in one model): each
tower a submodule part with the output it gives chosen by name, equal to the model's own
image and text features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import synthdsl  # noqa: E402
from synthdsl.lang.errors import SynthErrors  # noqa: E402

TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
CONFIGS = {
    "clip": ("CLIPConfig", "CLIPModel", dict(
        text_config=dict(TOWER, vocab_size=99, max_position_embeddings=32, eos_token_id=2),
        vision_config=dict(TOWER, image_size=32, patch_size=8), projection_dim=16),
        "clip.vision_model(image, output=\"pooler_output\") |> clip.visual_projection",
        "clip.text_model(tokens, attention_mask=mask, output=\"pooler_output\") "
        "|> clip.text_projection"),
    "siglip": ("SiglipConfig", "SiglipModel", dict(
        text_config=dict(TOWER, vocab_size=99, max_position_embeddings=16),
        vision_config=dict(TOWER, image_size=32, patch_size=8)),
        "clip.vision_model(image, output=\"pooler_output\")",
        "clip.text_model(tokens, attention_mask=mask, output=\"pooler_output\")"),
}


def folder(root: Path, family: str) -> Path:
    config_cls, model_cls, options, *_ = CONFIGS[family]
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**options))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.eval().save_pretrained(root / family)
    return root / family


def spec(root: Path, family: str, image: str | None = None, text: str | None = None) -> Path:
    *_, image_expr, text_expr = CONFIGS[family]
    path = root / f"{family}.synth"
    path.write_text(f'synth Towers\ninput image: [B, 3, 32, 32]\n'
                    f'input tokens: [B, T<=16] int64\ninput mask: [B, T] bool\n'
                    f'source clip = hf("{family}")\n'
                    f'img = {image or image_expr}\ntxt = {text or text_expr}\n'
                    f'output img, txt\n')
    return path


@pytest.mark.parametrize("family", list(CONFIGS))
def test_each_tower_equals_the_models_own_features(family, tmp_path, one_thread):
    ref = transformers.AutoModel.from_pretrained(str(folder(tmp_path, family))).eval()
    model = synthdsl.compile_spec(spec(tmp_path, family)).eval()
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 32, 32, generator=g)
    tokens = torch.randint(3, 99, (2, 11), generator=g)
    tokens[:, -1] = 2  # CLIP pools at its end-of-text token
    mask = torch.ones(2, 11, dtype=torch.bool)
    if family == "clip":
        mask[1, 7:] = False
    with torch.no_grad():
        out = model(image, tokens, mask)
        want_img = ref.get_image_features(pixel_values=image)
        want_txt = ref.get_text_features(input_ids=tokens, attention_mask=mask)
    pooled = [getattr(w, "pooler_output", w) for w in (want_img, want_txt)]
    assert torch.allclose(out["img"], pooled[0], atol=1e-5)
    assert torch.allclose(out["txt"], pooled[1], atol=1e-5)


def test_an_output_a_tower_does_not_give_is_named_at_the_option(tmp_path):
    folder(tmp_path, "clip")
    path = spec(tmp_path, "clip", image='clip.vision_model(image, output="pooled")')
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec(path)
    [err] = e.value.errors
    assert err.code == "S402" and "has no output 'pooled'" in err.message
    assert "'last_hidden_state', 'pooler_output'" in err.message
    assert path.read_text().splitlines()[err.span.line - 1][err.span.column - 1:].startswith(
        'output="pooled"')
    slice_ = spec(tmp_path, "clip",
                  image='clip.vision_model.encoder.layers[0:2](image, output="x")')
    with pytest.raises(SynthErrors) as e:
        synthdsl.check_spec(slice_)
    assert "not of a slice of layers" in e.value.errors[0].message
