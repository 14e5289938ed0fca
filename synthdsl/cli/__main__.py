"""`python -m synthdsl.cli ...` is the `synth` command."""

from synthdsl.cli.app import main

main()
