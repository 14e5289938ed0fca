"""The option tables of the language: what each statement may say.

Torch-free: the check reads these tables to report a wrong option at its span,
the trainer and the command line read the same tables.
"""

from __future__ import annotations


def _numbers(value, ok) -> bool:
    """A number, or a non-empty list of numbers, each passing `ok`."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return bool(values) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                and ok(x) for x in values)


#: Named behaviours a spec can choose with `policy NAME = "value"` (first is the default).
POLICIES = {"norm": ("follow", "frozen", "train")}
#: Adapters `adapt ... with METHOD(...)` can add, and their options.
ADAPT_METHODS = {"lora": ("rank", "alpha"), "bias": ()}
#: What a `recipe` may say: option -> (types, check, description).
RECIPE = {
    "epochs": ((int,), lambda v: v > 0, "a whole number > 0"),
    "lr": ((int, float), lambda v: v > 0, "a number > 0"),
    "batch_size": ((int,), lambda v: v > 0, "a whole number > 0"),
    "optimizer": ((str,), lambda v: v in ("adamw", "adam", "sgd"), '"adamw", "adam" or "sgd"'),
    "schedule": ((str,), lambda v: v in ("cosine", "constant", "step"),
                 '"cosine", "constant" or "step"'),
    "weight_decay": ((int, float), lambda v: v >= 0, "a number ≥ 0"),
    "momentum": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "warmup_epochs": ((int,), lambda v: v >= 0, "a whole number ≥ 0"),
    "label_smoothing": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "seed": ((int,), lambda v: True, "a whole number"),
    # how images are read (synthdsl.train.data.preprocess_for), not how to optimise
    "mean": ((int, float, list, tuple), lambda v: _numbers(v, lambda x: True),
             "a number or a list of numbers, one per input channel"),
    "std": ((int, float, list, tuple), lambda v: _numbers(v, lambda x: x > 0),
            "a number > 0 or a list of them, one per input channel"),
    "normalize": ((bool,), lambda v: True, "true or false"),
}
#: The terms a `loss` statement can add: name -> (number of values, options).
LOSSES = {"ce": (1, {"label_smoothing": "a number in [0, 1)", "weight": "a number ≥ 0"}),
          "distill": (2, {"temperature": "a number > 0", "alpha": "a number in [0, 1]"}),
          "feature": (2, {"weight": "a number ≥ 0"})}
#: Options a `train ... with` statement takes.
TRAIN_OPTIONS = {"lr_mult": "a learning-rate multiplier (≥ 0)",
                 "weight_decay": "a weight decay (≥ 0) for these parameters"}
#: What an `inherit ... with` statement may say.
INHERIT_OPTIONS = ("map", "rename", "rows", "adapt", "strict", "prefix_tokens")
