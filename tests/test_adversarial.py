"""The adversarial corpus (``tests/adversarial/corpus.py``): every case, in a process of its
own with a time and a memory limit, ends in a coded diagnostic (at its position where the
input has one) or, for a spec the check accepts, in a compiled module; never a traceback,
never an "internal error", nothing written outside the asked path, nothing partial left, and
no pickled payload run.

The cases run in children forked from one server process (``tests/adversarial/runner.py``)
that has loaded torch and timm once; each child has its own address-space limit and is
killed when it outlives its time.
"""

from __future__ import annotations

import io
import json
import queue
import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.adversarial.corpus import CASES, Case

ROOT = Path(__file__).resolve().parent.parent
MEMORY = 8 * 2**30


class Server:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests/adversarial/runner.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=ROOT)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the runner died"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _evil_object(sentinel: Path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))
    return Payload()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """The files cases read: checkpoints good and bad, an artifact, data."""
    import timm
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from synthdsl.cli.app import run

    d = tmp_path_factory.mktemp("shared")
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in
             timm.create_model("test_resnet", num_classes=5).state_dict().items()}
    save_file(state, str(d / "w.safetensors"))
    save_file({"weight": torch.randn(5, 8), "bias": torch.randn(5)}, str(d / "lin.safetensors"))
    bad = dict(state)
    first = next(k for k, v in bad.items() if v.is_floating_point())
    bad[first] = bad[first].to(torch.int64)
    save_file(bad, str(d / "int64.safetensors"))
    torch.save(state, d / "w.pt")
    with zipfile.ZipFile(d / "w.pt") as src, \
            zipfile.ZipFile(d / "compressed.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with zipfile.ZipFile(d / "w.pt") as src, zipfile.ZipFile(d / "short.pt", "w") as dst:
        cut = False
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename and len(data) > 64 and not cut:
                data, cut = data[: len(data) // 2], True
            dst.writestr(info.filename, data)
    torch.save({"conv1.weight": _evil_object(d / "PWNED")}, d / "evil.pt")
    # a lock of other weights: stale for every case's w.safetensors
    other = d / "other"
    other.mkdir()
    (other / "spec.synth").write_text(
        'synth A\ninput x: [B, 3, 32, 32]\nsource s = timm("test_resnet", num_classes=5, '
        'weights="w.safetensors")\ny = s(x)\noutput y\n')
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()},
              str(other / "w.safetensors"))
    assert run(["lock", str(other / "spec.synth")]) == 0
    (d / "stale.lock").write_bytes(next(other.glob("*.lock")).read_bytes())
    # data: 60 samples of 3 classes, 1x8x8
    rng = np.random.default_rng(0)
    np.savez(d / "data.npz", x=rng.random((60, 1, 8, 8)).astype(np.float32),
             y=np.arange(60) % 3)
    np.savez(d / "data5.npz", x=rng.random((20, 3, 32, 32)).astype(np.float32),
             y=np.arange(20) % 5)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (3_000_000_000,)})
    with zipfile.ZipFile(d / "lie.npz", "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * 16)
        z.writestr("y.npy", _npy(np.arange(3)))
    with zipfile.ZipFile(d / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", _npy(np.zeros((2**22, 1, 8, 8), dtype=np.uint8)))
        z.writestr("y.npy", _npy(np.zeros(2**22, dtype=np.int64)))
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / "ok.png")
    art_spec = d / "art.synth"
    art_spec.write_text("synth A\ninput x: [B, 1, 8, 8]\ny = Flatten(x) |> Linear(out=3)\n"
                        "output y\n")
    assert run(["compile", str(art_spec), "-o", str(d / "art.safetensors")]) == 0
    return d


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_dir() and not p.is_symlink():  # a folder: what it holds is compared
                out[str(p.relative_to(root))] = (st.st_mode,)
            else:
                out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def _sub(value: str, shared: Path) -> str:
    return value.replace("{shared}", str(shared))


#: Cases run two at a time (each in its own child of its own server).
WORKERS = max(1, min(2, os.cpu_count() or 1))


@dataclass
class Outcome:
    result: dict
    err: str
    out: str
    before: dict
    after: dict


def _prepare(case: Case, base: Path, shared: Path) -> Path:
    work = base / case.name / "work"
    work.mkdir(parents=True)
    for rel, content in case.files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path, shared)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(_sub(content, shared), encoding="utf-8")
    return work


