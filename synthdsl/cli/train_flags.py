"""`synth train`'s flags for what timm and MMEngine users expect: layer decay, no decay on
norms and biases, EMA, gradient clipping and accumulation, a validation split with the best
checkpoint and early stopping, torch.compile, mixup / cutmix / RandAugment, more logs, and
``--set KEY=VALUE`` overrides of the spec. Only argparse here: the parser stays light.
"""

from __future__ import annotations

import argparse
import math

#: The recipe options these flags set (None: the flag was not given).
RECIPE_FLAGS = ("layer_decay", "decay_norm_bias", "clip_grad", "accum_steps", "ema",
                "ema_warmup", "patience", "mixup", "cutmix", "randaugment")
#: Flags that must be finite numbers in a range: (low, low included, high, high included).
RANGES = {"layer_decay": (0.0, False, 1.0, True), "clip_grad": (0.0, True, math.inf, False),
          "ema": (0.0, True, 1.0, False), "val_split": (0.0, False, 1.0, False),
          "mixup": (0.0, True, math.inf, False), "cutmix": (0.0, True, math.inf, False)}
#: Flags that must be whole numbers ≥ 1, and ≥ 0.
AT_LEAST_ONE = ("accum_steps",)
AT_LEAST_ZERO = ("patience",)


def add_training_flags(r: argparse._ArgumentGroup, o: argparse._ArgumentGroup,
                       x: argparse._ArgumentGroup) -> None:
    """The flags, in the recipe (`r`), running (`o`) and inputs (`x`) groups."""
    r.add_argument("--layer-decay", type=float, metavar="DECAY",
                   help="layer-wise lr decay, as timm's: e.g. 0.75 (1: off)")
    r.add_argument("--no-decay-norm-bias", dest="decay_norm_bias", action="store_const",
                   const=False, default=None, help="no weight decay on biases and norms")
    r.add_argument("--clip-grad", type=float, metavar="NORM",
                   help="clip the gradients' total norm (0: off)")
    r.add_argument("--accum-steps", type=int, metavar="K",
                   help="sum the gradients of K batches per optimizer step")
    r.add_argument("--ema", type=float, metavar="DECAY", help="keep an EMA of the weights "
                   "(timm's ModelEmaV3), evaluated and saved beside the model: e.g. 0.999")
    r.add_argument("--ema-warmup", action="store_const", const=True, default=None,
                   help="warm the EMA's decay up over the first steps")
    r.add_argument("--patience", type=int, metavar="N",
                   help="stop after N validations without a better accuracy")
    x.add_argument("--mixup", type=float, metavar="ALPHA", help="timm's Mixup (e.g. 0.8)")
    x.add_argument("--cutmix", type=float, metavar="ALPHA", help="timm's CutMix (e.g. 1.0)")
    x.add_argument("--randaugment", metavar="POLICY",
                   help="timm's RandAugment, e.g. rand-m9-mstd0.5")
    o.add_argument("--val-split", type=float, metavar="FRACTION",
                   help="hold out this share of the training data, per class and seeded, "
                   "to validate on; the best epoch is model-best.safetensors")
    o.add_argument("--compile", action="store_true", help="train the model under "
                   "torch.compile")
    o.add_argument("--log", default="", metavar="KINDS",
                   help="logs beside log.jsonl: csv, tensorboard (comma-separated; "
                   "tensorboard needs the [tb] extra)")
    o.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the spec: recipe.lr=3e-4, policy.norm=frozen (repeatable)")
