"""Weights are what the file says, or an error.

* A `.pt` zip whose tensor records are deflate-compressed loads its real values (not the
  compressed bytes a memory map would read); a record cut short (or padded) is S203.
* A checkpoint tensor of another dtype kind than the model's (integer or bool into float,
  or the reverse) is S205 naming the tensor and both dtypes; float16 into float32 loads.
* timm options that would make timm read weights itself (checkpoint_path=,
  pretrained_cfg_overlay=, ...) or that name a weights file or URL are S402 at the option.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import timm
import torch

import synthdsl
from synthdsl import SynthError
from synthdsl.lang.errors import flatten
from synthdsl.library.checkpoints import load_torch, zip_records
from tests.conftest import randomize_

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")

ARCH = "test_resnet"


def write_spec(folder: Path, weights: str | None, *, extra: str = "",
               body: str = "y = net(image)\noutput y") -> Path:
    """A spec whose source's options are on line 5 and `weights=` on line 6."""
    text = ("# a spec that loads a checkpoint\n"        # 1
            "synth Loader\n"                            # 2
            "input image: [B, 3, 32, 32]\n"             # 3
            "source net = timm(\n"                      # 4
            f'    "{ARCH}"{extra}'                      # 5
            + (f',\n    weights="{weights}")\n' if weights else ")\n")  # 6
            + f"{body}\n")
    path = folder / "loader.synth"
    path.write_text(text)
    return path


def errors_of(fn, *args) -> list[SynthError]:
    with pytest.raises(SynthError) as info:
        fn(*args)
    return flatten(info.value)


@pytest.fixture(scope="module")
def reference():
    return randomize_(timm.create_model(ARCH)).eval()


def _state(reference) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in reference.state_dict().items()}


def _rewrite(src: Path, dst: Path, *, deflate: bool = False, cut: str | None = None) -> None:
    """`src` (a torch.save zip) written again: its data records deflated, or the record
    named `cut` (a key under data/) shortened by 4 bytes (or, with a leading '+', padded)."""
    with zipfile.ZipFile(src) as z:
        items = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in items:
            record = "/data/" in name
            if cut is not None and name.endswith("/data/" + cut.lstrip("+")):
                data = data + b"\0" * 4 if cut.startswith("+") else data[:-4]
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if record and deflate
                       else zipfile.ZIP_STORED)


def _first_record(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        sizes = {i.filename.rsplit("/", 1)[1]: i.file_size for i in z.infolist()
                 if "/data/" in i.filename and not i.filename.endswith("serialization_id")}
    return max(sizes, key=sizes.get)  # the largest: cutting it cannot make it empty


# ---- compressed and cut-short zip records ---------------------------------------------


def test_deflated_records_load_their_real_values(tmp_path, reference):
    plain = tmp_path / "plain.pt"
    torch.save(_state(reference), plain)
    deflated = tmp_path / "ckpt" / "r.pt"
    deflated.parent.mkdir()
    _rewrite(plain, deflated, deflate=True)
    with zipfile.ZipFile(deflated) as z:  # the file really is compressed
        assert any(i.compress_type == zipfile.ZIP_DEFLATED and "/data/" in i.filename
                   for i in z.infolist())
    assert zip_records(plain) is True and zip_records(deflated) is False
    state = load_torch(deflated, mmap=True)
    ref = reference.state_dict()
    assert set(state) == set(ref)
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    # and through a spec: every tensor of the compiled module is the checkpoint's
    model = synthdsl.compile_spec(write_spec(tmp_path, "ckpt/r.pt"))
    kept = model.state_dict()
    assert kept
    for name, value in kept.items():
        assert torch.equal(value, ref[name[len("net."):]]), name


@pytest.mark.parametrize("cut", ["short", "long"])
def test_record_of_the_wrong_size_is_refused(tmp_path, reference, cut):
    plain = tmp_path / "plain.pt"
    torch.save(_state(reference), plain)
    key = _first_record(plain)
    bad = tmp_path / "ckpt" / "r.pt"
    bad.parent.mkdir()
    _rewrite(plain, bad, cut=key if cut == "short" else "+" + key)
    with pytest.raises(ValueError, match=f"data/{key}"):
        load_torch(bad, mmap=True)
    spec = write_spec(tmp_path, "ckpt/r.pt")
    for fn in (synthdsl.check_spec, synthdsl.compile_spec):
        (e,) = errors_of(fn, spec)
        assert e.code == "S203" and e.span.line == 6
        assert "r.pt" in e.message and f"data/{key}" in e.message
        assert "cut short" in e.message


def test_deflated_and_cut_short_is_refused(tmp_path, reference):
    plain = tmp_path / "plain.pt"
    torch.save(_state(reference), plain)
    key = _first_record(plain)
    bad = tmp_path / "bad.pt"
    _rewrite(plain, bad, deflate=True, cut=key)
    with pytest.raises(ValueError, match="cut short"):
        load_torch(bad, mmap=False)


def test_zip_records_reads_no_code(tmp_path):
    """Listing the records of a pickle that would run code runs nothing."""
    marker = tmp_path / "ran"

    class Touch:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Touch()}, evil)
    zip_records(evil)
    assert not marker.exists()


