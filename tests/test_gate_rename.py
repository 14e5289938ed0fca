"""`inherit ... with rename=[...]`: donor keys renamed as ``re`` would rename them, every
pattern and replacement checked before a key is matched, and all the matching bounded in
time (S402 at rename=), so a pattern that backtracks without end cannot hang a check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import synthdsl
from synthdsl.library import rename as rename_mod
from synthdsl.library.rename import RenameError, Renamer, RenameTimeout, rename_problem

KEYS = ["model.encoder.stage1.blocks.0.conv.weight", "model.encoder.stage2.blocks.1.bn.bias",
        "head.fc.weight", "head.fc.bias", "pos_embed", "blocks.10.attn.qkv.weight"]
RULES = [
    ["model\\.encoder\\.stage(\\d)\\.blocks\\.(.*)", "layer\\1.\\2"],
    ["head\\.fc\\.(.*)", "fc.\\1", "(.*)", "x.\\1"],
    ["(?P<pre>blocks)\\.(\\d+)\\.(.*)", "\\g<pre>_\\2/\\3"],
    [".*?", "lazy:\\g<0>"],                 # a lazy pattern: sub's first match, as re has it
    ["nothing", "never"],
]


@pytest.mark.parametrize("items", RULES, ids=[r[0] for r in RULES])
def test_renames_are_what_re_gives(items):
    r = Renamer(items)
    for key in KEYS:
        want = None
        for pat, rep in zip(items[::2], items[1::2]):
            if re.fullmatch(pat, key):
                want = re.sub(pat, rep, key, count=1)
                break
        assert r(key) == want, key


@pytest.mark.parametrize("items, words", [
    (["(", "x"], "not a regular expression"),
    (["a(b)", "\\2"], "does not fit"),
    (["a(?P<n>b)", "\\g<m>"], "does not fit"),
    (["a" * 1001, "b"], "at most 1,000"),
    (["a"], "pairs of strings"),
])
def test_a_rename_that_cannot_work_is_refused_before_matching(items, words):
    assert words in rename_problem(items)
    with pytest.raises(RenameError):
        Renamer(items)


def test_the_time_limit_is_shared_by_all_keys():
    r = Renamer(["(a|a)*b", "x"], seconds=0.0)
    with pytest.raises(RenameTimeout, match="took more than 0 s"):
        r("aaaa")


def test_a_backtracking_pattern_ends():
    """The pattern that ran for minutes under ``re`` on a resnet's keys ends (at once)."""
    r = Renamer(["([a-z0-9_.]|[a-z0-9_.])*Z", "x"])
    keys = [f"layer{i}.{j}.conv{k}.weight" * 3 for i in range(4) for j in range(8)
            for k in range(3)]
    assert [r(k) for k in keys] == [None] * len(keys)


def _spec(tmp_path: Path, rename: str, extra: str = "") -> str:
    w = tmp_path / "donor.safetensors"
    if not w.exists():
        torch.manual_seed(0)
        save_file({"model.head.weight": torch.randn(5, 8), "model.head.bias": torch.randn(5)},
                  str(w))
    return (f"synth R\ninput x: [B, 8]\nhead = Linear(x, out=5)\n"
            f'inherit head from checkpoint("{w}") with rename={rename}{extra}\n'
            "output head\n")


def test_a_rename_maps_a_checkpoint_and_compiles_its_values(tmp_path):
    text = _spec(tmp_path, '["model\\\\.head\\\\.(.*)", "\\\\1"]')
    module = synthdsl.compile_spec(text, seed=0)
    from safetensors.torch import load_file
    donor = load_file(str(tmp_path / "donor.safetensors"))
    params = dict(module.named_parameters())
    weight = next(v for k, v in params.items() if k.endswith("weight"))
    bias = next(v for k, v in params.items() if k.endswith("bias"))
    assert torch.equal(weight, donor["model.head.weight"])
    assert torch.equal(bias, donor["model.head.bias"])


def _errors(text):
    return synthdsl.check_spec(text, raise_errors=False).graph["errors"]


def test_a_rename_past_the_time_limit_is_s402_at_rename(tmp_path, monkeypatch):
    monkeypatch.setattr(rename_mod, "RENAME_SECONDS", 0.0)
    text = _spec(tmp_path, '["model\\\\.head\\\\.(.*)", "\\\\1"]')
    errors = _errors(text)
    assert [e.code for e in errors] == ["S402"], [str(e) for e in errors]
    assert "took more than 0 s" in errors[0].message
    at = text.index("rename=")
    assert errors[0].span.start in (at, at + len("rename="))


def test_a_replacement_naming_a_missing_group_is_s402(tmp_path):
    text = _spec(tmp_path, '["model\\\\.head\\\\.(.*)", "\\\\3"]')
    errors = _errors(text)
    assert [e.code for e in errors] == ["S402"], [str(e) for e in errors]
    assert "does not fit" in errors[0].message and "group" in errors[0].message
