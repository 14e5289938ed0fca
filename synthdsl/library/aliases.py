"""Layer and operation names from other frameworks (Keras, PyTorch spellings, ...) that
users write from habit, mapped to synthdsl's own: "did you mean" cannot find ``Linear`` for
``Dense`` by spelling alone.

>>> known_as("Dense")
'Linear'
>>> known_as("conv2d")
'Conv2d'
>>> known_as("Linear") is None
True
"""

from __future__ import annotations

#: Another framework's name -> synthdsl's layer or operation.
ALIASES: dict[str, str] = {
    "Dense": "Linear",
    "FullyConnected": "Linear",
    "FC": "Linear",
    "Conv2D": "Conv2d",
    "Convolution2D": "Conv2d",
    "Conv": "Conv2d",
    "BatchNormalization": "BatchNorm2d",
    "BatchNorm": "BatchNorm2d",
    "LayerNormalization": "LayerNorm",
    "MaxPooling2D": "MaxPool2d",
    "MaxPool2D": "MaxPool2d",
    "AveragePooling2D": "AvgPool2d",
    "AvgPool2D": "AvgPool2d",
    "GlobalAveragePooling2D": "GlobalAvgPool",
    "GlobalAvgPool2d": "GlobalAvgPool",
    "AdaptiveAvgPool2d": "GlobalAvgPool",
    "GlobalMaxPooling2D": "GlobalMaxPool",
    "AdaptiveMaxPool2d": "GlobalMaxPool",
    "Activation": "ReLU",
    "Swish": "SiLU",
    "Sequential": "|> (a pipe)",
    "Concatenate": "concat",
    "cat": "concat",
    "Add": "add",
    "sum": "add",
    "Multiply": "multiply",
    "mul": "multiply",
    "Reshape": "reshape",
    "view": "reshape",
    "interpolate": "resize",
    "UpSampling2D": "Upsample",
    "UpSampling1D": "Upsample",
    "MultiHeadAttention": "MultiheadAttention",
    "SelfAttention": "MultiheadAttention",
    "MultiHeadCrossAttention": "CrossAttention",
    "ClsToken": "cls_token",
    "cls": "cls_token",
    "chunk": "split",
    "Resizing": "resize",
    "Average": "mean",
    "Maximum": "max",
}


def known_as(name: str, names=None) -> str | None:
    """synthdsl's name for `name` when it is another framework's spelling (exact, then
    ignoring case), else None. With `names`, only a name among them is offered."""
    target = ALIASES.get(name)
    if target is None:
        lowered = {k.lower(): v for k, v in ALIASES.items()}
        target = lowered.get(name.lower())
    if target is None and names is not None:
        by_case = {n.lower(): n for n in names}
        target = by_case.get(name.lower())
        if target == name:
            target = None
    if target is not None and names is not None and target not in names and "|>" not in target:
        return None
    return target


def alias_hint(name: str, names) -> str | None:
    """"did you mean 'Linear'?" for ``Dense``: a hint from :data:`ALIASES`, or None."""
    target = known_as(name, tuple(names))
    if target is None:
        return None
    if "|>" in target:
        return "there is no Sequential: chain layers with |>, e.g. `x |> Conv2d(out=8) |> ReLU`"
    if target.lower() == name.lower():  # a slip of case, not another framework's word
        return f"did you mean '{target}'?"
    return f"did you mean '{target}'? (synthdsl's name for {name})"
