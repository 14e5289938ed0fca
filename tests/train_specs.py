"""Specs the training tests share."""

#: A small MLP on the 8x8 digits, with no dropout: two ways of taking the same steps give
#: the same weights.
PLAIN = """synth Plain
input image: [B, 1, 8, 8]
h = Flatten(image) |> Linear(out=16) |> ReLU
logits = Linear(h, out=10)
output logits
"""
