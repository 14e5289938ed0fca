"""The built-in demo: the synthesis loop on real data (being rewritten)."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("-o", "--output", default="runs/demo", help="where results go")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quick", action="store_true")


def main_demo(args) -> int:
    print("the demo is being rewritten")
    return 0
