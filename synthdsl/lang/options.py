"""The option tables of the language: what each statement may say, in one place.

Each option states its type, its default, its allowed values or range, and what
it means. The check reads these tables to report a wrong option at its span;
the trainer's :class:`~synthdsl.train.recipe.Recipe` derives its fields,
defaults and validation from `RECIPE`; the command line takes its
``--optimizer`` / ``--schedule`` choices from `OPTIMIZERS` / `SCHEDULES`. No
torch here: a syntax check must not need it.

>>> RECIPE["momentum"].expects, RECIPE["momentum"].accepts(1.0)
('a number in [0, 1)', False)
>>> RECIPE["optimizer"].expects
'"adamw", "adam" or "sgd"'
>>> LOSSES["distill"].values, sorted(LOSSES["distill"].options)
(2, ['alpha', 'temperature'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


def spoken(items: Iterable[Any], quote: bool = True) -> str:
    """Items as a sentence names them: ``"a", "b" or "c"``.

    >>> spoken(["cosine", "constant", "step"], quote=False)
    'cosine, constant or step'
    """
    words = [f'"{i}"' if quote else str(i) for i in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class Option:
    """One option a statement takes.

    ``types`` are the Python types of its value (a bool is never taken for a
    number); ``choices`` the values allowed, if it is one of a few words;
    ``low`` / ``high`` its range (``*_open``: the bound itself is excluded);
    ``each``: a number or a non-empty list of numbers, each in the range.
    ``expects`` says it the way a message does ("a whole number > 0"); it is
    spelled from the above unless given.
    """

    name: str
    types: tuple[type, ...]
    default: Any = None
    description: str = ""
    choices: tuple[Any, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    each: bool = False
    spelled: str | None = field(default=None, repr=False)

    def in_range(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def accepts(self, value: Any) -> bool:
        """Whether `value` is of this option's type, among its choices and in its range."""
        if self.each:
            values = value if isinstance(value, (list, tuple)) else [value]
            return bool(values) and all(_is_number(x) and self.in_range(x) for x in values)
        if isinstance(value, bool) and bool not in self.types:
            return False
        if not isinstance(value, self.types):
            return False
        if self.choices:
            return value in self.choices
        return not _is_number(value) or self.in_range(value)

    @property
    def expects(self) -> str:
        """What the option takes, as a diagnostic says it: "expects a number > 0"."""
        if self.spelled is not None:
            return self.spelled
        if self.choices:
            return spoken(self.choices)
        if self.types == (bool,):
            return "true or false"
        what = "a whole number" if float not in self.types else "a number"
        if self.low is not None and self.high is not None:
            return (f"{what} in {'(' if self.low_open else '['}{_n(self.low)}, "
                    f"{_n(self.high)}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '≥'} {_n(self.low)}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '≤'} {_n(self.high)}"
        return what

    @property
    def type(self) -> type:
        """The type of the value once read (a float option also takes a whole number)."""
        return float if float in self.types else self.types[0]


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _table(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


_NUMBER = (int, float)

#: What a `recipe` statement may say. All but the last three say how to optimise (the
#: trainer's `Recipe`; the command line overrides them); `PREPROCESS_KEYS` say how
#: images are read (see synthdsl.train.preprocess).
RECIPE = _table(
    Option("epochs", (int,), 10, "passes over the training data", low=0, low_open=True),
    Option("lr", _NUMBER, 1e-3, "the base learning rate", low=0, low_open=True),
    Option("batch_size", (int,), 64, "samples per step", low=0, low_open=True),
    Option("optimizer", (str,), "adamw", "adamw, adam, or sgd (with momentum)",
           choices=("adamw", "adam", "sgd")),
    Option("schedule", (str,), "cosine", "the learning rate over the run: cosine, constant, "
           "or step (×0.1 at 50% and 75%)", choices=("cosine", "constant", "step")),
    Option("weight_decay", _NUMBER, 0.0, "weight decay (decoupled for adamw)", low=0),
    Option("momentum", _NUMBER, 0.9, "sgd's momentum", low=0, high=1, high_open=True),
    Option("warmup_epochs", (int,), 0, "epochs of linear warm-up", low=0),
    Option("label_smoothing", _NUMBER, 0.0, "label smoothing of the cross-entropy",
           low=0, high=1, high_open=True),
    Option("seed", (int,), 0, "the seed of initialisation, shuffling and augmentation"),
    Option("layer_decay", _NUMBER, 1.0, "layer-wise learning-rate decay (timm's): each "
           "source parameter's rate × decay^(its depth from the top); 1: off",
           low=0, low_open=True, high=1),
    Option("decay_norm_bias", (bool,), True, "false: no weight decay on 1-D parameters "
           "(biases, normalisation weights), as timm's create_optimizer does"),
    Option("clip_grad", _NUMBER, 0.0, "clip the gradients' total norm to this; 0: off",
           low=0),
    Option("accum_steps", (int,), 1, "batches whose gradients are summed before each "
           "optimizer step", low=0, low_open=True),
    Option("ema", _NUMBER, 0.0, "the decay of an exponential moving average of the weights "
           "(timm's ModelEmaV3), evaluated and saved beside the model; 0: none",
           low=0, high=1, high_open=True),
    Option("ema_warmup", (bool,), False, "warm the EMA's decay up from 0 over the first "
           "steps (ModelEmaV3's use_warmup)"),
    Option("patience", (int,), 0, "stop after this many validations without a better "
           "accuracy; 0: never", low=0),
    Option("mixup", _NUMBER, 0.0, "timm's Mixup alpha; 0: off", low=0),
    Option("cutmix", _NUMBER, 0.0, "timm's CutMix alpha; 0: off", low=0),
    Option("randaugment", (str,), None, "a RandAugment policy in timm's spelling, e.g. "
           "\"rand-m9-mstd0.5\""),
    Option("mean", (*_NUMBER, list, tuple), None, "the normalisation mean: one number, or "
           "one per input channel", each=True,
           spelled="a number or a list of numbers, one per input channel"),
    Option("std", (*_NUMBER, list, tuple), None, "the normalisation std: one number, or "
           "one per input channel", each=True, low=0, low_open=True,
           spelled="a number > 0 or a list of them, one per input channel"),
    Option("normalize", (bool,), None, "false: feed pixel values in [0, 1] as they are"),
)
#: Recipe options that say how images are read, not how to optimise.
PREPROCESS_KEYS = ("mean", "std", "normalize")
#: What the command line's --optimizer and --schedule may say.
OPTIMIZERS: tuple[str, ...] = RECIPE["optimizer"].choices
SCHEDULES: tuple[str, ...] = RECIPE["schedule"].choices


@dataclass(frozen=True)
class LossKind:
    """A term a `loss` statement can add: how many values it reads, and its options."""

    name: str
    values: int
    options: dict[str, Option]
    description: str = ""


#: The terms a `loss` statement can add.
LOSSES = {loss.name: loss for loss in (
    LossKind("ce", 1, _table(
        Option("label_smoothing", _NUMBER, None, "label smoothing (default: the recipe's)",
               low=0, high=1, high_open=True),
        Option("weight", _NUMBER, 1.0, "the term's weight in the total", low=0)),
        "cross-entropy of class scores against the labels"),
    LossKind("distill", 2, _table(
        Option("temperature", _NUMBER, 4.0, "the softmax temperature", low=0, low_open=True),
        Option("alpha", _NUMBER, 0.7, "the share of the soft (teacher) term", low=0, high=1)),
        "a student's scores against a teacher's (Hinton et al.), plus cross-entropy"),
    LossKind("feature", 2, _table(
        Option("weight", _NUMBER, 1.0, "the term's weight in the total", low=0)),
        "mean squared error between two values of one shape"),
    LossKind("contrastive", 2, _table(
        Option("temperature", _NUMBER, 0.07, "the softmax temperature of the cosine "
               "similarities (the first, when it is learned)", low=0, low_open=True),
        Option("weight", _NUMBER, 1.0, "the term's weight in the total", low=0),
        Option("learn_temperature", (bool,), False, "learn the temperature, as CLIP does: a "
               "trainable logit scale log(1/temperature), at most log(100)")),
        "CLIP's symmetric InfoNCE between paired embeddings [B, D]; needs no labels"),
)}

#: Options a `train ... with` statement takes.
TRAIN_OPTIONS = _table(
    Option("lr_mult", _NUMBER, 1.0, "multiplies the learning rate of these parameters",
           low=0, spelled="a learning-rate multiplier (≥ 0)"),
    Option("weight_decay", _NUMBER, None, "the weight decay of these parameters (default: "
           "the recipe's)", low=0, spelled="a weight decay (≥ 0) for these parameters"),
)

#: Adapters `adapt ... with METHOD(...)` can add, and their options.
ADAPT_METHODS: dict[str, dict[str, Option]] = {
    "lora": _table(
        Option("rank", (int,), 8, "the rank of the low-rank update", low=0, low_open=True),
        Option("alpha", _NUMBER, None, "the update's scale is alpha / rank (default: the "
               "rank)", low=0, low_open=True),
        Option("dropout", _NUMBER, 0.0, "dropout on the adapter's input while training "
               "(as PEFT's lora_dropout)", low=0, high=1, high_open=True),
        Option("name", (str,), "default", "the adapter's name: a layer may hold several "
               "named adapters (parameters lora_NAME_A and lora_NAME_B; the default "
               "adapter's are lora_A and lora_B)")),
    "bias": {},
    "prune": _table(
        Option("ratio", _NUMBER, 0.5, "the fraction of each named layer's output channels "
               "(or features) removed", low=0, low_open=True, high=1, high_open=True),
        Option("importance", (str,), "l1", "how channels are ranked: the L1 or L2 norm of "
               "their weights, or Taylor (weight × gradient on a training batch)",
               choices=("l1", "l2", "taylor")),
        Option("macs", _NUMBER, None, "instead of ratio: the share of the whole model's "
               "MACs to keep; the named layers are pruned step by step until the model's "
               "MACs are at most that", low=0, low_open=True, high=1, high_open=True),
        Option("heads", _NUMBER, None, "instead of ratio: the share of the heads of the named "
               "attention layers (their qkv projections) removed, whole heads at a time",
               low=0, low_open=True, high=1, high_open=True)),
    "quantize": _table(
        Option("mode", (str,), "dynamic", "int8 on the CPU: dynamic (Linear weights, "
               "activations quantised on the fly), static (calibrated on training batches) "
               "or qat (quantisation-aware fine-tuning)",
               choices=("dynamic", "static", "qat"))),
}

#: The adapt methods that compress a trained model rather than add tensors to train.
COMPRESS_METHODS = ("prune", "quantize")

#: Named behaviours a spec can choose with `policy NAME = "value"` (first is the default).
POLICIES = _table(
    Option("norm", (str,), "follow", "normalisation layers: follow the freeze rules, stay "
           "frozen, or train", choices=("follow", "frozen", "train")),
)

#: What an `inherit ... with` statement may say. Their values are checked by the
#: inheritance pass (synthdsl.checks.inherit), whose messages name each one.
INHERIT_OPTIONS = _table(
    Option("map", (str,), "name", "pair tensors by name or by order, or translate one "
           "zoo's names into another's (hf_vit_to_timm: a Transformers ViT into timm's)",
           choices=("name", "order", "hf_vit_to_timm")),
    Option("rename", (tuple,), (), "regex and replacement pairs applied to the donor's names"),
    Option("rows", (int, tuple), None, "the first N rows, or a list of row indices"),
    Option("adapt", (str,), None, "how a tensor of another shape is made to fit",
           choices=("channels_mean", "channels_sum", "interpolate", "fit")),
    Option("strict", (bool,), True, "every tensor on both sides must be paired"),
    Option("prefix_tokens", (int,), None, "class and register tokens of a position "
           "embedding, kept as they are when it is interpolated", low=0),
)
