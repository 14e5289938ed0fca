"""What every benchmark in bench/ records beside its numbers, and how it writes them.

The scripts run as ``.venv/bin/python bench/NAME.py``, so this folder is on ``sys.path``
and they import this module as ``_record``. It imports nothing heavy itself: the
packages whose versions are recorded are imported only when ``environment`` is called
(``assembly_memory.py`` measures fresh interpreters that must not load torch early).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the system has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment(*packages: str, torch_threads: bool = True, **extra) -> dict:
    """The date, the Python version, the ``__version__`` of each package named (torch,
    timm and synthdsl when none is), the platform and the CPU count; then
    ``torch_threads`` (``torch.get_num_threads()``) unless turned off; then ``extra``."""
    env = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version()}
    for name in packages or ("torch", "timm", "synthdsl"):
        env[name] = getattr(importlib.import_module(name), "__version__", "?")
    env["platform"] = platform.platform()
    env["cpu_count"] = os.cpu_count()
    if torch_threads:
        env["torch_threads"] = importlib.import_module("torch").get_num_threads()
    env.update(extra)
    return env


def write_report(report: dict, out: Path) -> None:
    """Write ``report`` to ``out`` as indented JSON and say where, relative to the
    repository root when ``out`` lies inside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
