"""``python -m synthdsl``: the `synth` command."""

from synthdsl.cli.app import main

main()