# ---- dtype kinds ----------------------------------------------------------------------


def _save_cast(reference, path: Path, fmt: str, cast) -> None:
    state = {k: cast(k, v) for k, v in _state(reference).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
@pytest.mark.parametrize("into", ["int-into-float", "bool-into-float", "float-into-int"])
def test_dtype_kind_change_is_s205_naming_the_tensor(tmp_path, reference, fmt, into):
    floats = [k for k, v in reference.state_dict().items() if v.is_floating_point()]
    ints = [k for k, v in reference.state_dict().items() if not v.is_floating_point()]
    victim = {"int-into-float": floats[0], "bool-into-float": floats[0],
              "float-into-int": ints[0]}[into]
    dtype = {"int-into-float": torch.int64, "bool-into-float": torch.bool,
             "float-into-int": torch.float32}[into]
    ckpt = tmp_path / "ckpt" / f"r.{fmt}"
    _save_cast(reference, ckpt, fmt, lambda k, v: v.to(dtype) if k == victim else v)
    spec = write_spec(tmp_path, f"ckpt/{ckpt.name}")
    want = str(reference.state_dict()[victim].dtype).removeprefix("torch.")
    have = str(dtype).removeprefix("torch.")
    for fn in (synthdsl.check_spec, synthdsl.compile_spec):
        (e,) = errors_of(fn, spec)
        assert e.code == "S205" and e.span.line == 6, e
        text = e.message + " " + " ".join(e.notes)
        assert f"'{victim}' is {have} in the checkpoint" in text
        assert f"the model holds it as {want}" in text


def test_float16_into_float32_still_loads(tmp_path, reference):
    ckpt = tmp_path / "ckpt" / "r.pt"
    _save_cast(reference, ckpt, "pt", lambda k, v: v.half() if v.is_floating_point() else v)
    model = synthdsl.compile_spec(write_spec(tmp_path, "ckpt/r.pt"))
    ref = reference.state_dict()
    for name, value in model.state_dict().items():
        want = ref[name[len("net."):]]
        if want.is_floating_point():
            want = want.half().to(want.dtype)
        assert value.dtype == ref[name[len("net."):]].dtype and torch.equal(value, want)


def test_materialize_refuses_a_kind_change_behind_the_check(reference):
    """The compiler's copy refuses too, should a file change kind after the check."""
    from synthdsl.library.checkpoints import TensorReader
    from synthdsl.library.weights import ChangedError, materialize

    class Reader(TensorReader):
        path = "x.pt"

        def get(self, key):
            return torch.ones(2, 2, dtype=torch.int64)

    module = torch.nn.Linear(2, 2, bias=False, device="meta")
    with pytest.raises(ChangedError, match="'weight' is int64 in the checkpoint, the model "
                                           "holds it as float32"):
        materialize(module, lambda n: n, Reader(), {}, "m", "net")


# ---- timm options that read weights themselves ----------------------------------------


@pytest.mark.parametrize("extra, name", [
    (', checkpoint_path="w.pt"', "checkpoint_path"),
    (', pretrained_cfg_overlay="w.pt"', "pretrained_cfg_overlay"),
    (', pretrained_cfg="resnet18.a1_in1k"', "pretrained_cfg"),
    (', cache_dir="cache"', "cache_dir"),
    (', some_path="https://example.com/w.pth"', "some_path"),
    (', some_files=["a", "w.safetensors"]', "some_files"),
])
def test_timm_options_that_read_weights_are_refused(tmp_path, reference, extra, name):
    torch.save(_state(reference), tmp_path / "w.pt")
    spec = write_spec(tmp_path, None, extra=extra)
    for fn in (synthdsl.check_spec, synthdsl.compile_spec):
        errors = errors_of(fn, spec)
        assert [e.code for e in errors] == ["S402"], errors
        (e,) = errors
        assert e.span.line == 5 and name + "=" in e.message
        value_col = spec.read_text().splitlines()[4].index(name) + len(name) + 2
        assert e.span.column == value_col
        assert 'weights="..."' in (e.hint or "")


def test_other_timm_options_still_pass(tmp_path):
    spec = write_spec(tmp_path, None, extra=", num_classes=7, drop_rate=0.1")
    model = synthdsl.compile_spec(spec)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
