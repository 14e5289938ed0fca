"""Adversarial inputs: specs, files and command lines that a careless or hostile user could
give `synth`, each with the diagnostic it must end in.

A :class:`Case` is the files of a fresh folder (text, bytes, or a function that makes the
thing: a FIFO, a symlink, a tampered artifact), the `synth` command run there, and what
must come of it: the code (or one of several codes) of the error, where the input has a
position the ``file:line:col`` it is reported at, and words of the message. Cases marked
``ok`` must succeed instead (what `synth check` accepts must compile and run).

Shared files (a checkpoint of timm's ``test_resnet``, a compiled artifact, ...) are made
once by the test, under ``{shared}``; ``{shared}`` in a case's files and arguments is
replaced by that folder. No case may change anything there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

Maker = Callable[[Path, Path], None]  # (the case's own path, the shared folder)
Content = Union[str, bytes, Maker]


@dataclass
class Case:
    name: str
    argv: list[str]
    files: dict[str, Content] = field(default_factory=dict)
    code: str | tuple[str, ...] = ()     # the error code, or codes one of which is fine
    at: tuple[str, ...] | None = None     # "spec.synth:3:5", ...: where the error may point
    words: str | tuple[str, ...] = ()     # words the diagnostic must contain
    ok: bool = False                      # the command must succeed
    writes: tuple[str, ...] = ()          # what the command may create (for ok cases)
    env: dict[str, str] = field(default_factory=dict)
    usage: bool = False                   # a usage error: exit 2 and a message, no code
    may_write: tuple[str, ...] = ()       # what an error case may leave (a resumable run)
    seconds: float = 60.0


CASES: list[Case] = []

IMG = "input x: [B, 3, 32, 32]"
VEC = "input x: [B, 8]"
RES = 'source s = timm("test_resnet", num_classes=5)'


def spec(name: str, body: str, code, at: tuple[int, int] | str | None = None, words=(),
         command: str = "check", **kw) -> Case:
    """A case of one spec, `spec.synth`, whose text is ``synth A`` then `body`. `at` is a
    (line, column), or text of the spec whose first place (or, for ``name=value``, that of its
    value) the error must point at."""
    text = "synth A\n" + body.strip("\n") + "\n"
    argv = [command, "spec.synth"] + (["-o", "out.pt"] if command == "compile" else [])
    case = Case(name, argv, {"spec.synth": text}, code=code, at=_where(text, at), words=words,
                **kw)
    CASES.append(case)
    return case


def _where(text: str, at) -> tuple[str, ...] | None:
    if at is None:
        return None
    if isinstance(at, tuple) and isinstance(at[0], int):
        line, col = at
        return (f"spec.synth:{line}:{col}" if col else f"spec.synth:{line}:",)
    places = [text.index(at)]
    if "=" in at:
        places.append(places[0] + at.index("=") + 1)
    out = []
    for pos in places:
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        out.append(f"spec.synth:{line}:{col}")
    return tuple(out)


def accepted(name: str, body: str, writes=("out.pt",)) -> Case:
    """A spec the check accepts: it must compile and run its forward pass."""
    text = "synth A\n" + body.strip("\n") + "\n"
    case = Case(name, ["compile", "spec.synth", "-o", "out.pt"], {"spec.synth": text},
                ok=True, writes=writes)
    CASES.append(case)
    return case


# ---- the language: characters, tokens, numbers, nesting -----------------------------

spec("bad_char", f"{VEC}\ny = Linear(x, out=5) $\noutput y", "S001", (3, 22))
spec("unterminated_string", f'{IMG}\nsource s = timm("test_resnet\noutput x', "S001", (3, 17))
spec("bad_escape", f'{IMG}\nsource s = timm("test\\qresnet")\noutput x', "S001", (3, 17))
spec("lone_equals", f"{VEC}\ny = = Linear(x)\noutput y", "S002", (3, 5))
spec("eof_mid_call", f"{VEC}\ny = Linear(x, out=5", "S003")
spec("eof_mid_shape", "input x: [B, 8", "S003")
spec("positional_after_kw", f"{VEC}\ny = Linear(out=5, x)\noutput y", "S004", (3, 19))
spec("option_twice", f"{VEC}\ny = Linear(x, out=5, out=6)\noutput y", "S005", (3, 22))
spec("keyword_as_name", f"{VEC}\nsource = Linear(x, out=5)\noutput x", "S006", (3, 1))
spec("train_as_name", f"{VEC}\ntrain = Linear(x, out=5)\noutput train", "S006", (3, 1))
spec("output_as_name", f"{VEC}\noutput = Linear(x, out=5)\noutput output", "S006", (3, 1))
spec("input_keyword_name", "input input: [B, 8]\noutput input", "S006", (2, 7))
spec("number_huge", f"{VEC}\ny = Linear(x, out=1e400)\noutput y", "S007", (3, 19))
spec("out_beyond_int64", f"{VEC}\ny = Linear(x, out=99999999999999999999999)\noutput y",
     ("S007", "S402"), (3, 15))
spec("dim_beyond_int64", "input x: [B, 9223372036854775808]\ny = Linear(x, out=5)\noutput y",
     ("S007", "S107"), (2, 14))
spec("deep_parens", f"{VEC}\ny = " + "ReLU(" * 400 + "x" + ")" * 400 + "\noutput y",
     "S008")
spec("deep_pipes", f"{VEC}\ny = x" + " |> ReLU" * 3000 + "\noutput y", ("S008",))
spec("deep_lists", f"{VEC}\ny = Linear(x, out=" + "[" * 600 + "]" * 600 + ")\noutput y",
     "S008")
spec("lone_surrogate_escape", f'{IMG}\nsource s = timm("\\ud800")\noutput x', ("S001", "S201"))
spec("nul_byte", f"{VEC}\ny = Linear(x,\x00 out=5)\noutput y", "S001", (3, 14))
spec("tab_and_cr", f"{VEC}\r\ny =\tLinear(x,\tout=0)\r\noutput y", "S402", "out=0")
spec("misspelt_source", f'{IMG}\nsourse s = timm("test_resnet")\noutput x', "S002", (3, 1),
     "'source'")
spec("misspelt_input", "imput x: [B, 8]\noutput x", "S002", (2, 1), "'input'")
spec("misspelt_freeze", f"{VEC}\ny = Linear(x, out=5)\nfreez y\noutput y", "S002", (4, 1),
     "'freeze'")
spec("empty_spec", "", "S106")
CASES.append(Case("headerless", ["check", "spec.synth"], {"spec.synth": "input x: [B, 8]\n"},
                  code=("S001", "S002"), at=("spec.synth:1:1",)))
CASES.append(Case("bom_then_error", ["check", "spec.synth"],
                  {"spec.synth": "\ufeffsynth A\ninput x: [B, 8]\ny = Dense(x, out=5)\noutput y\n"},
                  code="S101", at=("spec.synth:3:5",), words="'Linear'"))
CASES.append(Case("binary_spec", ["check", "spec.synth"],
                  {"spec.synth": bytes(range(256)) * 4}, code="S000"))
CASES.append(Case("latin1_spec", ["check", "spec.synth"],
                  {"spec.synth": "synth A\n# caf\xe9\n".encode("latin-1")}, code="S000"))


# ---- names and the graph --------------------------------------------------------------

spec("unknown_name", f"{VEC}\ny = Linear(z, out=5)\noutput y", "S101", (3, 12))
spec("unknown_layer_dense", f"{VEC}\ny = Dense(x, out=5)\noutput y", "S101", (3, 5),
     "'Linear'")
spec("unknown_layer_conv2D", f"{IMG}\ny = Conv2D(x, out=5)\noutput y", "S101", (3, 5),
     "'Conv2d'")
spec("unknown_source_ctor", f'{IMG}\nsource s = tim("test_resnet")\ny = s(x)\noutput y',
     ("S201", "S101"), (3, 12))
spec("unknown_arch", f'{IMG}\nsource s = timm("resnet_nope")\ny = s(x)\noutput y', "S201",
     (3, 17))
spec("defined_twice", f"{VEC}\ny = ReLU(x)\ny = ReLU(x)\noutput y", "S102", (4, 1))
for i, reserved in enumerate(["_modules", "_parameters", "graph", "code", "forward",
                              "training", "state_dict", "__class__"]):
    spec(f"reserved_{reserved.strip('_')}", f"{VEC}\n{reserved} = ReLU(x)\noutput {reserved}",
         ("S103", "S001", "S002"), (3, 1))
spec("self_apply", f"{VEC}\nh = h(x)\noutput h", "S104")
spec("mutual_apply", f"{VEC}\na = b(x)\nb = a(x)\noutput a", "S104")
spec("apply_alias_cycle", f"{VEC}\nh = g(x)\ng = h\noutput h", ("S104", "S101"))
spec("two_cycle", f"{VEC}\na = add(x, b)\nb = ReLU(a)\noutput b", "S104")
spec("dense_cycles", f"{VEC}\n" + "\n".join(
    f"v{i} = add(x, " + ", ".join(f"v{j}" for j in range(14) if j != i) + ")"
    for i in range(14)) + "\noutput v0", "S104", seconds=60)
spec("unknown_output", f"{VEC}\ny = ReLU(x)\noutput z", "S105", (4, 8))
spec("no_output", f"{VEC}\ny = ReLU(x)", "S106")
spec("zero_dim", "input x: [B, 0]\ny = ReLU(x)\noutput y", "S107", (2, 14))
spec("unpack_wrong", f'{IMG}\n{RES}\na, b = s(x, stages=[1, 2, 3])\noutput a', "S108", (4, 8))
spec("implicit_sharing", f'{IMG}\n{RES}\na = s(x)\nb = s(x)\noutput a, b', "S109", (5, 5))
spec("many_unknown_names", f"{VEC}\n" + "\n".join(f"y{i} = Linear(z{i}, out=2)"
                                                  for i in range(3000)) + "\noutput y0",
     "S101", (3, 13), seconds=60)
spec("too_many_statements", f"{VEC}\nv0 = ReLU(x)\n" + "\n".join(
    f"v{i} = ReLU(v{i - 1})" for i in range(1, 20_010)) + "\noutput v0", "S008")
CASES.append(Case("import_cycle", ["check", "a.synth"], {
    "a.synth": 'synth A\ninput x: [B, 8]\nsource b = spec("b.synth")\ny = b(x)\noutput y\n',
    "b.synth": 'synth B\ninput x: [B, 8]\nsource a = spec("a.synth")\ny = a(x)\noutput y\n'},
    code="S110"))
CASES.append(Case("import_missing", ["check", "a.synth"], {
    "a.synth": 'synth A\ninput x: [B, 8]\nsource b = spec("nope.synth")\ny = b(x)\noutput y\n'},
    code=("S203", "S000", "S201"), at=("a.synth:3:",)))
CASES.append(Case("import_passwd", ["check", "a.synth"], {
    "a.synth": 'synth A\ninput x: [B, 8]\nsource b = spec("/etc/passwd")\ny = b(x)\noutput y\n'},
    code=("S001", "S002", "S000", "S201", "S203"), words=()))
CASES.append(Case("import_self", ["check", "a.synth"], {
    "a.synth": 'synth A\ninput x: [B, 8]\nsource b = spec("a.synth")\ny = b(x)\noutput y\n'},
    code="S110"))


# ---- options of layers and operations ---------------------------------------------------

OPTION_CASES = [  # the bad option is written last
    (IMG, "Conv2d(x, out=4, kernel=0)"), (IMG, "Conv2d(x, out=4, padding=-5)"),
    (IMG, "Conv2d(x, out=4, dilation=0)"), (IMG, "Conv2d(x, out=4, kernel=[3, 3, 3])"),
    (IMG, "Conv2d(x, out=4, stride=0)"), (IMG, "Conv2d(x, out=4, groups=5)"),
    (IMG, "Softmax(x, dim=99)"), (VEC, "Linear(x, out=0)"),
    (VEC, "LayerNorm(x, eps=-1)"), (VEC, "BatchNorm1d(x, momentum=7)"),
    (VEC, "Dropout(x, p=1.5)"), (IMG, "resize(x, size=0)"),
    (IMG, "resize(x, scale=-2)"), (VEC, "reshape(x, shape=[0, 8])"),
    (IMG, "MaxPool2d(x, kernel=2, padding=2)"), (VEC, "Linear(x, out=\"five\")"),
    (VEC, "Linear(x, out=5.5)"), (VEC, "Linear(x, out=true)"),
    (VEC, "Linear(x, out=5, bais=false)"), (VEC, "Linear(x, out=[5])"),
]
for i, (decl, call) in enumerate(OPTION_CASES):
    last = call[[m.start() for m in re.finditer(r"\w+=", call)][-1]:-1]
    spec(f"option_{i:02d}_{call.split('(')[0]}", f"{decl}\ny = {call}\noutput y", "S402",
         last, words="option")
spec("inherit_rows_huge", f"{IMG}\n{RES}\nf = s.forward_features(x)\n"
     "h = GlobalAvgPool(f) |> Linear(out=3)\ninherit h.1 from s.fc with rows=[100000]\noutput h",
     ("S207", "S402"), (6, 1))
spec("inherit_bad_option", f"{VEC}\nh = Linear(x, out=5)\ninherit h from x with rowz=3\noutput h",
     ("S402", "S208", "S101"))
spec("rename_bad_regex", f"{VEC}\nh = Linear(x, out=5)\n"
     'inherit h from checkpoint("lin.safetensors") with rename=["(", "x"]\noutput h',
     "S402", 'rename=["(", "x"]', command="compile")
spec("rename_bad_group", f"{VEC}\nh = Linear(x, out=5)\n"
     'inherit h from checkpoint("lin.safetensors") with rename=["(.*)", "\\\\7"]'
     "\noutput h", "S402", command="compile")
for c in CASES[-2:]:
    c.files["lin.safetensors"] = lambda path, shared: path.write_bytes(
        (shared / "lin.safetensors").read_bytes())
accepted("rename_backtracking", f"{VEC}\nh = Linear(x, out=5)\n"
         'inherit h from checkpoint("lin.safetensors") with '
         'rename=["([a-z0-9_.]|[a-z0-9_.])*Z", "x"]\noutput h')
CASES[-1].files["lin.safetensors"] = CASES[-2].files["lin.safetensors"]
spec("freeze_nothing", f"{VEC}\ny = Linear(x, out=5)\nfreeze nothing_here\noutput y", "S401",
     (4, 8))
spec("train_unknown", f"{VEC}\ny = Linear(x, out=5)\ntrain y.nope with lr_mult=0.1\noutput y",
     "S401", (4, 7))
spec("lr_mult_negative", f"{VEC}\ny = Linear(x, out=5)\ntrain y with lr_mult=-1\noutput y",
     "S402")
spec("policy_unknown", f'{VEC}\ny = Linear(x, out=5)\npolicy norm = "sometimes"\noutput y',
     "S402", (4, 15))
spec("recipe_epochs_zero", f"{VEC}\ny = Linear(x, out=5)\nrecipe epochs=0\noutput y", "S402")
spec("recipe_unknown", f"{VEC}\ny = Linear(x, out=5)\nrecipe epocs=3\noutput y", "S402",
     words="epochs")
spec("loss_unknown", f"{VEC}\ny = Linear(x, out=5)\nloss hinge(y)\noutput y", ("S402", "S101"))
spec("lora_rank_zero", f"{IMG}\n{RES}\ny = s(x)\nadapt s.fc with lora(rank=0, alpha=16)"
     "\noutput y", "S402")
spec("lora_unknown_adapter", f"{IMG}\n{RES}\ny = s(x)\nadapt s.fc with lorra(rank=4)\noutput y",
     ("S402", "S101"))


# ---- sources and parts -----------------------------------------------------------------

spec("submodule_unknown", f"{IMG}\n{RES}\ny = s.layer9(x)\noutput y", "S202", (4, 5))
spec("method_misspelt", f"{IMG}\n{RES}\ny = s.forward_feature(x)\noutput y", "S202", (4, 5),
     "forward_features")
spec("method_kw_misspelt", f"{IMG}\n{RES}\nf = s.forward_features(x)\n"
     "y = s.forward_head(f, pre_logit=true)\noutput y", "S402", (5, 23), "pre_logits")
spec("slice_out_of_range", f"{IMG}\n{RES}\nf = s.layer1[0:9](s.maxpool(s.act1(s.bn1(s.conv1(x)))))"
     "\noutput f", ("S202", "S402", "S109"))
spec("item_out_of_range", f"{IMG}\n{RES}\nf = s.layer1[7](x)\noutput f", ("S202", "S402"))
spec("stage_out_of_range", f"{IMG}\n{RES}\nf = s(x, stages=[9])\noutput f", ("S402", "S202"))
spec("at_unknown_node", f'{IMG}\n{RES}\nf = s(x, at="layer9.0")\noutput f', ("S202", "S303",
                                                                              "S402"))
spec("timm_kw_typo", f'{IMG}\nsource s = timm("test_resnet", num_clases=5)\ny = s(x)\noutput y',
     "S402", "num_clases=5", "'num_classes'")
spec("timm_weights_typo", f'{IMG}\nsource s = timm("test_resnet", weigths="w.safetensors")\n'
     "y = s(x)\noutput y", "S402", 'weigths="w.safetensors"', "'weights'")
spec("timm_kw_unknown", f'{IMG}\nsource s = timm("test_resnet", zzz=5)\ny = s(x)\noutput y',
     ("S402", "S204"), "zzz=5")
spec("timm_checkpoint_path", f'{IMG}\nsource s = timm("test_resnet", '
     'checkpoint_path="{shared}/w.safetensors")\ny = s(x)\noutput y', "S402", "checkpoint_path=")
spec("timm_cfg_overlay", f'{IMG}\nsource s = timm("test_resnet", pretrained_cfg_overlay='
     '["https://x/y.pth"])\ny = s(x)\noutput y', "S402")
spec("timm_cache_dir", f'{IMG}\nsource s = timm("test_resnet", cache_dir="/tmp")\ny = s(x)'
     "\noutput y", "S402")
spec("weights_missing", f'{IMG}\nsource s = timm("test_resnet", weights="nope.safetensors")'
     "\ny = s(x)\noutput y", "S203", 'weights="nope.safetensors"')
spec("channels_mismatch", f"input x: [B, 1, 32, 32]\n{RES}\ny = s(x)\noutput y", "S301",
     (4, 5))
spec("concat_mismatch", f"{VEC}\ninput z: [B, 4, 4]\ny = concat(x, z)\noutput y", "S301")
spec("add_mismatch", f"{VEC}\ny = add(x, Linear(x, out=3))\noutput y", "S301")
spec("linear_wrong_in", f"{IMG}\ny = Flatten(x) |> Linear(out=5)\nz = Linear(y, out=3)\n"
     "inherit z from y\noutput z", ("S208", "S207", "S101"), (5, 16))
spec("conv_on_vector", f"{VEC}\ny = Conv2d(x, out=4)\noutput y", "S301", (3, 5))
spec("pool_too_small", "input x: [B, 3, 2, 2]\ny = MaxPool2d(x, kernel=5)\noutput y",
     ("S301", "S402"))
spec("symbolic_flatten_linear", "input x: [B, 3, H, W]\n"
     "y = Conv2d(x, out=4, kernel=3) |> Flatten |> Linear(out=5)\noutput y",
     ("S304", "S301"), words="H")
accepted("probe_collision", "input x: [B, 9973]\ny = Linear(x, out=5)\noutput y")
accepted("nine_symbols", "input x: [A, C, D, E, F, G, H, I, J]\ny = ReLU(x)\noutput y")
accepted("symbolic_conv", "input x: [B, 3, H, W]\ny = Conv2d(x, out=4, kernel=3)\noutput y")
accepted("stages_then_layer4", f"{IMG}\nsource s = timm(\"test_resnet\", num_classes=0)\n"
         "f = s(x, stages=[3])\ng = s.layer4(f)\ny = GlobalAvgPool(g) |> Linear(out=5)\noutput y")
accepted("at_then_forward_head", f'{IMG}\n{RES}\nf = s(x, at="layer4")\ny = s.forward_head(f)'
         "\noutput y")
accepted("linear_tokens", "input x: [B, 5, 8]\ny = Linear(x, out=3)\noutput y")
accepted("whole_resnet", f"{IMG}\n{RES}\ny = s(x)\noutput y")


# ---- sizes no machine can allocate ------------------------------------------------------

BIG = [  # (name, spec body, the line the error is on)
    ("linear_out_1e12", f"{VEC}\ny = Linear(x, out=1000000000000)\noutput y", 3),
    ("conv_padding_1e5", f"{IMG}\ny = Conv2d(x, out=4, padding=100000)\noutput y", 3),
    ("resize_1e5", f"{IMG}\ny = resize(x, size=[100000, 100000])\noutput y", 3),
    ("input_1e5", "input x: [B, 3, 100000, 100000]\ny = Conv2d(x, out=4, kernel=3)\noutput y",
     2),
    ("lora_rank_1e9", f"{IMG}\n{RES}\ny = s(x)\nadapt s.fc with lora(rank=1000000000, alpha=16)"
     "\noutput y", 5),
    ("num_classes_1e11", f'{IMG}\nsource s = timm("test_resnet", num_classes=100000000000)\n'
     "y = s(x)\noutput y", 3),
    ("linear_chain_huge", f"{VEC}\ny = Linear(x, out=200000) |> Linear(out=200000)\noutput y",
     3),
    ("concat_self_many", f"{IMG}\ny = concat(" + ", ".join(["x"] * 4000) + ", dim=1) |> "
     "Conv2d(out=64000, kernel=7)\noutput y", 3),
]
for name, body, line in BIG:
    for command in ("check", "compile"):
        spec(f"{name}_{command}", body, ("S305", "S402", "S007"), (line, 0), command=command)


# ---- files ------------------------------------------------------------------------------

def fifo(path: Path, shared: Path) -> None:
    os.mkfifo(path)


def directory(path: Path, shared: Path) -> None:
    path.mkdir()


def link_to(target: str) -> Maker:
    def make(path: Path, shared: Path) -> None:
        path.symlink_to(target.replace("{shared}", str(shared)))
    return make


def copy_of(name: str, edit: Callable[[bytes], bytes] = lambda b: b) -> Maker:
    def make(path: Path, shared: Path) -> None:
        path.write_bytes(edit((shared / name).read_bytes()))
    return make


WSPEC = (f'synth A\n{IMG}\nsource s = timm("test_resnet", num_classes=5, weights="w.safetensors")'
         "\ny = s(x)\noutput y\n")
CASES += [
    Case("spec_fifo", ["check", "spec.synth"], {"spec.synth": fifo}, code="S000"),
    Case("spec_dev_zero", ["check", "spec.synth"], {"spec.synth": link_to("/dev/zero")},
         code="S000"),
    Case("spec_directory", ["check", "spec.synth"], {"spec.synth": directory}, code="S000"),
    Case("spec_missing", ["check", "nope.synth"], {}, code="S000"),
    Case("weights_fifo", ["check", "spec.synth"], {"spec.synth": WSPEC, "w.safetensors": fifo},
         code="S203", at=("spec.synth:3:",)),
    Case("weights_dir", ["check", "spec.synth"], {"spec.synth": WSPEC,
                                                  "w.safetensors": directory}, code="S203"),
    Case("weights_dev_zero", ["check", "spec.synth"],
         {"spec.synth": WSPEC, "w.safetensors": link_to("/dev/zero")}, code="S203"),
    Case("weights_empty", ["check", "spec.synth"], {"spec.synth": WSPEC, "w.safetensors": b""},
         code="S203"),
    Case("weights_garbage", ["check", "spec.synth"],
         {"spec.synth": WSPEC, "w.safetensors": os.urandom(4096)}, code="S203"),
    Case("weights_header_huge", ["check", "spec.synth"],
         {"spec.synth": WSPEC, "w.safetensors": (2**62).to_bytes(8, "little") + b"{}"},
         code="S203"),
    Case("weights_header_bad_json", ["check", "spec.synth"],
         {"spec.synth": WSPEC, "w.safetensors": (10).to_bytes(8, "little") + b"{not json!"},
         code="S203"),
    Case("weights_truncated", ["check", "spec.synth"],
         {"spec.synth": WSPEC, "w.safetensors": copy_of("w.safetensors", lambda b: b[:-100])},
         code="S203"),
    Case("weights_wrong_arch", ["check", "spec.synth"],
         {"spec.synth": WSPEC, "w.safetensors": copy_of("lin.safetensors")}, code="S205"),
    Case("weights_int64", ["check", "spec.synth"],
         {"spec.synth": WSPEC, "w.safetensors": copy_of("int64.safetensors")}, code="S205",
         words="int64"),
    Case("lock_fifo", ["compile", "spec.synth", "-o", "out.pt"],
         {"spec.synth": WSPEC, "w.safetensors": copy_of("w.safetensors"), "spec.synth.lock": fifo},
         code="S206"),
    Case("lock_directory", ["compile", "spec.synth", "-o", "out.pt"],
         {"spec.synth": WSPEC, "w.safetensors": copy_of("w.safetensors"),
          "spec.synth.lock": directory}, code="S206"),
    Case("lock_garbage", ["compile", "spec.synth", "-o", "out.pt"],
         {"spec.synth": WSPEC, "w.safetensors": copy_of("w.safetensors"),
          "spec.synth.lock": "{not json"}, code="S206"),
    Case("lock_stale", ["compile", "spec.synth", "-o", "out.pt"],
         {"spec.synth": WSPEC, "w.safetensors": copy_of("w.safetensors"),
          "spec.synth.lock": copy_of("stale.lock")}, code="S206"),
    Case("lock_stale_train", ["train", "spec.synth", "--data", "{shared}/data5.npz", "-o", "run",
                              "--epochs", "1", "--no-progress"],
         {"spec.synth": WSPEC, "w.safetensors": copy_of("w.safetensors"),
          "spec.synth.lock": copy_of("stale.lock")}, code="S206"),
]

PT_SPEC = WSPEC.replace("w.safetensors", "w.pt")
CASES += [
    Case("pt_compressed", ["compile", "spec.synth", "-o", "out.pt"],
         {"spec.synth": PT_SPEC, "w.pt": copy_of("compressed.pt")}, ok=True,
         writes=("out.pt",)),
    Case("pt_record_short", ["check", "spec.synth"],
         {"spec.synth": PT_SPEC, "w.pt": copy_of("short.pt")}, code="S203"),
    Case("pt_pickle_payload", ["check", "spec.synth"],
         {"spec.synth": PT_SPEC, "w.pt": copy_of("evil.pt")}, code=("S203", "S205"),
         words=()),
    Case("pt_pickle_payload_compile", ["compile", "spec.synth", "-o", "out.pt"],
         {"spec.synth": PT_SPEC, "w.pt": copy_of("evil.pt")}, code=("S203", "S205")),
    Case("pt_not_zip", ["check", "spec.synth"],
         {"spec.synth": PT_SPEC, "w.pt": b"\x80\x02}q\x00."}, code="S203"),
]

# -o onto what it must not destroy
CASES += [
    Case("compile_onto_input", ["compile", "spec.synth", "-o", "spec.synth"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n"}, code="S009"),
    Case("viz_onto_input", ["viz", "spec.synth", "-o", "spec.synth"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n"}, code="S009"),
    Case("compile_onto_weights", ["compile", "spec.synth", "-o", "w.safetensors"],
         {"spec.synth": WSPEC, "w.safetensors": copy_of("w.safetensors")}, code="S009"),
    Case("compile_onto_dir", ["compile", "spec.synth", "-o", "d"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n", "d": directory},
         code="S009"),
    Case("compile_under_file", ["compile", "spec.synth", "-o", "f/out.pt"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n", "f": "a file"},
         code="S009"),
    Case("compile_readonly_dir", ["compile", "spec.synth", "-o", "/proc/out.pt"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n"},
         code=("S009", "S000", "T001", "E001")),
    Case("compile_onto_fifo", ["compile", "spec.synth", "-o", "out.pt"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n", "out.pt": fifo},
         code="S009"),
    Case("compile_onto_device_link", ["compile", "spec.synth", "-o", "out.pt"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n",
          "out.pt": link_to("/dev/null")}, code="S009"),
    Case("train_onto_file", ["train", "spec.synth", "--data", "{shared}/data.npz", "-o",
                             "taken", "--epochs", "1", "--no-progress"],
         {"spec.synth": f"synth A\ninput x: [B, 1, 8, 8]\ny = Flatten(x) |> Linear(out=3)\n"
                        "output y\n", "taken": "a file"},
         code=("S009", "T001")),
]


# ---- compiled artifacts ------------------------------------------------------------------

def tampered(edit: Callable[[dict], None]) -> Maker:
    """The shared artifact with its safetensors header's metadata edited."""
    import json

    def make(path: Path, shared: Path) -> None:
        raw = (shared / "art.safetensors").read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        edit(header)
        text = json.dumps(header).encode()
        text += b" " * ((8 - len(text) % 8) % 8)
        path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    return make


