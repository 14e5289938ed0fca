"""A compiled artifact carries everything it needs, and loading it reads nothing else.

* loading never opens a path its metadata names (a spec file, an import, a checkpoint): a
  sentinel file named there is never opened and its text appears in no output;
* every imported spec's text is embedded, keyed by the import as written, so a file that
  changed beside the artifact does not change the loaded model, and an import through a
  symlinked folder loads;
* tampered metadata is one S209 (not an artifact) or S210 (an artifact that disagrees with
  itself), raised before the module is built: a spec edited to claim a 25 TB layer is
  refused on the meta device;
* loading writes nothing.

Every open is recorded by an audit hook (``sys.addaudithook``), which sees Python's
``open`` and ``os.open``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import synthdsl
from synthdsl.build.artifact import load_compiled, save_compiled
from synthdsl.build.artifact_format import digest_of_tensors
from synthdsl.cli.app import run
from synthdsl.lang.errors import SynthError

SECRET = "SENTINEL-7f3a-do-not-print"
_OPENED: list[str] | None = None


def _audit(event: str, args) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], (str, bytes,
                                                                              os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextlib.contextmanager
def opened():
    """The paths opened inside the block (resolved where they exist)."""
    global _OPENED
    _OPENED = seen = []
    try:
        yield seen
    finally:
        _OPENED = None


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"")
            for p in sorted(folder.rglob("*"))}


def sentinel(folder: Path, name: str = "secret.synth") -> Path:
    p = folder / name
    p.write_text(f"synth Secret\n{SECRET} first line\n{SECRET} second line\n")
    return p


def assert_not_opened(seen: list[str], *paths: Path) -> None:
    names = {str(p) for p in paths} | {str(p.resolve()) for p in paths}
    hit = [s for s in seen if s in names or os.path.realpath(s) in names]
    assert not hit, f"opened {hit}"


LINEAR = "synth Head\ninput x: [B, 8]\nh = Linear(x, out=5)\noutput h\n"


def compiled(folder: Path, text: str = LINEAR, name: str = "head.synth") -> Path:
    spec = folder / name
    spec.write_text(text)
    out = folder / (Path(name).stem + ".safetensors")
    assert run(["compile", str(spec), "-o", str(out)]) == 0
    return out


def contents(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def rewrite(path: Path, out: Path, record=None, meta=None, state=None,
            digest: bool = True) -> Path:
    """A copy of the artifact at `path` with its record, metadata or tensors changed;
    with `digest`, the digest is computed again (a forger's copy), else left as it was."""
    m, s = contents(path)
    r = json.loads(m["artifact"])
    if record:
        record(r)
        m["artifact"] = json.dumps(r)
    if state:
        state(s)
    if meta:
        meta(m)
    if digest and "artifact" in m and "digest" in m:
        try:
            m["digest"] = digest_of_tensors(m["artifact"], s)
        except (KeyError, TypeError):
            pass
    save_file(s, str(out), metadata=m)
    return out


def load_error(path: Path) -> SynthError:
    with pytest.raises(SynthError) as e:
        load_compiled(path)
    return e.value


def full_text(e: SynthError) -> str:
    return "\n".join([e.message, *e.notes, e.hint or ""])


# ---- 2: paths in the metadata are never opened ---------------------------------------


def test_spec_file_named_in_metadata_is_never_opened(tmp_path, capsys):
    art = compiled(tmp_path)
    secret = sentinel(tmp_path)

    def point_at_secret(r):
        r["specs"][0]["name"] = str(secret)
        r["specs"][0]["text"] += "bad = Nope(h)\n"  # a diagnostic that shows a line

    bad = rewrite(art, tmp_path / "bad.safetensors", record=point_at_secret)
    before = snapshot(tmp_path)
    with opened() as seen:
        e = load_error(bad)
        assert run(["eval", str(bad), "--data", "digits"]) == 1
    assert e.code == "S210"
    out = capsys.readouterr()
    assert "error[S210]" in out.err and "internal error" not in out.err
    assert "Nope" in full_text(e)  # the embedded line is shown...
    assert SECRET not in full_text(e) + out.err + out.out  # ...never the named file
    assert_not_opened(seen, secret)
    assert snapshot(tmp_path) == before


def test_import_named_in_metadata_is_never_opened(tmp_path, capsys):
    art = compiled(tmp_path)
    secret = sentinel(tmp_path)

    def import_secret(r):  # the spec imports a file the artifact does not carry
        r["specs"][0]["text"] = (f'synth Head\ninput x: [B, 8]\nsource s = spec("{secret}")\n'
                                 "h = Linear(x, out=5)\noutput h\n")

    bad = rewrite(art, tmp_path / "bad.safetensors", record=import_secret)
    with opened() as seen:
        e = load_error(bad)
        assert run(["eval", str(bad), "--data", "digits"]) == 1
    assert e.code == "S210" and "not embedded" in full_text(e)
    out = capsys.readouterr()
    assert SECRET not in full_text(e) + out.err + out.out
    assert_not_opened(seen, secret)


def test_imports_are_embedded_and_a_changed_file_beside_does_not_matter(tmp_path):
    (tmp_path / "shared").mkdir()
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    outside = tmp_path / "shared" / "outside.synth"
    outside.write_text("synth Enc\ninput x: [B, 8]\nh = Linear(x, out=6)\noutput h\n")
    art = compiled(deep, 'synth Main\ninput x: [B, 8]\n'
                   'source e = spec("../../shared/outside.synth")\n'
                   "f = e(x)\ny = Linear(f, out=3)\noutput y\n", "main.synth")
    x = torch.randn(2, 8)
    first = load_compiled(art)
    with torch.no_grad():
        want = first(x)
    outside.write_text("synth Enc\ninput x: [B, 8]\nh = Linear(x, out=7) |> ReLU\noutput h\n")
    before = snapshot(tmp_path)
    with opened() as seen:
        again = load_compiled(art)
    with torch.no_grad():
        assert torch.equal(again(x), want)
    assert_not_opened(seen, outside, deep / "main.synth")
    assert [p for p in seen if p.endswith(".synth")] == []
    assert snapshot(tmp_path) == before


# ---- 4: an import through a symlinked folder ---------------------------------------------


def test_import_through_a_symlinked_folder_loads(tmp_path):
    real = tmp_path / "real" / "enc"
    real.mkdir(parents=True)
    (tmp_path / "real" / "common.synth").write_text(
        "synth Common\ninput x: [B, 8]\nh = Linear(x, out=4)\noutput h\n")
    (real / "encoder.synth").write_text(  # "../" is real/ where the link leads, not tmp/
        'synth Enc\ninput x: [B, 8]\nsource c = spec("../common.synth")\n'
        "h = c(x)\noutput h\n")
    os.symlink(real, tmp_path / "link")
    main = tmp_path / "main"
    main.mkdir()
    art = compiled(main, 'synth Main\ninput x: [B, 8]\nsource e = spec("../link/encoder.synth")\n'
                   "f = e(x)\ny = Linear(f, out=3)\noutput y\n", "main.synth")
    original = synthdsl.compile_spec(main / "main.synth", seed=0).eval()
    with opened() as seen:
        loaded = load_compiled(art)
    assert [p for p in seen if p.endswith(".synth")] == []
    assert list(loaded.state_dict()) == list(original.state_dict())
    x = torch.randn(2, 8)
    with torch.no_grad():
        loaded.load_state_dict(original.state_dict())
        assert torch.equal(loaded(x), original(x))


# ---- 3: tampered metadata ---------------------------------------------------------------


def _set_text(old: str, new: str):
    def edit(r):
        assert old in r["specs"][0]["text"]
        r["specs"][0]["text"] = r["specs"][0]["text"].replace(old, new)
    return edit


def _drop(key):
    def edit(r):
        del r[key]
    return edit


def _meta(key, value):
    def edit(m):
        if value is None:
            m.pop(key, None)
        else:
            m[key] = value
    return edit


TAMPERED = {
    # name: (rewrite options, digest recomputed, code, words in the message)
    "edited text": (dict(record=_set_text("out=5", "out=6")), False, "S210", "changed since"),
    "edited tensor": (dict(state=lambda s: s["h.bias"].add_(1)), False, "S210", "changed since"),
    "no specs key": (dict(record=_drop("specs")), True, "S209", "specs"),
    "no artifact key": (dict(meta=_meta("artifact", None)), True, "S209", "artifact"),
    "bad JSON": (dict(meta=_meta("artifact", '{"specs": [')), True, "S209", "not valid"),
    "wrong type": (dict(record=lambda r: r.__setitem__("adapters", "h")), True, "S209",
                   "adapters"),
    "old format": (dict(meta=_meta("format", "synthdsl-compiled/0")), True, "S209", "format"),
    "bad digest": (dict(meta=_meta("digest", "md5:x")), False, "S209", "digest"),
    "import out of range": (dict(record=lambda r: r["specs"][0].__setitem__(
        "imports", {"x.synth": 7})), True, "S210", "spec #7"),
    "shape edited": (dict(state=lambda s: s.__setitem__("h.weight", s["h.weight"].reshape(
        8, 5))), True, "S210", "'h.weight'"),
    "dtype edited": (dict(state=lambda s: s.__setitem__("h.bias", s["h.bias"].double())), True,
                     "S210", "F64"),
    "tensor removed": (dict(state=lambda s: s.pop("h.bias")), True, "S210", "does not hold"),
    "tensor added": (dict(state=lambda s: s.__setitem__("extra", torch.zeros(2))), True,
                     "S210", "'extra'"),
    "25 TB Linear": (dict(record=_set_text("out=5", "out=100000000000")), True, "S210",
                     "100000000000"),
    "spec does not check": (dict(record=_set_text("Linear(x", "Linear(y")), True, "S210",
                            "does not check"),
}


@pytest.mark.parametrize("case", TAMPERED, ids=list(TAMPERED))
def test_tampered_metadata_is_one_clear_error(tmp_path, case, monkeypatch):
    options, digest, code, words = TAMPERED[case]
    art = compiled(tmp_path)
    bad = rewrite(art, tmp_path / "bad.safetensors", digest=digest, **options)
    built = []
    import synthdsl.build.artifact as artifact

    original = artifact.compile_graph
    monkeypatch.setattr(artifact, "compile_graph", lambda g, **kw: built.append(
        kw.get("device", "cpu")) or original(g, **kw))
    before = snapshot(tmp_path)
    e = load_error(bad)
    assert (e.code, case) == (code, case), full_text(e)
    assert words in full_text(e), full_text(e)
    assert "cpu" not in built  # refused before anything was built for real
    assert snapshot(tmp_path) == before
    assert run(["eval", str(bad), "--data", "digits"]) == 1


def test_not_an_artifact(tmp_path, capsys):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    for path in (plain, junk, tmp_path / "missing.safetensors", tmp_path):
        assert load_error(path).code == "S209"


def test_honest_artifact_round_trips_with_lora_and_provenance(tmp_path):
    spec = tmp_path / "lora.synth"
    spec.write_text("synth L\ninput x: [B, 8]\nh = Linear(x, out=6) |> ReLU\n"
                    "y = Linear(h, out=3)\nadapt h.0 with lora(rank=2, alpha=2)\noutput y\n")
    model = synthdsl.compile_spec(spec, seed=0).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    a = save_compiled(model, tmp_path / "a.safetensors")
    model.merge_adapters()
    b = save_compiled(model, tmp_path / "b.safetensors")
    x = torch.randn(3, 8)
    for path in (a, b):
        loaded = load_compiled(path)
        with torch.no_grad():
            assert torch.allclose(loaded(x), model(x), atol=1e-6)
        assert loaded.provenance == model.provenance
    assert "h.0.lora_A" in load_compiled(a).state_dict()
    assert "h.0.lora_A" not in load_compiled(b).state_dict()


# ---- artifacts of the first format ---------------------------------------------------------


def _v1(folder: Path, model, spec_text: str, imports: dict[str, str]) -> Path:
    out = folder / "v1.safetensors"
    meta = {"format": "synthdsl-compiled/1", "spec": spec_text, "spec_file": "main.synth",
            "imports": json.dumps(imports), "provenance": json.dumps(model.provenance),
            "lock": json.dumps({"spec": "Main", "checkpoints": {}}), "adapters": "[]"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out),
              metadata=meta)
    return out


