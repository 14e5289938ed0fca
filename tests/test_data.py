"""Data: built-in datasets with fixed splits, folders, .npz arrays, subsets, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import synthdsl
from synthdsl.train.data import DataSpec, load_dataset, parse_classes
from synthdsl.train.errors import DataError
from synthdsl.train.preprocess import Preprocess, preprocess_for


def test_digits_split_is_the_fixture_split(digits):
    (xtr, ytr), (xte, yte) = digits
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1400, 397)
    assert torch.equal(train.targets, ytr) and torch.equal(test.targets, yte)
    # the fixture is the same images, resized to 32 and repeated to 3 channels
    pre = Preprocess(size=(32, 32), channels=3)
    assert torch.allclose(pre(train.images(torch.arange(5))), xtr[:5], atol=1e-6)


def test_mnist5k_ships_offline_with_a_fixed_stratified_split():
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert train.class_counts() == [400] * 10 and test.class_counts() == [100] * 10
    assert train.image_shape == (1, 28, 28)
    x = train.images(torch.arange(3))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
    again = load_dataset("mnist5k", "train")
    assert torch.equal(again.targets, train.targets)
    assert torch.equal(again.images(torch.arange(10)), train.images(torch.arange(10)))
    full = load_dataset("mnist5k", "all")
    assert len(full) == 5000 and full.class_counts() == [500] * 10


def test_select_classes_renumbers_and_few_shot_is_seeded():
    train = load_dataset("digits", "train")
    five = train.select_classes(parse_classes("5-9"))
    assert five.classes == ["5", "6", "7", "8", "9"]
    assert set(five.targets.tolist()) == {0, 1, 2, 3, 4}
    # the renumbered label of every sample is its digit minus 5
    assert torch.equal(train.targets[five.positions] - 5, five.targets)
    a, b, c = five.few_shot(4, seed=1), five.few_shot(4, seed=1), five.few_shot(4, seed=2)
    assert a.class_counts() == [4] * 5 and len(a) == 20
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)
    # images follow their labels through both subsets
    assert torch.equal(a.images(torch.arange(20)),
                       train.images(torch.tensor([int((train.indices == i).nonzero())
                                                  for i in a.indices])))
    rest = five.few_shot(4, seed=1, keep_unlabelled=True)
    assert len(rest) == len(five) and int((rest.targets >= 0).sum()) == 20
    assert rest.class_counts() == [4] * 5


def test_class_selection_errors():
    train = load_dataset("digits", "train")
    with pytest.raises(DataError, match="classes 0..9, not 12"):
        train.select_classes([12])
    with pytest.raises(DataError, match="fewer than 500"):
        train.select_classes([0]).few_shot(500)
    with pytest.raises(DataError, match="no dataset 'nope'"):
        load_dataset("nope")
    assert parse_classes("0,2, 4-5") == [0, 2, 4, 5]
    assert parse_classes("cat,dog") == ["cat", "dog"]


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (30, 6, 5, 3), dtype=np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "a.npz", images=nhwc, labels=y, classes=np.array(["r", "g", "b"]))
    tr, te = load_dataset(tmp_path / "a.npz", "train"), load_dataset(tmp_path / "a.npz", "test")
    assert tr.classes == ["r", "g", "b"] and tr.image_shape == (3, 6, 5)
    assert len(tr) + len(te) == 30 and te.class_counts() == [2, 2, 2]
    whole = load_dataset(tmp_path / "a.npz", "all")
    assert torch.allclose(whole.images(torch.tensor([7])),
                          torch.from_numpy(nhwc[7]).permute(2, 0, 1)[None].float() / 255)
    nchw = rng.random((8, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x_train=nchw, y_train=np.arange(8) % 2,
             x_test=nchw[:2], y_test=np.array([0, 1]))
    b = load_dataset(tmp_path / "b.npz", "test")
    assert len(b) == 2 and torch.equal(b.images(torch.arange(2)), torch.from_numpy(nchw[:2]))
    np.savez(tmp_path / "bad.npz", foo=nchw)
    with pytest.raises(DataError, match=r"has arrays \['foo'\]") as e:
        load_dataset(tmp_path / "bad.npz")
    assert "x/y" in e.value.hint


def test_image_folders(tmp_path):
    from PIL import Image

    def write(root, n=4):
        for c, color in (("cat", 40), ("dog", 200)):
            (root / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (10 + i, 12), (color, color, color)).save(root / c / f"{i}.png")

    write(tmp_path / "flat", n=5)
    tr = load_dataset(tmp_path / "flat", "train", size=(8, 8))
    te = load_dataset(tmp_path / "flat", "test", size=(8, 8))
    assert tr.classes == ["cat", "dog"] and len(tr) + len(te) == 10
    assert te.class_counts() == [1, 1] and tr.image_shape == (3, 8, 8)
    x, label = tr[0]
    assert label == 0 and abs(float(x.mean()) - 40 / 255) < 1e-6
    write(tmp_path / "split" / "train")
    write(tmp_path / "split" / "test", n=2)
    assert load_dataset(tmp_path / "split", "test", size=(8, 8)).class_counts() == [2, 2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path / "empty")


def test_preprocess_follows_the_spec_and_its_timm_config():
    model = synthdsl.compile_spec("""synth T
        input image: [B, 3, 24, 24]
        source net = timm("test_resnet", num_classes=0)
        f = net(image)
        output f""", seed=0)
    pre = preprocess_for(model)
    assert pre.size == (24, 24) and pre.channels == 3
    assert pre.mean == model.net.pretrained_cfg["mean"] and "test_resnet" in pre.origin
    x = pre(torch.ones(2, 1, 8, 8))
    assert x.shape == (2, 3, 24, 24)
    expect = ((1 - torch.tensor(pre.mean)) / torch.tensor(pre.std))[None, :, None, None]
    assert torch.allclose(x, expect.expand_as(x))
    given = preprocess_for(model, mean=(0.1,), std=(0.2,))
    assert given.mean == (0.1, 0.1, 0.1) and given.origin == "given"
    assert preprocess_for(model, normalize=False).mean is None
    plain = synthdsl.compile_spec("synth P input x: [B, 1, 8, 8] y = Flatten(x) output y")
    assert preprocess_for(plain).mean is None
    assert Preprocess.from_dict(pre.to_dict()) == pre


def test_preprocess_stated_in_the_recipe():
    model = synthdsl.compile_spec("""synth T
        input image: [B, 3, 24, 24]
        source net = timm("test_resnet", num_classes=0)
        f = net(image)
        recipe mean=0.5, std=[0.25]
        output f""", seed=0)
    pre = preprocess_for(model)
    assert pre.mean == (0.5,) * 3 and pre.std == (0.25,) * 3 and pre.origin == "given"
    assert preprocess_for(model, mean=(0.1,), std=(0.2,)).mean == (0.1,) * 3  # flags win
    mixed = preprocess_for(model, mean=(0.5,), std=(0.1, 0.2, 0.3))
    assert mixed.mean == (0.5,) * 3 and mixed.std == (0.1, 0.2, 0.3)
    with pytest.raises(DataError, match="2 values of std for an input of 3 channels"):
        preprocess_for(model, mean=(0.5,), std=(0.1, 0.2))
    raw = synthdsl.compile_spec("""synth T
        input image: [B, 3, 24, 24]
        source net = timm("test_resnet", num_classes=0)
        f = net(image)
        recipe normalize=false
        output f""", seed=0)
    assert preprocess_for(raw).mean is None


def test_dataspec_round_trip():
    spec = DataSpec("digits", (5, 6, 7, 8, 9), shots=3, shots_seed=2, unlabelled=True)
    assert DataSpec.from_dict(spec.to_dict()) == spec
    train = spec.load("train")
    assert train.class_counts() == [3] * 5 and len(train) > 15
    assert spec.load("test").class_counts() == load_dataset("digits", "test").select_classes(
        [5, 6, 7, 8, 9]).class_counts()
