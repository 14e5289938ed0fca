"""A spec that uses a timm model computes what timm computes, across many architectures.

For each architecture (tiny variants, small inputs) a timm model is built, given
random "pretrained"-looking state (``randomize_``) and saved as safetensors; specs
load that file with ``weights="..."``. Three parts are checked, each its own test:

* ``whole``:  ``y = net(image)`` is ``model(x)`` in eval mode, bitwise (``torch.equal``);
* ``stages``: ``s0, ... = net(image, stages=[...every feature_info index...])`` is what
  ``timm.create_model(arch, features_only=True, out_indices=...)`` gives from the same
  file (loaded by timm's own pretrained machinery), and what
  ``model.forward_intermediates(x, indices=..., intermediates_only=True)`` gives;
* ``cut``:    ``c = net(image, at="<node>")`` at a middle node of the model's fx graph
  (timm's own fx rules) is what torchvision's ``create_feature_extractor`` (as timm
  wraps it, with its leaf modules and autowrapped functions) gives for that node.

Stages and cuts are compared with ``torch.testing.assert_close`` (default tolerances);
whether they are also bitwise equal is recorded and reported at the end of the module.
"""

from __future__ import annotations

import copy
import functools
import warnings
from pathlib import Path

import pytest
import timm
import torch

import synthdsl
from tests.conftest import randomize_, save_checkpoint

BATCH = 2


class Case:
    """An architecture, its input size, and the options it is built with (spec and timm alike)."""

    def __init__(self, arch: str, size: int = 64, marks: dict | None = None, **kwargs):
        self.arch, self.size, self.kwargs = arch, size, kwargs
        self.marks = marks or {}   # part ("whole", "stages", "cut") -> pytest mark

    @property
    def id(self) -> str:
        return self.arch


# Tiny variants of ~50 families. Transformers get img_size (and a few a smaller depth) so
# that 64x64 inputs work; CNNs take 64x64 as they are.
CASES = [
    # resnets and relatives
    Case("resnet10t"),
    Case("test_resnet"),
    Case("resnext26ts"),
    Case("resnest14d"),
    Case("dpn48b"),
    Case("skresnet18"),
    # efficientnet / mobilenet / nas families
    Case("test_efficientnet"),
    Case("test_efficientnet_evos"),
    Case("tf_efficientnet_b0"),
    Case("mobilenetv3_small_050"),
    Case("mobilenetv4_conv_small_035"),
    Case("mnasnet_small"),
    Case("lcnet_050"),
    Case("ghostnet_050"),
    Case("rexnet_100"),
    # other convnets
    Case("convnext_atto"),
    Case("regnetx_002"),
    Case("densenet121"),
    Case("vgg11", num_classes=10, mlp_ratio=0.05),
    Case("cs3darknet_s"),
    Case("dla46_c"),
    Case("hrnet_w18_small"),
    Case("hgnetv2_b0"),
    Case("repvgg_a0"),
    Case("mobileone_s0"),
    Case("ese_vovnet19b_dw"),
    Case("test_byobnet"),
    Case("test_nfnet"),
    Case("starnet_s050"),
    Case("fasternet_t0"),
    Case("inception_next_atto"),
    Case("poolformer_s12"),
    Case("test_mambaout"),
    # hybrids
    Case("mobilevit_xxs"),
    Case("efficientvit_b0"),
    Case("fastvit_t8"),
    Case("edgenext_xx_small"),
    Case("repvit_m0_9"),
    Case("efficientformer_l1", img_size=64),
    Case("levit_128s", img_size=64),
    Case("test_coatnet", img_size=64),
    Case("test_maxvit", img_size=64),
    # transformers and mlps
    Case("vit_tiny_patch16_224", img_size=64),
    Case("test_vit", img_size=64),
    Case("deit_tiny_distilled_patch16_224", img_size=64),
    Case("swin_tiny_patch4_window7_224", img_size=64, window_size=4, depths=(1, 1, 2, 1)),
    Case("xcit_nano_12_p16_224", img_size=64, depth=4),
    Case("cait_xxs24_224", img_size=64, depth=4),
    Case("beit_base_patch16_224", img_size=64, embed_dim=96, depth=3, num_heads=3),
    Case("eva02_tiny_patch14_224", img_size=56, depth=4),
    Case("pit_ti_224", img_size=64),
    Case("tnt_s_patch16_224", img_size=64, depth=3),
    Case("nest_tiny", img_size=64),
    Case("sequencer2d_s", img_size=64, layers=(1, 1, 1, 1)),
    Case("mixer_s32_224", img_size=64, num_blocks=4),
    Case("pvt_v2_b0", img_size=64),
    Case("mvitv2_tiny", img_size=64),
    Case("coat_tiny", img_size=64),
]


# -- building blocks ----------------------------------------------------------------------


def _literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    return repr(v)


def _spec(case: Case, ckpt: Path, body: str) -> str:
    opts = "".join(f", {k}={_literal(v)}" for k, v in case.kwargs.items())
    return (f"synth Equivalence\ninput image: [B, 3, {case.size}, {case.size}]\n"
            f'source net = timm("{case.arch}"{opts}, weights="{ckpt}")\n{body}')


@functools.lru_cache(maxsize=1)
def _reference(arch: str) -> tuple[torch.nn.Module, Path, torch.Tensor]:
    """The timm model with randomized state, its checkpoint, and an input (one at a time)."""
    case = BY_ID[arch]
    torch.manual_seed(0)
    model = randomize_(timm.create_model(case.arch, **case.kwargs)).eval()
    ckpt = save_checkpoint(model, CKPT_DIR / f"{arch}.safetensors")
    x = torch.randn(BATCH, 3, case.size, case.size, generator=torch.Generator().manual_seed(1))
    return model, ckpt, x


