"""Training and evaluation with several inputs, integer inputs, and `loss contrastive`.

* `loss contrastive(a, b)` is CLIP's symmetric InfoNCE, equal to Transformers' `clip_loss`;
* models/dual_encoder.synth learns digit images paired with the letters of their names
  from an .npz of one array per input: the loss falls, recall@1 beats chance both ways,
  and `synth eval` reports it;
* a classifier of an image and token ids trains from a split .npz (`image_train`, ...);
* every array is checked against its input before training (D001, D003, D004, D006);
* a folder of images with captions.tsv is tokenized by a Hugging Face tokenizer read
  from a folder (a tiny WordPiece one written here), padded to the spec's fixed length
  or to each batch's longest caption.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import synthdsl
from synthdsl.cli.app import run
from tests.test_gate_cli import GOLDEN

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = Path(__file__).resolve().parent.parent / "models"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _letters(word: str, length: int = 8) -> list[int]:
    row = [ord(c) - ord("a") + 1 for c in word][:length]
    return row + [0] * (length - len(row))


def _digit_pairs(n: int) -> dict[str, np.ndarray]:
    """Digits images, each with the letters of its digit's name as token ids."""
    from sklearn.datasets import load_digits

    d = load_digits()
    tokens = np.array([_letters(NAMES[c]) for c in d.target[:n]], dtype=np.int64)
    return {"image": (d.images[:n] / 16.0).astype(np.float32), "tokens": tokens,
            "mask": tokens > 0, "labels": d.target[:n]}


def _cli(capsys, tmp_path, *argv: str) -> tuple[int, str, str]:
    code = run([*argv])
    got = capsys.readouterr()
    assert "Traceback" not in got.err, got.err
    return code, got.out, got.err.replace(str(tmp_path), "<tmp>")


# -- the loss ----------------------------------------------------------------------------------


def test_contrastive_loss_equals_transformers_clip_loss():
    clip = pytest.importorskip("transformers.models.clip.modeling_clip")
    from synthdsl.train.losses import LossTerm, objective

    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    term = LossTerm("contrastive", ["img", "txt"], {"temperature": 0.1})
    loss, parts = objective([term], {"img": img, "txt": txt}, torch.full((6,), -1),
                            torch.ones(6), 6.0, 0.0)
    a = torch.nn.functional.normalize(img, dim=-1)
    b = torch.nn.functional.normalize(txt, dim=-1)
    clip_loss = getattr(clip, "image_text_contrastive_loss", None) or clip.clip_loss
    expect = clip_loss(b @ a.T / 0.1)  # CLIP's logits_per_text, both directions
    torch.testing.assert_close(loss, expect)
    assert set(parts) == {"contrastive"}
    # an aligned batch costs almost nothing, a shuffled one a lot
    aligned, _ = objective([term], {"img": img, "txt": img * 3}, torch.full((6,), -1),
                           torch.ones(6), 6.0, 0.0)
    assert float(aligned) < float(loss)


# -- a dual encoder from an .npz of pairs -----------------------------------------------------


