"""merge(...) sources: weight-space merges equal to plain reference implementations,
checked from headers, streamed, with provenance, lock and `synth merge`.

The references below are written element by element over Python lists (no torch
reductions), so they share no code with :mod:`synthdsl.library.merging`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import synthdsl
from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError
from synthdsl.library import merging
from synthdsl.library.merging import key_generator, random_mask

ARCH = "test_resnet"


# ---- references, written plainly --------------------------------------------------------


def ref_linear(ts, w, normalize=True):
    flat = [t.flatten().tolist() for t in ts]
    out = [sum(w[i] * flat[i][j] for i in range(len(ts))) for j in range(len(flat[0]))]
    if normalize:
        out = [v / sum(w) for v in out]
    return torch.tensor(out, dtype=torch.float64).view(ts[0].shape)


def ref_task(base, ts, w, scale=1.0, keep=None, rescale=None, consensus=False,
             normalize=False):
    """θ_base + λ·merge(τ); `keep[i][j]` says whether entry j of task vector i survives;
    `rescale` ("l1", or a factor) how the survivors are scaled."""
    b = base.flatten().tolist()
    deltas = [[(v - b[j]) for j, v in enumerate(t.flatten().tolist())] for t in ts]
    if keep is not None:
        kept = [[d if keep[i][j] else 0.0 for j, d in enumerate(row)]
                for i, row in enumerate(deltas)]
        if rescale == "l1":
            kept = [[d * sum(map(abs, full)) / sum(map(abs, row)) for d in row]
                    for row, full in zip(kept, deltas)]
        elif rescale is not None:
            kept = [[d * rescale for d in row] for row in kept]
        deltas = kept
    out = []
    for j in range(len(b)):
        total = sum(w[i] * deltas[i][j] for i in range(len(ts)))
        sign = 1 if total >= 0 else -1
        if consensus:
            agree = [i for i in range(len(ts))
                     if ((w[i] * deltas[i][j] > 0) - (w[i] * deltas[i][j] < 0)) == sign]
            mixed = sum(w[i] * deltas[i][j] for i in agree)
            divisor = sum(w[i] for i in agree)
        else:
            mixed, divisor = total, sum(w)
        if normalize and divisor != 0:
            mixed /= divisor
        out.append(b[j] + scale * mixed)
    return torch.tensor(out, dtype=torch.float64).view(base.shape)


def ref_top(delta, density):
    """Which entries of a task vector TIES keeps: the k largest in magnitude."""
    vals = delta.flatten().tolist()
    k = max(1, int(density * len(vals)))
    order = sorted(range(len(vals)), key=lambda j: (-abs(vals[j]), j))[:k]
    return [j in set(order) for j in range(len(vals))]


def ref_slerp(a, b, t):
    x, y = a.flatten().tolist(), b.flatten().tolist()
    nx, ny = math.sqrt(sum(v * v for v in x)), math.sqrt(sum(v * v for v in y))
    dot = sum(p * q for p, q in zip(x, y)) / (nx * ny)
    if abs(dot) > 0.9995:
        out = [(1 - t) * p + t * q for p, q in zip(x, y)]
    else:
        th = math.acos(dot)
        out = [(math.sin((1 - t) * th) * p + math.sin(t * th) * q) / math.sin(th)
               for p, q in zip(x, y)]
    return torch.tensor(out, dtype=torch.float64).view(a.shape)


def close(a, b, atol=1e-5):
    return torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-5)


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    return base, [base + 0.5 * torch.randn(6, 5, generator=g) for _ in range(3)]


# ---- the methods, on tensors ------------------------------------------------------------


def test_linear_and_uniform_soup(tensors):
    _, ts = tensors
    assert close(merging.linear(ts, [1, 1, 1]), ref_linear(ts, [1, 1, 1]))
    assert close(merging.linear(ts, [0.2, 0.3, 0.5]), ref_linear(ts, [0.2, 0.3, 0.5]))
    assert close(merging.linear(ts, [2, 1, 1], normalize=False),
                 ref_linear(ts, [2, 1, 1], normalize=False))


def test_task_arithmetic(tensors):
    base, ts = tensors
    got = merging.merge_tensor("task_arithmetic", "k", base, ts,
                               {"weights": [1.0, 0.5, 0.25], "scale": 0.8})
    assert close(got, ref_task(base, ts, [1.0, 0.5, 0.25], scale=0.8))


@pytest.mark.parametrize("density", [1.0, 0.7, 0.3])
def test_ties_trims_elects_and_averages(tensors, density):
    base, ts = tensors
    keep = [ref_top(t - base, density) for t in ts]
    got = merging.merge_tensor("ties", "k", base, ts,
                               {"weights": [1.0, 0.6, 0.3], "density": density, "scale": 1.2})
    want = ref_task(base, ts, [1.0, 0.6, 0.3], scale=1.2, keep=keep, consensus=True,
                    normalize=True)
    assert close(got, want)


@pytest.mark.parametrize("rescale,factor", [("l1", "l1"), ("density", 2.0), ("none", None)])
@pytest.mark.parametrize("method,consensus", [("dare_ties", True), ("dare_linear", False)])
def test_dare_drops_rescales_and_is_seeded(tensors, method, consensus, rescale, factor):
    base, ts = tensors
    opts = {"weights": [1.0, 0.5, 1.0], "density": 0.5, "seed": 7, "rescale": rescale}
    got = merging.merge_tensor(method, "layer.weight", base, ts, opts)
    keep = [random_mask(ts[i] - base, 0.5, key_generator(7, "layer.weight", i))
            .flatten().tolist() for i in range(3)]
    assert 0.3 < sum(map(sum, keep)) / (3 * base.numel()) < 0.7  # about half survive
    want = ref_task(base, ts, [1.0, 0.5, 1.0], keep=keep, rescale=factor, consensus=consensus)
    assert close(got, want)
    assert torch.equal(got, merging.merge_tensor(method, "layer.weight", base, ts, opts))
    other = merging.merge_tensor(method, "layer.weight", base, ts, {**opts, "seed": 8})
    assert not torch.equal(got, other)
    # another tensor of the same merge draws its own mask
    assert not torch.equal(got, merging.merge_tensor(method, "other.weight", base, ts, opts))


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0])
def test_slerp(tensors, t):
    _, ts = tensors
    got = merging.slerp(ts[0], ts[1], t)
    assert close(got, ref_slerp(ts[0], ts[1], t))
    if t in (0.0, 1.0):
        assert close(got, ts[0] if t == 0 else ts[1])


def test_slerp_of_collinear_tensors_is_linear():
    a = torch.arange(1.0, 7.0)
    assert close(merging.slerp(a, 2 * a, 0.5), 1.5 * a)


def test_integer_tensors_are_kept_from_the_base():
    base, a = torch.tensor(5), torch.tensor(9)
    assert merging.merge_tensor("linear", "n", base, [a, a], {}) is base
    assert merging.merge_tensor("ties", "n", base, [a], {"density": 0.5}) is base


# ---- merge(...) sources ---------------------------------------------------------------


def save(path: Path, seed: int, arch: str = ARCH, **kwargs) -> dict:
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=5, **kwargs)
    with torch.no_grad():  # running statistics as training leaves them, not 0 and 1
        for name, b in model.named_buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return state


@pytest.fixture
def folder(tmp_path):
    states = [save(tmp_path / f"m{i}.safetensors", i) for i in range(4)]
    return tmp_path, states


def spec(folder: Path, options: str, body: str = "y = soup(x)\noutput y\n") -> Path:
    path = folder / "soup.synth"
    path.write_text("synth Soup\ninput x: [B, 3, 32, 32]\n"
                    f'source soup = merge("{ARCH}", num_classes=5, {options})\n' + body)
    return path


MODELS = 'models=["m1.safetensors", "m2.safetensors", "m3.safetensors"]'


@pytest.mark.parametrize("options,reference", [
    (MODELS, lambda b, ts: ref_linear(ts, [1, 1, 1])),
    (MODELS + ", method=\"linear\", weights=[0.5, 0.3, 0.2]",
     lambda b, ts: ref_linear(ts, [0.5, 0.3, 0.2])),
    ('base="m0.safetensors", method="task_arithmetic", scale=0.5, ' + MODELS,
     lambda b, ts: ref_task(b, ts, [1, 1, 1], scale=0.5)),
    ('base="m0.safetensors", method="ties", density=0.6, ' + MODELS,
     lambda b, ts: ref_task(b, ts, [1, 1, 1], keep=[ref_top(t - b, 0.6) for t in ts],
                            consensus=True, normalize=True)),
    ('method="slerp", t=0.25, models=["m1.safetensors", "m2.safetensors"]',
     lambda b, ts: ref_slerp(ts[0], ts[1], 0.25)),
], ids=["uniform_soup", "weighted", "task_arithmetic", "ties", "slerp"])
def test_compiled_merge_equals_the_reference(folder, options, reference):
    root, states = folder
    if "method" not in options:
        options = 'method="linear", ' + options
    model = synthdsl.compile_spec(spec(root, options))
    got = model.state_dict()
    models = states[1:4] if "m3" in options else states[1:3]
    for key in ("conv1.0.weight", "fc.weight", "fc.bias"):
        want = reference(states[0][key], [s[key] for s in models])
        assert close(got[f"soup.{key}"], want), key
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference_model = timm.create_model(ARCH, num_classes=5).eval()
        reference_model.load_state_dict({k[5:]: v for k, v in got.items()})
        assert torch.equal(model.eval()(x), reference_model(x))


def test_counters_come_from_the_base_and_parts_merge_only_their_tensors(folder):
    root, states = folder
    model = synthdsl.compile_spec(spec(
        root, 'method="ties", density=0.5, base="m0.safetensors", parts=["fc", "layer4.*"], '
        + MODELS))
    got = model.state_dict()
    assert torch.equal(got["soup.conv1.0.weight"], states[0]["conv1.0.weight"])
    assert not torch.equal(got["soup.fc.weight"], states[0]["fc.weight"])
    counters = [k for k in got if k.endswith("num_batches_tracked")]
    assert counters and all(torch.equal(got[k], states[0][k[5:]]) for k in counters)
    prov = model.provenance
    assert prov["soup.conv1.0.weight"]["method"] == "base"
    assert prov["soup.fc.weight"]["method"] == "ties"


@pytest.mark.parametrize("method", ["ties", "task_arithmetic", "dare_linear"])
def test_running_statistics_are_averaged_not_added(folder, method):
    root, states = folder
    options = f'method="{method}", base="m0.safetensors", weights=[1, 1, 2], ' + MODELS
    got = synthdsl.compile_spec(spec(root, options)).state_dict()
    key = "bn1.running_var" if "bn1.running_var" in states[0] else next(
        k for k in states[0] if k.endswith("running_var"))
    want = ref_linear([s[key] for s in states[1:4]], [1, 1, 2])
    assert close(got[f"soup.{key}"], want)
    assert (got[f"soup.{key}"] > 0).all()
    weight = "fc.weight"  # parameters follow the method
    assert not close(got[f"soup.{weight}"], ref_linear([s[weight] for s in states[1:4]],
                                                       [1, 1, 2]))


def test_provenance_names_every_input_with_its_hash(folder):
    root, _ = folder
    model = synthdsl.compile_spec(spec(root, 'method="dare_ties", density=0.5, seed=3, '
                                             'base="m0.safetensors", ' + MODELS))
    p = model.provenance["soup.fc.weight"]
    assert p["origin"] == "merge" and p["method"] == "dare_ties"
    assert p["options"] == {"density": 0.5, "seed": 3}
    assert p["key"] == "fc.weight"
    assert [i["role"] for i in p["inputs"]] == ["base", "models[0]", "models[1]", "models[2]"]
    import hashlib
    for i in p["inputs"]:
        assert i["sha256"] == hashlib.sha256(Path(i["file"]).read_bytes()).hexdigest()


def test_dare_merge_is_the_same_every_time(folder):
    root, _ = folder
    path = spec(root, 'method="dare_linear", density=0.4, seed=11, base="m0.safetensors", '
                + MODELS)
    a, b = synthdsl.compile_spec(path).state_dict(), synthdsl.compile_spec(path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_merged_source_gives_stages_and_is_an_inheritance_donor(folder):
    root, states = folder
    stages = spec(root, 'method="linear", ' + MODELS,
                  "a, b = soup(x, stages=[1, 2])\noutput a, b\n")
    merged = synthdsl.compile_spec(stages).eval()
    reference = timm.create_model(ARCH, num_classes=5, features_only=True,
                                  out_indices=(1, 2)).eval()
    reference.load_state_dict({k[5:]: v for k, v in merged.state_dict().items()},
                              strict=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got, want = merged(x), reference(x)
    assert torch.equal(got["a"], want[0]) and torch.equal(got["b"], want[1])
    body = ("f = soup.forward_features(x)\n"
            "p = GlobalAvgPool(f)\n"
            "y = Linear(p, out=5)\n"
            "inherit y from soup.fc\n"
            "freeze soup\n"
            "output y\n")
    path = spec(root, 'method="linear", ' + MODELS, body)
    graph = synthdsl.check_spec(path)
    assert not graph.graph["errors"]
    model = synthdsl.compile_graph(graph)
    want = ref_linear([s["fc.weight"] for s in states[1:4]], [1, 1, 1])
    assert close(model.state_dict()["y.weight"], want)
    assert model.provenance["y.weight"]["origin"] == "inherited"
    assert model.provenance["y.weight"]["method"] == "linear"


def test_torchvision_architectures_merge_too(tmp_path):
    from synthdsl.library.torchvision_source import create_torchvision

    for i in range(2):
        torch.manual_seed(i)
        m = create_torchvision("squeezenet1_1", {"num_classes": 4})
        torch.save(m.state_dict(), tmp_path / f"t{i}.pth")
    path = tmp_path / "tv.synth"
    path.write_text('synth TvSoup\ninput x: [B, 3, 64, 64]\n'
                    'source s = merge("squeezenet1_1", zoo="torchvision", num_classes=4, '
                    'method="linear", models=["t0.pth", "t1.pth"])\ny = s(x)\noutput y\n')
    got = synthdsl.compile_spec(path).state_dict()
    a, b = (torch.load(tmp_path / f"t{i}.pth", weights_only=True) for i in range(2))
    key = "features.0.weight"
    assert close(got[f"s.{key}"], (a[key] + b[key]) / 2)


def test_synth_merge_writes_the_merged_weights(folder, capsys):
    root, _ = folder
    path = spec(root, 'method="ties", density=0.5, base="m0.safetensors", ' + MODELS)
    out = root / "merged.safetensors"
    assert run(["merge", str(path), "-o", str(out)]) == 0
    written = load_file(str(out))
    compiled = synthdsl.compile_spec(path).state_dict()
    assert set(written) == {k[5:] for k in compiled}
    assert all(torch.equal(written[k], compiled[f"soup.{k}"]) for k in written)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    merge = json.loads(meta["merge"])
    assert merge["method"] == "ties" and merge["architecture"] == f"timm:{ARCH}"
    assert len(merge["inputs"]) == 4
    assert f"{len(written)} tensors" in capsys.readouterr().out


def test_synth_merge_refuses_to_overwrite_an_input(folder, capsys):
    root, _ = folder
    path = spec(root, 'method="linear", ' + MODELS)
    before = (root / "m1.safetensors").read_bytes()
    assert run(["merge", str(path), "-o", str(root / "m1.safetensors")]) != 0
    assert "S009" in capsys.readouterr().err
    assert (root / "m1.safetensors").read_bytes() == before


def test_the_lock_covers_every_input(folder, capsys):
    root, _ = folder
    path = spec(root, 'method="ties", density=0.5, base="m0.safetensors", ' + MODELS)
    assert run(["lock", str(path)]) == 0
    lock = json.loads((root / "soup.synth.lock").read_text()) \
        if (root / "soup.synth.lock").exists() else json.loads(
            next(root.glob("*.lock")).read_text())
    text = json.dumps(lock)
    for name in ("m0.safetensors", "m1.safetensors", "m2.safetensors", "m3.safetensors"):
        assert name in text
    save(root / "m2.safetensors", 99)
    capsys.readouterr()
    assert run(["check", str(path)]) != 0
    err = capsys.readouterr().err
    assert "S206" in err and "m2.safetensors" in err


# ---- every problem at its place, before a tensor is read --------------------------------


@pytest.mark.parametrize("options,code,words", [
    ('method="tie", ' + MODELS, "S402", ["no method 'tie'", "ties"]),
    (MODELS, "S402", ["needs method="]),
    ('method="ties", ' + MODELS, "S402", ["needs base="]),
    ('method="slerp", ' + MODELS, "S402", ["exactly two", "found 3"]),
    ('method="linear", weights=[1, 2], ' + MODELS, "S402", ["2 number(s) for 3 model(s)"]),
    ('method="linear", weights=[1, -1, 0], ' + MODELS, "S402", ["sum to 0"]),
    ('method="ties", density=1.5, base="m0.safetensors", ' + MODELS, "S402", ["(0, 1]"]),
    ('method="dare_ties", seed=-1, base="m0.safetensors", ' + MODELS, "S402", ["seed="]),
    ('method="linear", density=0.5, ' + MODELS, "S402", ["takes no density="]),
    ('method="slerp", t=2, models=["m1.safetensors", "m2.safetensors"]', "S402", ["[0, 1]"]),
    ('method="linear", parts=["fc"], ' + MODELS, "S402", ["names no base"]),
    ('method="linear", zoo="keras", ' + MODELS, "S402", ["zoo="]),
    ('method="linear", pretrained=true, ' + MODELS, "S402", ["not pretrained="]),
    ('method="linear", models=[]', "S204", ["models= expects"]),
    ('method="linear", models=["m1.safetensors", "nope.safetensors"]', "S203",
     ["models[1]", "does not exist"]),
    ('method="linear", models=["m1.safetensors", "other.safetensors"]', "S205",
     ["models[1]", "does not fit"]),
    ('method="ties", density=0.5, base="m0.safetensors", parts=["layer9.*"], ' + MODELS,
     "S402", ["selects no tensor"]),
])
def test_problems_are_reported_at_the_spec(folder, options, code, words):
    root, _ = folder
    save(root / "other.safetensors", 0, arch="test_efficientnet")
    path = spec(root, options)
    with pytest.raises(SynthError) as e:
        synthdsl.check_spec(path)
    errs = getattr(e.value, "errors", [e.value])
    err = errs[0]
    assert err.code == code, str(err)
    text = " ".join([str(err), str(err.hint or ""), *(getattr(err, "notes", []) or [])])
    for w in words:
        assert w in text, text
    assert err.span is not None and err.span.line == 3


def test_a_wrong_file_is_found_from_its_header_alone(folder, monkeypatch):
    root, _ = folder
    save(root / "other.safetensors", 0, arch="test_efficientnet")
    from synthdsl.library import checkpoints

    read = []
    monkeypatch.setattr(checkpoints, "_read_entry", lambda *a: read.append(a) or None)
    with pytest.raises(SynthError):
        synthdsl.check_spec(spec(root, 'method="linear", models=["m1.safetensors", '
                                       '"other.safetensors"]'))
    assert read == []  # no tensor was read


# ---- against mergekit's own merge functions, where mergekit is installed ----------------


@pytest.mark.parametrize("method,options", [
    ("task_arithmetic", {"scale": 0.7}),
    ("ties", {"density": 0.4}),
    ("ties", {"density": 0.8, "scale": 1.3, "normalize": False}),
])
def test_equal_to_mergekit(tensors, method, options):
    gta = pytest.importorskip("mergekit.merge_methods.generalized_task_arithmetic")
    from mergekit.merge_methods.base import TensorGroup
    from mergekit.merge_methods import registry

    base, ts = tensors
    weights = [1.0, 0.6, 0.3]
    merger = registry.get(method)
    assert isinstance(merger, gta.GeneralizedTaskArithmeticMerge)
    group = TensorGroup.from_tensors([base, *ts], base_index=0)
    theirs = merger.merge_group(
        group, weight={i + 1: w for i, w in enumerate(weights)},
        density={i + 1: options.get("density", 1.0) for i in range(3)},
        normalize=options.get("normalize", merger.default_normalize), rescale=False,
        int8_mask=False, **{"lambda": options.get("scale", 1.0)})
    ours = merging.merge_tensor(method, "k", base, ts, {"weights": weights, **options})
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_inputs_saved_under_other_names_are_renamed(folder):
    root, states = folder
    for i in (1, 2):  # as another codebase saves them: every key under "model."
        save_file({f"model.{k}": v for k, v in states[i].items()},
                  str(root / f"p{i}.safetensors"))
    options = ('method="linear", rename=["model\\\\.(.*)", "\\\\1"], '
               'models=["p1.safetensors", "p2.safetensors"]')
    got = synthdsl.compile_spec(spec(root, options)).state_dict()
    assert close(got["soup.fc.weight"], ref_linear([states[1]["fc.weight"],
                                                    states[2]["fc.weight"]], [1, 1]))
    with pytest.raises(SynthError) as e:  # without rename= the names do not fit
        synthdsl.check_spec(spec(root, 'method="linear", models=["p1.safetensors", '
                                       '"p2.safetensors"]'))
    assert "S205" in str(e.value) and "models[0]" in str(e.value)
    with pytest.raises(SynthError) as e:  # two tensors given one name
        synthdsl.check_spec(spec(root, 'method="linear", rename=["model\\\\.fc\\\\..*", "fc"], '
                                       'models=["p1.safetensors", "p2.safetensors"]'))
    assert "S402" in str(e.value) and "two" in str(e.value)


def test_files_saved_in_another_order_of_names_map_by_order(folder):
    root, states = folder
    for i in (1, 2):  # another codebase's names, in the architecture's order, as .pt
        torch.save({f"net.p{j}": v for j, v in enumerate(states[i].values())},
                   root / f"o{i}.pt")
    options = 'method="linear", map="order", models=["o1.pt", "o2.pt"]'
    got = synthdsl.compile_spec(spec(root, options)).state_dict()
    for key in ("fc.weight", "conv1.0.weight", "conv1.1.running_var"):
        assert close(got[f"soup.{key}"], ref_linear([states[1][key], states[2][key]], [1, 1]))
    torch.save({f"net.p{j}": v for j, v in list(enumerate(states[1].values()))[:-1]},
               root / "short.pt")
    with pytest.raises(SynthError) as e:  # one tensor fewer than the architecture
        synthdsl.check_spec(spec(root, 'method="linear", map="order", '
                                       'models=["o1.pt", "short.pt"]'))
    assert "S205" in str(e.value) and "models[1]" in str(e.value)
    for bad, words in (('models=["m1.safetensors", "m2.safetensors"]', "order of its"),
                       ('models=["o1.pt", "o2.pt"], rename=["a", "b"]', "not both")):
        with pytest.raises(SynthError) as e:
            synthdsl.check_spec(spec(root, f'method="linear", map="order", {bad}'))
        assert "S402" in str(e.value) and words in str(e.value)
    with pytest.raises(SynthError) as e:
        synthdsl.check_spec(spec(root, 'method="linear", map="sorted", models=["o1.pt"]'))
    assert "S402" in str(e.value) and '"name" or "order"' in str(e.value)


def test_a_merged_source_is_cut_at_a_node_and_its_artifact_keeps_the_provenance(folder):
    root, states = folder
    path = spec(root, 'method="linear", ' + MODELS, 'y = soup(x, at="layer1")\noutput y\n')
    model = synthdsl.compile_spec(path).eval()
    assert not any(k.startswith("soup.fc") for k in model.state_dict())  # only what is kept
    reference = timm.create_model(ARCH, num_classes=5).eval()
    reference.load_state_dict({k: ref_linear([s[k].float() for s in states[1:4]], [1, 1, 1])
                               .to(states[1][k].dtype) if states[1][k].is_floating_point()
                               else states[1][k] for k in states[1]})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = reference.layer1(reference.maxpool(reference.act1(reference.bn1(
            reference.conv1(x)))))
        got = model(x)
    assert torch.allclose(got, want, atol=1e-5)
    out = root / "cut.safetensors"
    assert run(["compile", str(path), "-o", str(out)]) == 0
    loaded = synthdsl.load_compiled(out)
    key = next(k for k in loaded.provenance if k.startswith("soup."))
    assert loaded.provenance[key]["origin"] == "merge"
    assert {i["role"] for i in loaded.provenance[key]["inputs"]} == \
        {"models[0]", "models[1]", "models[2]"}
