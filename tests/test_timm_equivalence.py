"""A spec that uses a timm model computes what timm computes, across many architectures.

For each architecture (tiny variants, small inputs) a timm model is built, given
random "pretrained"-looking state (``randomize_``) and saved as safetensors; specs
load that file with ``weights="..."``. Three parts are checked, each its own test:

* ``whole``:  ``y = net(image)`` is ``model(x)`` in eval mode, bitwise (``torch.equal``);
* ``stages``: ``s0, ... = net(image, stages=[...every feature_info index...])`` is what
  ``timm.create_model(arch, features_only=True, out_indices=...)`` gives from the same
  file (loaded by timm's own pretrained machinery), and what
  ``model.forward_intermediates(x, indices=..., intermediates_only=True)`` gives;
* ``cut``:    ``c = net(image, at="<node>")`` at a node in the middle of the model's fx
  graph (timm's own fx rules) is what torchvision's ``create_feature_extractor`` (as timm
  wraps it, with its leaf modules and autowrapped functions) gives for that node.

Stages and cuts are compared with ``torch.testing.assert_close`` (default tolerances);
whether they are also bitwise equal is recorded and reported at the end of the module
(every comparison was bitwise when this was written).
"""

from __future__ import annotations

import copy
import functools
import operator
import warnings
from pathlib import Path

import pytest
import timm
import torch

import synthdsl
from tests.conftest import randomize_

BATCH = 2


class Case:
    """An architecture, its input size, and the options it is built with (spec and timm alike)."""

    def __init__(self, arch: str, size: int = 64, marks: dict | None = None, **kwargs):
        """`size`: the input's height and width; `kwargs` go to timm.create_model;
        `marks`: part ("whole", "stages", "cut") -> a pytest mark for that test only."""
        self.arch, self.size, self.kwargs = arch, size, kwargs
        self.marks = marks or {}

    @property
    def id(self) -> str:
        return self.arch


# Tiny variants of 45 families, at 64x64 (eva: 56, its patch is 14). Transformers get
# img_size; a depth or width option (the same in the spec and the reference) keeps the
# bigger ones fast.
CASES = [
    # resnets and relatives
    Case("test_resnet"),
    Case("resnext26ts"),
    Case("densenet121", block_config=(1, 1, 1, 1)),
    Case("vgg11", num_classes=10, mlp_ratio=0.05),
    Case("regnetx_002"),
    Case("cs3darknet_s"),
    Case("dla46_c"),
    Case("hrnet_w18_small"),
    Case("hgnetv2_b0"),
    Case("repvgg_a0"),
    Case("test_byobnet"),
    Case("test_nfnet"),
    # efficientnet, mobilenet and other NAS families
    Case("test_efficientnet"),
    Case("test_efficientnet_evos"),
    Case("tf_mobilenetv3_small_minimal_100"),   # TF "same" padding
    Case("mobilenetv3_small_050"),
    Case("mnasnet_small"),
    Case("lcnet_050"),
    Case("ghostnet_050"),
    Case("rexnet_100", width_mult=0.5, depth_mult=0.5),
    # modern convnets and metaformers
    Case("convnext_atto", depths=(1, 1, 1, 1)),
    Case("poolformer_s12"),
    Case("test_mambaout"),
    # hybrids
    Case("mobilevit_xxs"),
    Case("efficientvit_b0", depths=(0, 1, 1, 1, 1)),
    Case("fastvit_t8", layers=(1, 1, 1, 1)),
    Case("edgenext_xx_small", depths=(1, 1, 1, 1)),
    Case("levit_128s", img_size=64),
    Case("test_coatnet", img_size=64),
    Case("test_maxvit", img_size=64),
    # transformers and mlps
    Case("vit_tiny_patch16_224", img_size=64, depth=4),
    Case("test_vit", img_size=64),
    Case("deit_tiny_distilled_patch16_224", img_size=64, depth=4),
    Case("swin_tiny_patch4_window7_224", img_size=64, window_size=4, embed_dim=48,
         depths=(1, 1, 1, 1)),
    Case("xcit_nano_12_p16_224", img_size=64, depth=4),
    Case("cait_xxs24_224", img_size=64, depth=4),
    Case("beit_base_patch16_224", img_size=64, embed_dim=96, depth=3, num_heads=3),
    Case("eva02_tiny_patch14_224", size=56, img_size=56, depth=4),
    Case("pit_ti_224", img_size=64),
    Case("pvt_v2_b0"),
    Case("coat_tiny", img_size=64),
    Case("tnt_s_patch16_224", img_size=64, depth=3),
    Case("nest_tiny", img_size=64),
    Case("sequencer2d_s", img_size=64, layers=(1, 1, 1, 1)),
    Case("mixer_s32_224", img_size=64),
]
PARTS = ("whole", "stages", "cut")


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


