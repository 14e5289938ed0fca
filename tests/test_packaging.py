"""The grammar ships inside the wheel: a non-editable install, run from elsewhere, parses."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_the_grammar_and_parses_from_elsewhere(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheels.glob("synthdsl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "synthdsl/grammar/synth.lark" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import synthdsl, sys; assert synthdsl.__file__.startswith(sys.argv[1]), "
            "synthdsl.__file__; s = synthdsl.parse_spec('synth A input x: [B, 2] output x'); "
            "print(s.name)")
    p = subprocess.run([sys.executable, "-c", code, str(target)], cwd=elsewhere,
                       capture_output=True, text=True, env={"PYTHONPATH": str(target)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "A"
