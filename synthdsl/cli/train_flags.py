"""`synth train`'s flags for what timm and MMEngine users expect: layer decay, no decay on
norms and biases, EMA, gradient clipping and accumulation, a validation split with the best
checkpoint and early stopping, torch.compile, mixup / cutmix / RandAugment, more logs, and
``--set KEY=VALUE`` overrides of the spec. Only argparse here: the parser stays light.
"""

from __future__ import annotations

import argparse
import math

#: The recipe options these flags set (None: the flag was not given).
RECIPE_FLAGS = ("layer_decay", "decay_norm_bias")
#: Flags that must be finite numbers in a range: (low, low included, high, high included).
RANGES = {"layer_decay": (0.0, False, 1.0, True)}
#: Flags that must be whole numbers ≥ 1, and ≥ 0.
AT_LEAST_ONE: tuple[str, ...] = ()
AT_LEAST_ZERO: tuple[str, ...] = ()


def add_training_flags(r: argparse._ArgumentGroup, o: argparse._ArgumentGroup,
                       x: argparse._ArgumentGroup) -> None:
    """The flags, in the recipe (`r`), running (`o`) and inputs (`x`) groups."""
    r.add_argument("--layer-decay", type=float, metavar="DECAY",
                   help="layer-wise lr decay, as timm's: e.g. 0.75 (1: off)")
    r.add_argument("--no-decay-norm-bias", dest="decay_norm_bias", action="store_const",
                   const=False, default=None, help="no weight decay on biases and norms")
    o.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the spec: recipe.lr=3e-4, policy.norm=frozen (repeatable)")