def _save(model: torch.nn.Module, path: Path) -> Path:
    """Like conftest's save_checkpoint, but tensors a model ties together (coat shares its
    conv position encodings between blocks) are written once per name, as plain copies."""
    from safetensors.torch import save_file

    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
              str(path))
    return path


BY_ID = {c.id: c for c in CASES}
CKPT_DIR: Path = Path()
#: (arch, what) -> "bitwise" or the largest absolute difference, reported at the end
RESULTS: dict[tuple[str, str], str] = {}


@functools.lru_cache(maxsize=1)
def _reference(arch: str) -> tuple[torch.nn.Module, Path, torch.Tensor]:
    """The timm model with randomized state, its checkpoint, and an input (one at a time:
    the tests run architecture by architecture)."""
    case = BY_ID[arch]
    torch.manual_seed(0)
    model = randomize_(timm.create_model(case.arch, **case.kwargs)).eval()
    ckpt = _save(model, CKPT_DIR / f"{arch}.safetensors")
    x = torch.randn(BATCH, 3, case.size, case.size, generator=torch.Generator().manual_seed(1))
    return model, ckpt, x


@pytest.fixture(scope="module", autouse=True)
def _checkpoints(tmp_path_factory, request):
    """A folder for the checkpoints; one torch thread (these models are tiny, and on a busy
    2-core machine OpenMP's extra threads make each small convolution stall); at the end,
    how many comparisons were bitwise."""
    global CKPT_DIR
    CKPT_DIR = tmp_path_factory.mktemp("timm_equivalence")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _reference.cache_clear()
    rep = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if rep is None or capman is None or not RESULTS:
        return
    close = {k: v for k, v in RESULTS.items() if v != "bitwise"}
    with capman.global_and_fixture_disabled():
        rep.write_line("")
        rep.write_line(f"timm equivalence: {len(RESULTS) - len(close)} of {len(RESULTS)} "
                       "stage/cut comparisons bitwise equal"
                       + ("; close but not bitwise: " + ", ".join(
                           f"{a}/{p} ({v})" for (a, p), v in sorted(close.items()))
                          if close else ""))


def _record(arch: str, what: str, got, want) -> None:
    if all(torch.equal(g, w) for g, w in zip(got, want)):
        RESULTS[(arch, what)] = "bitwise"
    else:
        diff = max(float((g - w).abs().max()) for g, w in zip(got, want))
        RESULTS[(arch, what)] = f"max |diff| {diff:.1e}"


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
    if str(getattr(feats, "output_fmt", "NCHW")).endswith("NHWC"):
        # timm gives some families' features channels-last (swin, mambaout, sequencer, ...);
        # a spec's stages are channels-first, as forward_intermediates gives them
        want = [w.permute(0, 3, 1, 2) if w.dim() == 4 else w for w in want]
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


#: fx nodes that give sizes or pick from containers rather than compute a tensor
_NOT_TENSORS = {getattr, operator.getitem, "size", "dim", "numel", "__getitem__"}


