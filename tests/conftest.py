"""Shared fixtures: tiny checkpoints made once per session, and goldens that never write
themselves (``--update-goldens`` rewrites them)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite the golden files from the current output")


#: The checkpoint models/torchvision_trunk.synth reads (not committed: 45 MB).
TORCHVISION_CKPT = ROOT / "models" / "ckpt" / "torchvision_resnet18.pth"


#: The checkpoints models/merged_soup.synth merges (not committed): seeds 0, 1, 2, 3.
SOUP_CKPTS = [ROOT / "models" / "ckpt" / f"soup_{n}.safetensors" for n in ("base", "a", "b", "c")]


def write_soup_checkpoints() -> None:
    """A "pretrained" test_resnet (the base) and three "fine-tuned" variants of it (the
    base plus seeded noise), the checkpoints the merge example reads."""
    if all(p.exists() for p in SOUP_CKPTS):
        return
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    base = randomize_(timm.create_model("test_resnet", num_classes=10)).state_dict()
    for seed, path in enumerate(SOUP_CKPTS):
        g = torch.Generator().manual_seed(seed)
        state = {k: v if seed == 0 or not v.is_floating_point() or "running" in k
                 else v + 0.05 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)


def pytest_configure(config):
    """Write the examples' checkpoints once (random weights, fixed seeds)."""
    write_soup_checkpoints()
    from tests.hf_models import write_example_folders

    write_example_folders(ROOT / "models" / "ckpt")  # the hf(...) examples' folders
    if TORCHVISION_CKPT.exists():
        return
    import torch
    import torchvision.models

    torch.manual_seed(0)
    model = randomize_(torchvision.models.resnet18())
    TORCHVISION_CKPT.parent.mkdir(parents=True, exist_ok=True)
    tmp = TORCHVISION_CKPT.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(TORCHVISION_CKPT)


def uses_hf(path: Path) -> bool:
    """The spec at `path` has an hf(...) source (it needs Hugging Face Transformers)."""
    return 'hf("' in Path(path).read_text("utf-8")


def spec_params(paths) -> list:
    """pytest params of spec files; those with an hf(...) source skipped, with a reason,
    where Transformers is not installed (it is an optional extra: synthdsl[hf])."""
    import importlib.util

    missing = importlib.util.find_spec("transformers") is None
    skip = pytest.mark.skip(reason="an hf(...) source needs transformers (synthdsl[hf])")
    return [pytest.param(p, id=Path(p).stem, marks=[skip] if missing and uses_hf(p) else [])
            for p in paths]


@pytest.fixture
def one_thread():
    """One torch thread for the test: the models are tiny, and on a busy 2-core machine
    OpenMP's extra threads make each small operation wait for the others."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def update_goldens(request) -> bool:
    return request.config.getoption("--update-goldens")


def compare_golden(path: Path, actual: str, update: bool) -> None:
    """Fail unless `path` holds exactly `actual`. A golden never writes itself: a missing or
    different file fails, and only ``--update-goldens`` (``update``) rewrites it."""
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text("utf-8") != actual:
            path.write_text(actual, "utf-8")
        return
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if not path.exists():
        pytest.fail(f"golden file {rel} is missing; run pytest with --update-goldens to "
                    "write it, then read it before committing it", pytrace=False)
    expected = path.read_text("utf-8")
    if actual != expected:
        import difflib

        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"{rel} (golden)", f"{rel} (now)"))
        pytest.fail(f"output differs from {rel} (after a deliberate change, rerun with "
                    f"--update-goldens):\n{diff}", pytrace=False)


@pytest.fixture
def golden(update_goldens):
    """``golden(path, actual)``: compare `actual` with the golden file at `path`."""
    return lambda path, actual: compare_golden(Path(path), actual, update_goldens)


def randomize_(model):
    """Give a freshly built model "pretrained"-looking state: no zero-initialised gammas,
    non-trivial running statistics, so that equality tests cannot pass by accident."""
    import torch

    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() <= 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1 + (1.0 if "weight" in name else 0))
    return model


def save_checkpoint(model, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8×8 digits as [N, 3, 32, 32] float tensors, with a fixed split."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.tensor(np.random.default_rng(0).permutation(len(y)))
    x, y = x[perm], y[perm]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


@pytest.fixture(scope="session")
def resnet_weights(tmp_path_factory, digits):
    """timm's tiny test_resnet (10 classes) with "pretrained"-looking weights that no training
    made, saved as safetensors: for tests that need a checkpoint, not one that learned.
    Returns the path.

    The trunk is ``randomize_``'d; its pooled features then differ little from digit to digit,
    so the head is drawn at random and centred on them (bias = -W·mean, rows scaled by the
    features' spread): one forward pass, no gradient step, and predictions that vary."""
    import timm
    import torch

    torch.manual_seed(0)
    model = randomize_(timm.create_model("test_resnet", num_classes=10)).eval()
    (xtr, _), _ = digits
    head = model.get_classifier()
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(xtr[:256]), pre_logits=True)
        mean, std = feats.mean(0), feats.std(0) + 1e-6
        w = torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(1)) / std
        head.weight.copy_(w)
        head.bias.copy_(-w @ mean)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "test_resnet.safetensors")


@pytest.fixture(scope="session")
def pretrained_resnet(tmp_path_factory, digits):
    """timm's tiny test_resnet trained for a few seconds on digits and saved as safetensors: a real,
    offline stand-in for hub weights, for tests that need a trunk that learned (they assert
    accuracy); a test that only needs weights takes ``resnet_weights``. Returns (path, test
    accuracy)."""
    import timm
    import torch

    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = digits
    model = timm.create_model("test_resnet", num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for epoch in range(2):
        for i in range(0, len(ytr), 64):
            loss = torch.nn.functional.cross_entropy(model(xtr[i:i + 64]), ytr[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    path = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "test_resnet_digits.safetensors")
    return path, acc


@pytest.fixture
def restore():
    """The registries, the loaded plugins and sys.path as they were before the test."""
    import sys

    from synthdsl.library import plugins as registry
    from synthdsl.library.layers import LAYERS
    from synthdsl.library.ops import OPS
    from synthdsl.library.sources import SOURCE_KINDS

    saved = (dict(LAYERS), dict(OPS), dict(SOURCE_KINDS), dict(registry.LOADED),
             {k: dict(v) for k, v in registry._PROVIDERS.items()}, list(sys.path),
             set(sys.modules))
    yield
    for live, old in zip((LAYERS, OPS, SOURCE_KINDS, registry.LOADED), saved):
        live.clear()
        live.update(old)
    for what, old in saved[4].items():
        registry._PROVIDERS[what].clear()
        registry._PROVIDERS[what].update(old)
    sys.path[:] = saved[5]
    for name in set(sys.modules) - saved[6]:
        if name.startswith("plug_"):
            del sys.modules[name]
