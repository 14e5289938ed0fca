"""The `synth` command line; nothing else in synthdsl imports it."""

from synthdsl.cli.app import main, run

__all__ = ["main", "run"]