def _middle_nodes(model: torch.nn.Module) -> list[str]:
    """Names of the computing nodes of the eval-mode graph (timm's fx rules), from the middle
    one on, then the rest."""
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer(leaf_modules=get_notrace_modules(),
                            autowrap_functions=get_notrace_functions())
    tracer.trace(copy.deepcopy(model).eval())
    inner = [name for node, name in tracer.node_to_qualname.items()
             if node.op in ("call_module", "call_function", "call_method")
             and node.target not in _NOT_TENSORS and "." in name]
    start = len(inner) // 2
    return inner[start:] + inner[:start]


def cut_at_a_middle_node_is_the_fx_extractor(arch: str):
    from timm.models._features_fx import create_feature_extractor

    case = BY_ID[arch]
    ref, ckpt, x = _reference(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for node in _middle_nodes(ref)[:5]:
            # one node per extractor: a later in-place op (ReLU(inplace=True)) in a
            # many-node extractor would change the value returned for an earlier node
            extractor = create_feature_extractor(copy.deepcopy(ref), [node]).eval()
            with torch.no_grad():
                want = extractor(x)[node]
            if isinstance(want, torch.Tensor) and want.dim() > 0:
                break
        else:
            pytest.fail("no node from the middle of the graph on gives a tensor")
    model = synthdsl.compile_spec(_spec(case, ckpt, f'c = net(image, at="{node}")\noutput c\n'))
    with torch.no_grad():
        got = model.eval()(x)
    assert got.shape == want.shape, node
    torch.testing.assert_close(got, want, msg=lambda m: f"cut at {node!r}: {m}")
    _record(arch, f"cut@{node}", [got], [want])


# -- a cut at several nodes --------------------------------------------------------------


def test_cut_at_several_nodes_keeps_each_value():
    """One extractor serves every node of a multi-node cut; a value returned from the middle
    is copied before the in-place ReLU after it (resnet's act2) runs."""
    ref, ckpt, x = _reference("test_resnet")
    case = BY_ID["test_resnet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from timm.models._features_fx import create_feature_extractor

        with torch.no_grad():
            want = create_feature_extractor(copy.deepcopy(ref), ["layer1.0.add"])(x)
        want = want["layer1.0.add"]
    model = synthdsl.compile_spec(_spec(
        case, ckpt, 'a, b = net(image, at=["layer1.0.add", "layer2"])\noutput a, b\n')).eval()
    with torch.no_grad():
        got = model(x)["a"]
    assert float(want.min()) < 0  # the value before the in-place ReLU has negatives
    assert torch.equal(got, want)
    # in training mode too (the extractor keeps a second graph for it)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = create_feature_extractor(copy.deepcopy(ref).train(), ["layer1.0.add"])
        with torch.no_grad():
            want = reference(x)["layer1.0.add"]
    with torch.no_grad():
        got = model.train()(x)["a"]
    assert float(want.min()) < 0
    assert torch.equal(got, want)


def test_a_returned_view_survives_an_in_place_op_on_its_base():
    """`f` is a view of `a` that nothing else reads; ReLU(inplace) on `a` comes later."""
    from torchvision.models.feature_extraction import create_feature_extractor

    from synthdsl.library.cuts import protect_returned_values as _protect_returned_values

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l, self.l2 = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            a = self.l(x) - 5
            f = a.flatten(1)  # noqa: F841 - a node of the graph, returned by the cut
            return self.l2(torch.nn.functional.relu(a, inplace=True))

    torch.manual_seed(0)
    extractor = create_feature_extractor(Net(), ["sub", "flatten", "l2"])
    _protect_returned_values(extractor)
    x = torch.randn(3, 4)
    for mode in (True, False):
        with torch.no_grad():
            out = extractor.train(mode)(x)
        assert float(out["sub"].max()) < 0 and torch.equal(out["flatten"], out["sub"])