def test_dual_encoder_learns_pairs_and_beats_chance(tmp_path, capsys):
    from synthdsl.train.run import train_spec

    arrays = _digit_pairs(400)
    arrays.pop("labels")  # a contrastive spec needs no labels
    np.savez(tmp_path / "pairs.npz", **arrays)
    result = train_spec(MODELS / "dual_encoder.synth", str(tmp_path / "pairs.npz"),
                        tmp_path / "run", recipe={"epochs": 3},
                        options=_quiet())
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.8, losses
    m = result.metrics
    assert m.n == 80 and m.chance[1] == pytest.approx(1 / 80)
    # ten names for 80 images: recall@1 of an image's own caption is at most about 1/8
    assert m.a_to_b[1] > 3 * m.chance[1] and m.b_to_a[1] > 3 * m.chance[1], m.to_dict()
    assert m.a_to_b[5] > 3 * m.chance[5]
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["kind"] == "retrieval" and written["img->txt"]["recall@1"] == m.a_to_b[1]
    assert "b2a_recall@5" in result.history[-1]["val"]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [i["name"] for i in record["preprocess"]["inputs"]] == ["image", "tokens", "mask"]

    code, out, _ = _cli(capsys, tmp_path, "eval", str(tmp_path / "run"), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["results"] == [] and report["retrieval"][0]["img->txt"]["recall@1"] == \
        pytest.approx(m.a_to_b[1])
    code, out, _ = _cli(capsys, tmp_path, "eval", str(tmp_path / "run"))
    assert "-- retrieval img <-> txt --" in out and "chance" in out
    code, _, err = _cli(capsys, tmp_path, "eval", str(tmp_path / "run"), "--plot",
                        str(tmp_path / "c.png"))
    assert code == 1 and "error[E001]: --plot draws a confusion matrix" in err
    assert not (tmp_path / "c.png").exists()


def _quiet():
    from synthdsl.train.options import Options

    return Options(quiet=True, progress=False)


# -- a classifier of two inputs ----------------------------------------------------------------

TWO_INPUTS = """synth TwoInputs
input image: [B, 1, 8, 8]
input tokens: [B, 4] int64
seen = Flatten(image) |> Linear(out=16) |> ReLU
said = Embedding(tokens, num=12, dim=8) |> Flatten
logits = concat(seen, said, dim=1) |> Linear(out=10)
recipe epochs=4, lr=0.01, batch_size=32, normalize=false
output logits
"""


def _two_input_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Images of digits, and four tokens of which one is the digit (the rest noise)."""
    rng = np.random.default_rng(seed)
    d = _digit_pairs(n)
    tokens = rng.integers(0, 12, size=(n, 4))
    tokens[np.arange(n), rng.integers(0, 4, size=n)] = d["labels"]
    return {"image": (d["image"] * 255).astype(np.uint8), "tokens": tokens, "y": d["labels"]}


def test_a_classifier_of_an_image_and_tokens_trains_from_a_split_npz(tmp_path, capsys):
    (tmp_path / "two.synth").write_text(TWO_INPUTS)
    a = _two_input_arrays(360)
    np.savez(tmp_path / "two.npz", **{f"{k}_train": v[:300] for k, v in a.items()},
             **{f"{k}_test": v[300:] for k, v in a.items()})
    code, out, err = _cli(capsys, tmp_path, "train", str(tmp_path / "two.synth"), "--data",
                          str(tmp_path / "two.npz"), "-o", str(tmp_path / "run"),
                          "--no-progress")
    assert code == 0, err
    assert "300 samples of image [1, 8, 8] uint8 0..255, tokens [4] int64, 10 classes" in out
    assert "inputs  image: resize to 8x8 (bilinear), 1 channels (from defaults); tokens: " \
        "int64 as given" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split"] == "two.npz/test" and metrics["n"] == 60
    assert metrics["accuracy"] > 0.5, metrics["accuracy"]  # chance: 0.1
    code, out, _ = _cli(capsys, tmp_path, "eval", str(tmp_path / "run"), "--json")
    assert code == 0 and json.loads(out)["results"][0]["accuracy"] == metrics["accuracy"]


# -- arrays checked against their inputs -------------------------------------------------------


def _bad(arrays: dict, case: str) -> dict:
    arrays = dict(arrays)
    if case == "missing":
        arrays.pop("tokens")
    elif case == "rank":
        arrays["tokens"] = arrays["tokens"][:, :, None]
    elif case == "size":
        arrays["tokens"] = arrays["tokens"][:, :3]
    elif case == "floats":
        arrays["tokens"] = arrays["tokens"].astype(np.float32)
    elif case == "beyond":
        arrays["tokens"] = arrays["tokens"].copy()
        arrays["tokens"][5, 2] = 12
    elif case == "length":
        arrays["tokens"] = arrays["tokens"][:-1]
    return arrays


@pytest.mark.parametrize("case, code, words", [
    ("missing", "D001", "has no array tokens for input 'tokens' ([B, 4] int64); it holds "
                        "image, y"),
    ("rank", "D006", "array 'tokens' has shape [40, 4, 1] (3 dimensions); input 'tokens' "
                     "([B, 4] int64) has 2"),
    ("size", "D006", "needs 4 in dimension 1, found 3"),
    ("floats", "D004", "holds float32 values; input 'tokens' ([B, 4] int64) takes integers"),
    ("beyond", "D004", "tokens[5] holds 12; input 'tokens' ([B, 4] int64): it feeds an "
                       "Embedding of 12 rows, so ids must lie in 0..11"),
    ("length", "D003", "array 'image' has 40 samples but 'tokens' has 39"),
])
def test_npz_arrays_are_checked_against_their_inputs(tmp_path, capsys, golden, case, code,
                                                     words):
    (tmp_path / "two.synth").write_text(TWO_INPUTS)
    np.savez(tmp_path / "bad.npz", **_bad(_two_input_arrays(40), case))
    rc, _, err = _cli(capsys, tmp_path, "train", str(tmp_path / "two.synth"), "--data",
                      str(tmp_path / "bad.npz"), "-o", str(tmp_path / "run"), "-q")
    assert rc == 1 and f"error[{code}]" in err and words in err, err
    assert not (tmp_path / "run").exists()
    if case == "size":
        golden(GOLDEN / "D006.txt", err)


def test_a_bool_input_takes_zeros_and_ones_only():
    from synthdsl.train.errors import DataError
    from synthdsl.train.feed import InputSpec
    from synthdsl.train.named import check_input_array

    spec = InputSpec("mask", ("B", 3), "bool")
    got = check_input_array(np.array([[0, 1, 1]]), spec, "m.npz", "mask")
    assert got.dtype == np.bool_ and got.tolist() == [[False, True, True]]
    with pytest.raises(DataError, match=r"mask\[0\] holds 2; .*takes 0 and 1 only"):
        check_input_array(np.array([[0, 2, 1]]), spec, "m.npz", "mask")


def test_image_data_for_a_spec_of_two_inputs_says_what_would_fit(tmp_path, capsys):
    (tmp_path / "two.synth").write_text(TWO_INPUTS)
    for c in ("a", "b"):
        (tmp_path / "folder" / c).mkdir(parents=True)
    rc, _, err = _cli(capsys, tmp_path, "train", str(tmp_path / "two.synth"), "--data",
                      str(tmp_path / "folder"), "-o", str(tmp_path / "run"), "-q")
    assert rc == 1 and "error[D001]: '<tmp>/folder' holds one image per sample" in err
    assert "give an .npz with one array per input (image, tokens) and labels y, or a " \
           "folder of images with captions.tsv" in err


# -- a folder of images with captions ----------------------------------------------------------

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "small", "big", "dark", "light", "square",
         "round", "digit"]


def _tokenizer(folder: Path):
    tf = pytest.importorskip("transformers")
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tok = tf.BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(folder))
    return tok


def _captions_folder(root: Path, n: int = 20) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    lines, captions = [], []
    for i in range(n):
        light = i % 2 == 0
        pixels = np.full((8, 8), 220 if light else 30, np.uint8)
        Image.fromarray(pixels).save(root / "img" / f"{i}.png")
        words = (["a", "light"] if light else ["a", "dark", "round", "digit"])[
            :2 + int(rng.integers(0, 3))]
        captions.append(" ".join(words))
        lines.append(f"img/{i}.png\t{captions[-1]}\t{'light' if light else 'dark'}")
    (root / "captions.tsv").write_text("# file, caption, label\n" + "\n".join(lines) + "\n")
    return captions


CAPTIONED = """synth Captioned
input image: [B, 1, 8, 8]
input tokens: [B, {T}] int64
input mask: [B, {T}] bool
img = Flatten(image) |> Linear(out=8)
txt = Embedding(tokens, num=12, dim=8)
pooled = masked_mean(txt, mask) |> Linear(out=8)
loss contrastive(img, pooled, temperature=0.5)
recipe epochs=1, batch_size=8, normalize=false
output img, pooled
"""


def test_a_tokenizer_is_read_from_its_folder_alone(tmp_path):
    from synthdsl.train.captions import has_tokenizer, load_tokenizer

    tok = _tokenizer(tmp_path / "tok")
    assert has_tokenizer(tmp_path / "tok") and not has_tokenizer(tmp_path)
    mine = load_tokenizer(tmp_path / "tok")
    assert mine("a dark square")["input_ids"] == tok("a dark square")["input_ids"] == \
        [2, 4, 7, 9, 3]


@pytest.mark.parametrize("length", ["T", 5])
def test_captions_are_tokenized_and_padded_to_the_spec(tmp_path, length):
    import synthdsl
    from synthdsl.train.data import DataSpec
    from synthdsl.train.feed import feed_for
    from synthdsl.train.run import train

    root = tmp_path / "caps"
    captions = _captions_folder(root)
    tok = _tokenizer(root / "tokenizer")
    model = synthdsl.compile_spec(CAPTIONED.format(T=length), seed=0)
    feed = feed_for(model)
    data = DataSpec(str(root)).load_for("all", feed)
    assert data.classes == ["dark", "light"] and len(data) == 20
    batch = data.images(torch.arange(4))
    ids = [tok(c)["input_ids"] for c in captions[:4]]
    width = 5 if length == 5 else max(len(r) for r in ids)
    assert batch["tokens"].shape == (4, width) and batch["tokens"].dtype == torch.int64
    assert batch["mask"].dtype == torch.bool and batch["image"].shape == (4, 1, 8, 8)
    for k, r in enumerate(ids):
        r = (r[:4] + [3]) if len(r) > width else r  # cut to T, [SEP] kept by the tokenizer
        assert batch["tokens"][k, :len(r)].tolist() == r
        assert batch["mask"][k].tolist() == [True] * len(r) + [False] * (width - len(r))
    result = train(model, DataSpec(str(root)).load_for("train", feed), None, options=_quiet(),
                   preprocess=feed, test_data=DataSpec(str(root)).load_for("test", feed))
    assert result.metrics.n == 4 and np.isfinite(result.history[-1]["loss"])


def test_captions_without_a_tokenizer_say_how_to_give_token_ids(tmp_path, capsys):
    root = tmp_path / "caps"
    _captions_folder(root, n=4)
    (tmp_path / "c.synth").write_text(CAPTIONED.format(T=5))
    rc, _, err = _cli(capsys, tmp_path, "train", str(tmp_path / "c.synth"), "--data",
                      str(root), "-o", str(tmp_path / "run"), "-q")
    assert rc == 1 and "error[D001]: input 'tokens' takes token ids, and no tokenizer" in err
    assert "give the ids in an .npz (one array per input: image, tokens, mask)" in err
    assert "'<tmp>/caps/tokenizer'" in err and "pip install transformers" in err


def test_a_captions_line_outside_its_folder_is_refused(tmp_path):
    from synthdsl.train.captions import read_captions
    from synthdsl.train.errors import DataError

    (tmp_path / "caps").mkdir()
    (tmp_path / "caps" / "captions.tsv").write_text("../secret.png\ta caption\n")
    with pytest.raises(DataError, match="lies outside"):
        read_captions(tmp_path / "caps" / "captions.tsv", tmp_path / "caps")


def test_the_tokenizer_is_the_one_in_the_folder_of_the_spec_s_hf_source(tmp_path):
    from synthdsl.graph.build import build_graph
    from synthdsl.lang.parse import parse_file
    from synthdsl.train.captions import tokenizer_folder

    spec = tmp_path / "h.synth"
    spec.write_text("synth H\ninput tokens: [B, 8] int64\nsource bert = hf(\"bert\")\n"
                    "y = bert(tokens)\noutput y\n")
    (tmp_path / "bert").mkdir()
    graph = build_graph(parse_file(spec))  # built, not checked: the folder is all it reads
    assert tokenizer_folder(graph) is None  # a folder without tokenizer files
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    assert tokenizer_folder(graph) == tmp_path / "bert"


def test_contrastive_embeddings_of_two_sizes_are_s301_at_the_second():
    import synthdsl

    from synthdsl.lang.errors import SynthErrors

    with pytest.raises(SynthErrors) as caught:
        synthdsl.check_spec("synth C\ninput x: [B, 6]\na = Linear(x, out=8)\n"
                            "b = Linear(x, out=4)\nloss contrastive(a, b)\noutput a, b\n")
    (err,) = caught.value.errors
    assert err.code == "S301" and "one size: 'a' is [B, 8], 'b' is [B, 4]" in err.message
    assert (err.span.line, err.span.column) == (5, 21)
    assert "Linear(out=D)" in err.hint


def test_a_learned_temperature_is_a_parameter_trained_and_saved(tmp_path):
    from synthdsl.build.artifact import load_compiled
    from synthdsl.train.losses import LossTerm, objective
    from synthdsl.train.run import train_spec

    text = (MODELS / "dual_encoder.synth").read_text().replace(
        "loss contrastive(img, txt, temperature=0.07)",
        "loss contrastive(img, txt, temperature=0.07, learn_temperature=true)")
    spec = tmp_path / "learned.synth"
    spec.write_text(text.replace('recipe epochs=3', 'recipe epochs=2'))
    graph = synthdsl.check_spec(spec)
    assert graph.nodes["loss:0"]["parameters"] == {"loss.logit_scale_0": 1}
    model = synthdsl.compile_spec(spec)
    scale = model.get_parameter("loss.logit_scale_0")
    assert scale.requires_grad and float(scale.detach()) == pytest.approx(math.log(1 / 0.07))
    assert model.parameter_totals()["params"] == sum(
        v for n in graph.nodes for v in graph.nodes[n].get("parameters", {}).values())
    # the loss at the learned scale is the loss at its temperature, and it has a gradient
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    fixed = LossTerm("contrastive", ["img", "txt"], {"temperature": 0.07})
    learned = LossTerm("contrastive", ["img", "txt"], {"temperature": 0.07}, scale)
    args = ({"img": img, "txt": txt}, torch.full((6,), -1), torch.ones(6), 6.0, 0.0)
    a, _ = objective([fixed], *args)
    b, _ = objective([learned], *args)
    torch.testing.assert_close(a, b)
    b.backward()
    assert scale.grad is not None and float(scale.grad) != 0.0
    arrays = _digit_pairs(200)
    arrays.pop("labels")
    np.savez(tmp_path / "pairs.npz", **arrays)
    result = train_spec(spec, str(tmp_path / "pairs.npz"), tmp_path / "run",
                        options=_quiet())
    trained = float(result.model.get_parameter("loss.logit_scale_0").detach())
    assert trained != pytest.approx(math.log(1 / 0.07))
    back = load_compiled(tmp_path / "run" / "model.safetensors")
    assert float(back.get_parameter("loss.logit_scale_0").detach()) == trained
    with pytest.raises(synthdsl.SynthError) as e:
        synthdsl.check_spec(text.replace("learn_temperature=true", "learn_temperature=1"))
    assert "S402" in str(e.value) and "learn_temperature" in str(e.value)