def _run(case: Case, server: Server, work: Path, shared: Path) -> Outcome:
    home = work.parent
    before = _snapshot(work)
    result = server.run(argv=[_sub(a, shared) for a in case.argv], cwd=str(work),
                        env={**case.env, "XDG_CACHE_HOME": str(home / "cache"),
                             "HOME": str(home / "home")},
                        stdout=str(home / "stdout"), stderr=str(home / "stderr"),
                        seconds=case.seconds, memory=MEMORY)
    return Outcome(result, (home / "stderr").read_text(errors="replace"),
                   (home / "stdout").read_text(errors="replace"), before, _snapshot(work))


@pytest.fixture(scope="module")
def outcomes(request, shared, shared_snapshot, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected case, run: two servers, each case in a forked child of one."""
    wanted = {item.callspec.params["case"].name for item in request.session.items
              if item.originalname == "test_case" and hasattr(item, "callspec")}
    cases = [c for c in CASES if c.name in wanted]
    base = tmp_path_factory.mktemp("cases")
    works = {c.name: _prepare(c, base, shared) for c in cases}
    servers: queue.Queue = queue.Queue()
    started = [Server() for _ in range(min(WORKERS, len(cases)) or 1)]
    for s in started:
        servers.put(s)

    def one(case: Case) -> tuple[str, Outcome]:
        server = servers.get()
        try:
            return case.name, _run(case, server, works[case.name], shared)
        finally:
            servers.put(server)

    try:
        with ThreadPoolExecutor(len(started)) as pool:
            return dict(pool.map(one, cases))
    finally:
        for s in started:
            s.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, outcomes: dict[str, Outcome]) -> None:
    o = outcomes[case.name]
    result, err, out, before, after = o.result, o.err, o.out, o.before, o.after
    said = f"rc={result['rc']}\n--- stderr\n{err[-3000:]}\n--- stdout\n{out[-1000:]}"
    assert not result["timed_out"], f"ran past {case.seconds} s\n{said}"
    assert result["maxrss"] < MEMORY, f"peak memory {result['maxrss']:,} bytes\n{said}"
    assert "Traceback" not in err and "internal error" not in err, said
    created = set(after) - set(before)
    if case.usage:
        assert result["rc"] == 2 and "error" in err, said
        assert case.words in err, said
    elif case.ok:
        assert result["rc"] == 0, said
        assert set(case.writes) <= created, (sorted(created), said)
        created -= set(case.writes)
    else:
        assert result["rc"] == 1, said
        errors = re.findall(r"^error\[([A-Z]\d{3})\]", err, re.M)
        assert errors, f"no coded error\n{said}"
        wanted = (case.code,) if isinstance(case.code, str) else case.code
        assert any(c == w or (len(w) == 1 and c.startswith(w)) for c in errors
                   for w in wanted), f"codes {errors}, wanted one of {wanted}\n{said}"
        if case.at:
            assert any(a in err for a in case.at), f"not at {case.at}\n{said}"
        words = (case.words,) if isinstance(case.words, str) else case.words
        if words:
            assert any(w in err for w in words), f"none of {words}\n{said}"
    created = {c for c in created
               if not any(c == w or c.startswith(w + os.sep) for w in case.may_write)}
    assert not created, f"left behind: {sorted(created)}\n{said}"
    changed = {k for k in before if k in after and before[k] != after[k]}
    assert not changed, f"changed: {sorted(changed)}\n{said}"
    assert not [k for k in after if k.endswith(".tmp")], sorted(after)


def test_no_case_changed_a_shared_file_or_ran_a_payload(outcomes, shared, shared_snapshot):
    assert not (shared / "PWNED").exists(), "a pickled payload ran"
    assert _snapshot(shared) == shared_snapshot


@pytest.fixture(scope="module")
def shared_snapshot(shared) -> dict:
    return _snapshot(shared)


def test_the_corpus_is_large_and_each_case_named_once():
    assert len(CASES) >= 150
    assert len({c.name for c in CASES}) == len(CASES)