def _meta(key_words: str, value: Callable[[str], str]) -> Callable[[dict], None]:
    def edit(header: dict) -> None:
        meta = header.setdefault("__metadata__", {})
        for k in list(meta):
            if key_words in k:
                meta[k] = value(meta[k])
    return edit


def _drop(key_words: str) -> Callable[[dict], None]:
    def edit(header: dict) -> None:
        meta = header.setdefault("__metadata__", {})
        for k in [k for k in meta if key_words in k]:
            del meta[k]
    return edit


def _shape(header: dict) -> None:
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [d + 1 for d in header[name]["shape"]]


def _claim_huge(text: str) -> str:
    return text.replace("out=3", "out=100000000000")


def _blob(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    """An edit of the artifact's own record (the JSON under the metadata key "artifact")."""
    import json

    def apply(header: dict) -> None:
        meta = header.setdefault("__metadata__", {})
        record = json.loads(meta["artifact"])
        edit(record)
        meta["artifact"] = json.dumps(record)
    return apply


def _spec_text(change: Callable[[str], str]) -> Callable[[dict], None]:
    def edit(record: dict) -> None:
        for s in record.get("specs", []):
            s["text"] = change(s["text"])
    return edit


def _each_spec(key: str, value=None, drop: bool = False) -> Callable[[dict], None]:
    def edit(record: dict) -> None:
        for s in record.get("specs", []):
            if drop:
                s.pop(key, None)
            else:
                s[key] = value
    return edit


ART_CASES = [
    ("art_spec_edited", _blob(_spec_text(lambda v: v.replace("out=3", "out=4")))),
    ("art_spec_claims_huge", _blob(_spec_text(_claim_huge))),
    ("art_spec_named_passwd", _blob(_each_spec("name", "/etc/passwd"))),
    ("art_spec_imports_passwd", _blob(_each_spec("imports", {"/etc/passwd": "/etc/passwd"}))),
    ("art_spec_text_not_spec", _blob(_spec_text(lambda v: "root:x:0:0:root:/root:/bin/bash"))),
    ("art_metadata_bad_json", _meta("artifact", lambda v: "{" + v[: len(v) // 2])),
    ("art_no_metadata", lambda h: h.pop("__metadata__", None)),
    ("art_drop_imports", _blob(_each_spec("imports", drop=True))),
    ("art_drop_specs", _blob(lambda r: r.__setitem__("specs", []))),
    ("art_drop_record", _drop("artifact")),
    ("art_drop_digest", _drop("digest")),
    ("art_wrong_format", _meta("format", lambda v: "synthdsl-compiled/99")),
    ("art_provenance_edited", _blob(lambda r: r.__setitem__("provenance", {"x": 1}))),
    ("art_shape_edited", _shape),
    ("art_metadata_empty", lambda h: h.__setitem__("__metadata__", {})),
]
for name, edit in ART_CASES:
    CASES.append(Case(name, ["eval", "a.safetensors", "--data", "{shared}/data.npz"],
                      {"a.safetensors": tampered(edit)}, code=("S209", "S210")))
CASES += [
    Case("art_truncated", ["eval", "a.safetensors", "--data", "{shared}/data.npz"],
         {"a.safetensors": copy_of("art.safetensors", lambda b: b[: len(b) // 2])},
         code=("S209", "S210", "S203")),
    Case("art_random", ["eval", "a.safetensors", "--data", "{shared}/data.npz"],
         {"a.safetensors": os.urandom(10_000)}, code=("S209", "S203", "E001")),
    Case("art_fifo", ["eval", "a.safetensors", "--data", "{shared}/data.npz"],
         {"a.safetensors": fifo}, code=("S209", "S203", "E001")),
    Case("art_plain_weights", ["eval", "a.safetensors", "--data", "{shared}/data.npz"],
         {"a.safetensors": copy_of("lin.safetensors")}, code=("S209", "E001")),
    Case("eval_missing", ["eval", "nope.safetensors", "--data", "{shared}/data.npz"], {},
         code=("S209", "S203", "E001", "S000")),
    Case("eval_weights_fifo", ["eval", "spec.synth", "--weights", "w.pt", "--data",
                               "{shared}/data.npz"],
         {"spec.synth": "synth A\ninput x: [B, 1, 8, 8]\ny = Flatten(x) |> Linear(out=3)\n"
                        "output y\n", "w.pt": fifo}, code=("S203", "E001", "S209")),
    Case("eval_weights_evil", ["eval", "spec.synth", "--weights", "w.pt", "--data",
                               "{shared}/data.npz"],
         {"spec.synth": "synth A\ninput x: [B, 1, 8, 8]\ny = Flatten(x) |> Linear(out=3)\n"
                        "output y\n", "w.pt": copy_of("evil.pt")},
         code=("S203", "E001", "S209", "S205")),
]


# ---- training data and flags -------------------------------------------------------------

TSPEC = "synth A\ninput x: [B, 1, 8, 8]\ny = Flatten(x) |> Linear(out=3)\noutput y\n"


def train(name: str, data: Content | None, code, *flags: str, words=(), env=None) -> None:
    files: dict[str, Content] = {"spec.synth": TSPEC}
    where = "{shared}/data.npz"
    if data is not None:
        files["d.npz"] = data
        where = "d.npz"
    CASES.append(Case(name, ["train", "spec.synth", "--data", where, "-o", "run", "--epochs",
                             "1", "--no-progress", *flags], files, code=code, words=words,
                      env=env or {}))


def npz(**arrays) -> Maker:
    def make(path: Path, shared: Path) -> None:
        import numpy as np

        np.savez(path, **{k: v() if callable(v) else v for k, v in arrays.items()})
    return make


def _images(fill=None, dtype="float32", n=12):
    import numpy as np

    x = np.random.default_rng(0).random((n, 1, 8, 8)).astype(dtype)
    if fill is not None:
        x[3, 0, 2, 2] = fill
    return x


def _labels(n=12):
    import numpy as np

    return np.arange(n) % 3


train("data_nan", npz(x=lambda: _images(float("nan")), y=_labels), "D", words="3")
train("data_inf", npz(x=lambda: _images(float("inf")), y=_labels), "D", words="3")
train("data_huge_values", npz(x=lambda: _images(1e30), y=_labels), "D")
train("data_length_mismatch", npz(x=lambda: _images(n=12), y=lambda: _labels(10)), "D")
train("data_complex", npz(x=lambda: _images(dtype="complex64"), y=_labels), "D")
train("data_strings", npz(x=lambda: __import__("numpy").array([["a"] * 64] * 12), y=_labels),
      "D")
train("data_float_labels", npz(x=_images, y=lambda: _labels().astype("float32") + 0.5), "D")
train("data_negative_labels", npz(x=_images, y=lambda: _labels() - 1), "D")
train("data_no_arrays", npz(z=_images), "D")
train("data_not_zip", b"PK\x03\x04garbage", "D")
train("data_header_lies", copy_of("lie.npz"), "D", words="claims shape")
train("data_zip_bomb", copy_of("bomb.npz"), "D", words="unpacks to",
      env={"SYNTHDSL_MAX_DATA_BYTES": str(2**20)})
train("data_fifo", fifo, "D")
CASES.append(Case("data_missing_folder", ["train", "spec.synth", "--data", "no_such_folder",
                                         "-o", "run", "--epochs", "1", "--no-progress"],
                  {"spec.synth": TSPEC}, code="D"))
for flag, value in [("--batch-size", "0"), ("--batch-size", "-5"), ("--epochs", "-1"),
                    ("--lr", "-0.1"), ("--lr", "nan"), ("--batch-size", "10000000000"),
                    ("--label-smoothing", "2"), ("--augment", "-3"), ("--keep", "-1")]:
    train(f"flag_{flag.strip('-').replace('-', '_')}_{value.replace('-', 'neg')}", None,
          ("S010", "S305"), flag, value)
CASES.append(Case("train_resume_evil", ["train", "spec.synth", "--data", "{shared}/data.npz", "-o",
                                        "run", "--epochs", "1", "--no-progress", "--resume"],
                  {"spec.synth": TSPEC, "run/checkpoints/last.pt": copy_of("evil.pt")},
                  code=("T001", "S203"), words=()))
CASES.append(Case("train_nan_loss", ["train", "spec.synth", "--data", "{shared}/data.npz", "-o",
                                     "run", "--epochs", "2", "--no-progress", "--lr", "1e38",
                                     "--optimizer", "sgd"],
                  {"spec.synth": TSPEC}, code="T002", words=("nan", "inf"),
                  may_write=("run",)))  # the run keeps its checkpoint of epoch 1: resumable
CASES.append(Case("train_nan_loss_first_epoch", ["train", "spec.synth", "--data",
                                                 "{shared}/data.npz", "-o", "run", "--epochs",
                                                 "1", "--no-progress", "--lr", "1e38",
                                                 "--optimizer", "sgd", "--batch-size", "8"],
                  {"spec.synth": TSPEC}, code="T002", words=("nan", "inf")))

CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(40)


def png_bomb(path: Path, shared: Path) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    row = zlib.compress(b"\x00" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", row)
                     + chunk(b"IEND", b""))


for name, content in [("png_corrupt", CORRUPT_PNG), ("png_bomb", png_bomb),
                      ("png_empty", b""), ("png_fifo", fifo)]:
    CASES.append(Case(name, ["train", "spec.synth", "--data", "imgs", "-o", "run", "--epochs",
                             "1", "--no-progress"],
                      {"spec.synth": TSPEC.replace("[B, 1, 8, 8]", "[B, 3, 8, 8]"),
                       "imgs/a/ok.png": copy_of("ok.png"), "imgs/b/ok.png": copy_of("ok.png"),
                       "imgs/a/bad.png": content}, code="D", words="bad.png"))

# command-line flags
CASES += [
    Case("nodes_unknown_arch", ["nodes", "resnet_nope"], {}, code="S201"),
    Case("compile_batch_negative", ["compile", "spec.synth", "--batch-size", "-3"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n"}, code="S010"),
    Case("compile_batch_zero", ["compile", "spec.synth", "--batch-size", "0"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n"}, code="S010"),
    Case("compile_batch_huge", ["compile", "spec.synth", "--batch-size", "10000000000"],
         {"spec.synth": f"synth A\n{IMG}\ny = Conv2d(x, out=64)\noutput y\n"},
         code=("S010", "S305")),
    Case("viz_unknown_format", ["viz", "spec.synth", "-o", "out.docx"],
         {"spec.synth": f"synth A\n{VEC}\ny = ReLU(x)\noutput y\n"}, usage=True,
         words="cannot tell the format"),
    Case("eval_batch_negative", ["eval", "{shared}/art.safetensors", "--data",
                                 "{shared}/data.npz", "--batch-size", "-2"], {}, code="S010"),
]