BY_ID = {c.id: c for c in CASES}
CKPT_DIR: Path = Path()
#: (arch, part) -> "bitwise" or the largest absolute difference, reported at the end
RESULTS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module", autouse=True)
def _checkpoints(tmp_path_factory, request):
    global CKPT_DIR
    CKPT_DIR = tmp_path_factory.mktemp("timm_equivalence")
    yield
    _reference.cache_clear()
    rep = request.config.pluginmanager.get_plugin("terminalreporter")
    if rep is None or not RESULTS:
        return
    close = {k: v for k, v in RESULTS.items() if v != "bitwise"}
    rep.write_line("")
    rep.write_line(f"timm equivalence: {len(RESULTS) - len(close)} of {len(RESULTS)} "
                   "comparisons bitwise equal"
                   + ("; close but not bitwise: " + ", ".join(
                       f"{a}/{p} ({v})" for (a, p), v in sorted(close.items())) if close else ""))


def _record(arch: str, part: str, got, want) -> None:
    if all(torch.equal(g, w) for g, w in zip(got, want)):
        RESULTS[(arch, part)] = "bitwise"
    else:
        diff = max(float((g - w).abs().max()) for g, w in zip(got, want))
        RESULTS[(arch, part)] = f"max |diff| {diff:.1e}"


PARTS = ("whole", "stages", "cut")


def _params():
    """One test per architecture and part, architecture-major (so each model is built once)."""
    return [pytest.param(c.id, part, marks=[c.marks[part]] if part in c.marks else [],
                         id=f"{c.id}-{part}") for c in CASES for part in PARTS]


# -- the tests ----------------------------------------------------------------------------


def test_cases_cover_many_families():
    assert len(CASES) >= 40
    assert len({c.arch for c in CASES}) == len(CASES)


@pytest.mark.parametrize("arch, part", _params())
def test_spec_equals_timm(arch: str, part: str):
    {"whole": whole_is_timm_bitwise, "stages": stages_are_timm_features,
     "cut": cut_at_a_middle_node_is_the_fx_extractor}[part](arch)


def whole_is_timm_bitwise(arch: str):
    case = BY_ID[arch]
    ref, ckpt, x = _reference(arch)
    model = synthdsl.compile_spec(_spec(case, ckpt, "y = net(image)\noutput y\n")).eval()
    with torch.no_grad():
        got, want = model(x), ref(x)
    assert got.shape == want.shape
    assert torch.equal(got, want), f"max |diff| {float((got - want).abs().max()):.3e}"
    assert set(model.state_dict()) == {f"net.{k}" for k in ref.state_dict()}


def stages_are_timm_features(arch: str):
    case = BY_ID[arch]
    ref, ckpt, x = _reference(arch)
    n = len(ref.feature_info)
    stages = list(range(n))
    names = ", ".join(f"s{i}" for i in stages)
    model = synthdsl.compile_spec(_spec(
        case, ckpt, f"{names} = net(image, stages={stages})\noutput {names}\n")).eval()
    with torch.no_grad():
        out = model(x)
    got = list(out.values()) if isinstance(out, dict) else [out]
    assert len(got) == n

    # timm's features_only model, loaded from the same file by timm's pretrained machinery
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feats = timm.create_model(case.arch, pretrained=True, features_only=True,
                                  out_indices=stages, pretrained_cfg_overlay={"file": str(ckpt)},
                                  **case.kwargs).eval()
    with torch.no_grad():
        want = list(feats(x))
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    for i, (g, w) in enumerate(zip(got, want)):
        torch.testing.assert_close(g, w, msg=lambda m, i=i: f"stage {i}: {m}")
    _record(arch, "stages~features_only", got, want)

    # and the full model's own forward_intermediates
    if hasattr(ref, "forward_intermediates"):
        with torch.no_grad():
            inter = ref.forward_intermediates(x, indices=stages, intermediates_only=True)
        assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in inter]
        for i, (g, w) in enumerate(zip(got, inter)):
            torch.testing.assert_close(g, w, msg=lambda m, i=i: f"stage {i}: {m}")
        _record(arch, "stages~forward_intermediates", got, inter)


def _middle_nodes(model: torch.nn.Module) -> list[str]:
    """Nodes of the eval-mode graph (timm's fx rules), from the middle one on, then the rest."""
    from timm.models._features_fx import get_graph_node_names

    _, nodes = get_graph_node_names(copy.deepcopy(model))
    inner = [n for n in nodes[1:-1] if "." in n]  # module-level nodes, not x / the head
    inner = inner or nodes[1:-1]
    start = len(inner) // 2
    return inner[start:] + inner[:start]


def cut_at_a_middle_node_is_the_fx_extractor(arch: str):
    from timm.models._features_fx import create_feature_extractor

    case = BY_ID[arch]
    ref, ckpt, x = _reference(arch)
    candidates = _middle_nodes(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for node in candidates:  # the first node (from the middle on) that gives a tensor
            extractor = create_feature_extractor(copy.deepcopy(ref), [node]).eval()
            with torch.no_grad():
                want = extractor(x)[node]
            if isinstance(want, torch.Tensor) and want.dim() > 0:
                break
        else:
            pytest.fail("no node of the graph gives a tensor")
    model = synthdsl.compile_spec(_spec(case, ckpt, f'c = net(image, at="{node}")\noutput c\n'))
    with torch.no_grad():
        got = model.eval()(x)
    assert got.shape == want.shape, node
    torch.testing.assert_close(got, want, msg=lambda m: f"cut at {node!r}: {m}")
    _record(arch, f"cut@{node}", [got], [want])