def test_first_format_artifacts_still_load_from_their_own_table(tmp_path):
    (tmp_path / "enc").mkdir()
    enc = "synth Enc\ninput x: [B, 8]\nh = Linear(x, out=6)\noutput h\n"
    (tmp_path / "enc" / "enc.synth").write_text(enc)
    main = ('synth Main\ninput x: [B, 8]\nsource e = spec("enc/enc.synth")\n'
            "f = e(x)\ny = Linear(f, out=3)\noutput y\n")
    (tmp_path / "main.synth").write_text(main)
    model = synthdsl.compile_spec(tmp_path / "main.synth", seed=0).eval()
    art = _v1(tmp_path, model, main, {"enc/enc.synth": enc})
    (tmp_path / "enc" / "enc.synth").write_text(SECRET)
    with opened() as seen:
        loaded = load_compiled(art)
    assert [p for p in seen if p.endswith(".synth")] == []
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    secret = sentinel(tmp_path)
    bad = _v1(tmp_path, model, main.replace("enc/enc.synth", str(secret)), {})
    with opened() as seen:
        e = load_error(bad)
    assert e.code == "S210" and SECRET not in full_text(e)
    assert_not_opened(seen, secret)


def test_a_loaded_artifact_saves_again_with_its_lock(tmp_path):
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "enc.synth").write_text(
        "synth Enc\ninput x: [B, 8]\nh = Linear(x, out=6)\noutput h\n")
    art = compiled(tmp_path, 'synth Main\ninput x: [B, 8]\nsource e = spec("enc/enc.synth")\n'
                   "f = e(x)\ny = Linear(f, out=3)\noutput y\n", "main.synth")
    first = load_compiled(art)
    first.lock = {"spec": "Main", "checkpoints": {"w.safetensors": "0" * 64}}
    again = load_compiled(save_compiled(first, tmp_path / "again.safetensors"))
    assert again.lock == first.lock
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(again(x), first(x))


