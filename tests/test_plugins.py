"""Plugins: a user's own layer, operation and kind of source, loaded only when the user asks.

The plugin is a module written into tmp_path and put on sys.path (PYTHONPATH for the
subprocess tests); every test takes the registries back to what they were.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from synthdsl.build.artifact import load_compiled, read_metadata, save_compiled
from synthdsl.cli import run
from synthdsl.lang.errors import SynthError, render
from synthdsl.library import plugins as registry
from synthdsl.library.layers import LAYERS
from synthdsl.library.ops import OPS
from synthdsl.pipeline import check_spec, compile_spec
from synthdsl import plugins

GOLDEN = Path(__file__).parent / "golden" / "plugins"

PLUGIN = '''
import torch
from torch import nn
from synthdsl import plugins
from synthdsl.plugins import Option


class Gate(nn.Module):
    def __init__(self, features, hidden=16):
        super().__init__()
        self.down = nn.Linear(features, hidden)
        self.up = nn.Linear(hidden, features)

    def forward(self, x):
        return x * torch.sigmoid(self.up(torch.relu(self.down(x))))


def _hidden(value, shapes, options):
    return None if 1 <= value <= 4096 else "a whole number from 1 to 4096"


plugins.register_layer("MyGate", Gate, options=[Option("hidden", (int,), 16, check=_hidden)],
                       infer=lambda shape: {"features": shape[-1]}, ranks=(2,),
                       doc="a gate over features")


def blend(a, b, alpha=0.5):
    return alpha * a + (1 - alpha) * b


def _same(shapes, options, names):
    if shapes[0] != shapes[1]:
        return f"blend needs {names[0]} and {names[1]} of one shape"
    return None


plugins.register_op("blend", blend, 2, 2, [Option("alpha", (float,), 0.5)], _same)


def make_mlp(inp, hidden, out):
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))


class MlpKind(plugins.SourceKind):
    name = "mlp"

    def build(self, node, device="cpu", load_weights=True):
        o = node["create_kwargs"]
        with torch.device(device):
            return make_mlp(o["inp"], o["hidden"], o["out"]).eval()


plugins.register_source_kind(MlpKind())
'''

SPEC = """synth PluginNet
input x: [B, 4]
source m = mlp("tiny", inp=4, hidden=8, out=6)
h = m(x)
g = MyGate(h, hidden=3)
y = blend(g, h, alpha=0.25)
logits = Linear(y, out=2)
freeze m
output logits
"""

_count = itertools.count()


@pytest.fixture
def write_plugin(tmp_path, restore):
    """``write_plugin(source)``: a plugin module on sys.path; its (unique) name."""
    def write(source: str = PLUGIN) -> str:
        name = f"plug_{os.getpid()}_{next(_count)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        if str(tmp_path) not in sys.path:
            sys.path.insert(0, str(tmp_path))
        return name
    return write


@pytest.fixture
def loaded(write_plugin):
    name = write_plugin()
    plugins.load_plugin(name)
    return name


def _cli(*argv: str, cwd: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(list(argv))
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "net.synth"
    path.write_text(text)
    return path


# -- a plugin's layer, operation and source kind, like built-ins ---------------------------

def test_compiled_module_equals_the_plain_modules(loaded):
    torch.manual_seed(0)
    model = compile_spec(SPEC, seed=0)
    mod = sys.modules[loaded]
    mlp, gate = mod.make_mlp(4, 8, 6), mod.Gate(6, hidden=3)
    head = nn.Linear(6, 2)
    mlp.load_state_dict(model.get_submodule("m").state_dict())
    gate.load_state_dict(model.get_submodule("g").state_dict())
    head.load_state_dict(model.get_submodule("logits").state_dict())
    x = torch.randn(5, 4)
    h = mlp(x)
    want = head(mod.blend(gate(h), h, alpha=0.25))
    torch.testing.assert_close(model(x), want, rtol=0, atol=0)
    assert isinstance(model.get_submodule("g"), mod.Gate)


def test_check_shapes_counts_and_training_sets(loaded):
    graph = check_spec(SPEC)
    assert graph.nodes["g"]["build"] == {"features": 6, "hidden": 3}
    assert graph.nodes["y"]["shape"] == graph.nodes["h"]["shape"]
    model = compile_spec(SPEC, seed=0)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"m.0.weight", "m.0.bias", "m.2.weight", "m.2.bias"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.arange(8) % 2)
    loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n in before if n not in frozen}
    assert {"g.down.weight", "g.up.weight", "logits.weight"} <= changed


def test_summary_and_viz_show_the_plugin_layer(loaded, tmp_path):
    spec = _spec(tmp_path)
    code, out, err = _cli("--plugin", loaded, "summary", str(spec))
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("g "))
    assert "MyGate" in row and " 45 " in row
    assert "total: 153 parameters, 59 trainable, 94 frozen" in out
    code, _, err = _cli("--plugin", loaded, "viz", str(spec), "-o", str(tmp_path / "v.json"))
    assert code == 0, err
    view = (tmp_path / "v.json").read_text()
    assert "MyGate" in view and "blend" in view and "mlp:tiny" in view


def test_option_ranges_are_checked_s402(loaded):
    graph = check_spec(SPEC.replace("hidden=3", "hidden=0"), raise_errors=False)
    [e] = graph.graph["errors"]
    assert e.code == "S402"
    assert e.message == "MyGate option 'hidden' expects a whole number from 1 to 4096, found 0"
    graph = check_spec(SPEC.replace("hidden=3", 'hidden="big"'), raise_errors=False)
    assert [e.code for e in graph.graph["errors"]] == ["S402"]
    graph = check_spec(SPEC.replace("blend(g, h,", "blend(g, x,"), raise_errors=False)
    assert [e.code for e in graph.graph["errors"]] == ["S301"]


# -- artifacts record the plugins they need -----------------------------------------------

def test_artifact_round_trip_and_the_error_without_the_plugin(loaded, tmp_path, restore,
                                                               golden):
    model = compile_spec(SPEC, seed=0)
    path = save_compiled(model, tmp_path / "net.safetensors")
    assert json.loads(read_metadata(path)["artifact"])["plugins"] == [loaded]
    x = torch.randn(3, 4)
    torch.testing.assert_close(load_compiled(path)(x), model(x), rtol=0, atol=0)
    # as in a process that has not loaded it
    for what in ("layer", "op", "source"):
        for name, by in list(registry._PROVIDERS[what].items()):
            if by == loaded:
                del registry._PROVIDERS[what][name]
                registry._REGISTRIES[what].pop(name)
    registry.LOADED.pop(loaded)
    del sys.modules[loaded]
    with pytest.raises(SynthError) as e:
        load_compiled(path)
    assert e.value.code == "S211" and f"--plugin {loaded}" in e.value.hint
    rendered = render(e.value).replace(loaded, "PLUGIN")
    golden(GOLDEN / "artifact_needs_plugin.txt", rendered + "\n")
    plugins.load_plugin(loaded)
    torch.testing.assert_close(load_compiled(path)(x), model(x), rtol=0, atol=0)


def test_artifact_without_plugins_records_none(tmp_path):
    spec = "synth Plain\ninput x: [B, 4]\ny = Linear(x, out=2)\noutput y\n"
    path = save_compiled(compile_spec(spec, seed=0), tmp_path / "p.safetensors")
    assert "plugins" not in json.loads(read_metadata(path)["artifact"])


# -- without the plugin, and plugins that fail --------------------------------------------

def test_without_the_plugin_s101_says_a_plugin_may_provide_it(tmp_path, golden):
    spec = _spec(tmp_path)
    code, out, err = _cli("check", "net.synth", cwd=tmp_path)
    assert code == 1 and "Traceback" not in err
    golden(GOLDEN / "unknown_plugin_layer.txt", err)


def test_a_plugin_that_does_not_exist_is_s011(tmp_path, golden, restore):
    _spec(tmp_path)
    code, out, err = _cli("--plugin", "no_such_plugin_mod", "check", "net.synth", cwd=tmp_path)
    assert code == 1 and "Traceback" not in err
    golden(GOLDEN / "no_such_plugin.txt", err)


BROKEN = {
    "raises": ("from synthdsl import plugins\nplugins.register_op('twice', lambda x: 2 * x)\n"
               "1 / 0\n", "raised while loading: ZeroDivisionError: division by zero"),
    "imports_missing": ("import no_such_dependency_xyz\n",
                        "raised while loading: ModuleNotFoundError"),
    "duplicate_builtin": ("from synthdsl import plugins\nfrom torch import nn\n"
                          "plugins.register_layer('Linear', nn.Linear)\n",
                          "registers the layer 'Linear', but synthdsl (a built-in) already "
                          "registered a layer of that name"),
    "bad_options": ("from synthdsl import plugins\nfrom torch import nn\n"
                    "plugins.register_layer('Thing', nn.Identity, options={'a': 1})\n",
                    "an option of 'Thing' is str, not a synthdsl.plugins.Option"),
    "bad_default": ("from synthdsl import plugins\nfrom synthdsl.plugins import Option\n"
                    "from torch import nn\nplugins.register_layer('Thing', nn.Identity, "
                    "options=[Option('k', (int,), 'x')])\n",
                    "option 'k' of 'Thing' defaults to 'x', which is not a whole number"),
    "not_callable": ("from synthdsl import plugins\nplugins.register_layer('Thing', 3)\n",
                     "the build function of 'Thing' must be a function, found int"),
    "bad_name": ("from synthdsl import plugins\nfrom torch import nn\n"
                 "plugins.register_layer('thing', nn.Identity)\n",
                 "a layer's name must be a capitalised identifier"),
    "bad_kind": ("from synthdsl import plugins\nplugins.register_source_kind(object())\n",
                 "registers object as a source kind"),
    "nothing": ("x = 1\n", "registers nothing"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_s011_and_leaves_nothing_registered(case, write_plugin, tmp_path):
    source, expected = BROKEN[case]
    name = write_plugin(source)
    _spec(tmp_path)
    layers, ops = set(LAYERS), set(OPS)
    code, out, err = _cli("--plugin", name, "check", "net.synth", cwd=tmp_path)
    assert code == 1 and "Traceback" not in err, err
    assert err.startswith("error[S011]: ") and expected in err, err
    assert set(LAYERS) == layers and set(OPS) == ops
    assert not plugins.is_loaded(name)


def test_two_plugins_registering_one_name_are_both_named(write_plugin):
    first = write_plugin(PLUGIN)
    second = write_plugin("from synthdsl import plugins\nfrom torch import nn\n"
                          "plugins.register_layer('MyGate', nn.Identity)\n")
    plugins.load_plugin(first)
    with pytest.raises(SynthError) as e:
        plugins.load_plugin(second)
    assert e.value.code == "S011"
    assert f"plugin '{second}' registers the layer 'MyGate', but plugin '{first}' already " \
        "registered a layer of that name" in e.value.message


def test_a_build_that_returns_no_module_is_s011_at_the_layer(write_plugin):
    name = write_plugin("from synthdsl import plugins\n"
                        "plugins.register_layer('Bad', lambda: 42)\n")
    plugins.load_plugin(name)
    graph = check_spec("synth B\ninput x: [B, 4]\ny = Bad(x)\noutput y\n", raise_errors=False)
    [e] = graph.graph["errors"]
    assert e.code == "S011" and e.span.line == 3
    assert e.message == f"the layer 'Bad' of plugin '{name}' built int, not a torch nn.Module"


def test_entry_points_load_only_when_named(write_plugin, tmp_path):
    module = write_plugin(PLUGIN)
    dist = tmp_path / "gateplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gateplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[synthdsl.plugins]\ngates = {module}\n")
    assert plugins.installed()["gates"].value == module
    _spec(tmp_path)
    code, _, err = _cli("check", "net.synth", cwd=tmp_path)
    assert code == 1 and "installed plugins: gates" in err and "MyGate" not in LAYERS
    code, out, err = _cli("--plugin", "gates", "check", "net.synth", cwd=tmp_path)
    assert code == 0, err
    assert registry.provider("layer", "MyGate") == "gates"


def test_the_environment_names_plugins_in_a_subprocess(write_plugin, tmp_path):
    name = write_plugin(PLUGIN)
    spec = _spec(tmp_path)
    env = {**os.environ, registry.ENV: f" {name} ,", "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), str(Path(__file__).resolve().parents[1]),
         os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "net.safetensors"
    made = subprocess.run([sys.executable, "-m", "synthdsl.cli", "compile", str(spec), "-o",
                           str(out)], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert "153 parameters: 59 trainable, 94 frozen" in made.stdout
    assert json.loads(read_metadata(out)["artifact"])["plugins"] == [name]


FAULTY = '''
from torch import nn
from synthdsl import plugins
from synthdsl.plugins import Option


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("no forward today")


def bad_check(value, shapes, options):
    raise KeyError("oops")


plugins.register_layer("RangeBoom", nn.Identity, options=[Option("k", (int,), 1, check=bad_check)])
plugins.register_layer("InferBoom", lambda n: nn.Identity(), infer=lambda shape: shape[7])
plugins.register_layer("ForwardBoom", Boom)
plugins.register_op("ruleboom", lambda x: x, shape_rule=lambda shapes, options, names: 1 / 0)
'''


@pytest.mark.parametrize("call, code, words", [
    ("RangeBoom(x, k=2)", "S402", "the range check of plugin"),
    ("InferBoom(x)", "S301", "cannot infer its sizes from its input: IndexError"),
    ("ForwardBoom(x)", "S301", "no forward today"),
    ("ruleboom(x)", "S301", "its shape rule raised ZeroDivisionError"),
])
def test_plugin_code_that_raises_during_the_check_is_a_diagnostic(write_plugin, call, code,
                                                                   words):
    plugins.load_plugin(write_plugin(FAULTY))
    graph = check_spec(f"synth F\ninput x: [B, 4]\ny = {call}\noutput y\n",
                       raise_errors=False)
    [e] = graph.graph["errors"]
    assert e.code == code and e.span.line == 3
    assert words in e.message + " ".join(e.notes), (e.message, e.notes)
