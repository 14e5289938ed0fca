"""The grammar of .synth specs (`synth.lark`), shipped as package data."""