def test_read_metadata_tells_an_artifact_from_a_plain_file(tmp_path):
    from synthdsl.build.artifact import read_metadata

    art = compiled(tmp_path)
    edited = rewrite(art, tmp_path / "edited.safetensors", state=lambda s: s["h.bias"].add_(1),
                     digest=False)
    assert read_metadata(edited)["format"] == "synthdsl-compiled/2"  # an artifact...
    assert load_error(edited).code == "S210"                        # ...that was edited
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(SynthError) as e:
        read_metadata(plain)
    assert e.value.code == "S209"


def test_checkpoints_the_spec_names_are_not_opened_when_loading(tmp_path):
    import hashlib

    import timm

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=5)
    ckpt = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ckpt))
    head = tmp_path / "head.safetensors"
    donor = {"weight": torch.randn(5, 5), "bias": torch.randn(5)}
    save_file(donor, str(head))
    art = compiled(tmp_path, 'synth W\ninput x: [B, 3, 32, 32]\n'
                   'source r = timm("test_resnet", num_classes=5, weights="w.safetensors")\n'
                   "f = r(x)\ny = Linear(f, out=5)\n"
                   'inherit y from checkpoint("head.safetensors")\noutput y\n', "model.synth")
    with opened() as seen:
        loaded = load_compiled(art)
    assert_not_opened(seen, ckpt, head, tmp_path / "model.synth")
    assert sorted(loaded.lock["checkpoints"]) == ["head.safetensors", "w.safetensors"]
    assert loaded.lock["checkpoints"]["w.safetensors"] == hashlib.sha256(
        ckpt.read_bytes()).hexdigest()
    assert torch.equal(loaded.state_dict()["y.weight"], donor["weight"])
    assert torch.equal(loaded.state_dict()["r.fc.weight"], net.fc.weight)


def test_buffers_that_are_not_saved_are_bounded(tmp_path, monkeypatch):
    import synthdsl.build.artifact as artifact

    art = compiled(tmp_path, 'synth P\ninput x: [B, 3, 32, 32]\n'
                   'source r = timm("test_vit_relpos", num_classes=5, img_size=32)\ny = r(x)\n'
                   "output y\n", "vit.synth")
    assert load_compiled(art) is not None
    monkeypatch.setattr(artifact, "UNSAVED_MAX_BYTES", 0)
    e = load_error(art)
    assert e.code == "S210" and "not saved" in e.message
