"""`synth lsp`: the language server (:mod:`synthdsl.editor.server`), over stdio."""

from __future__ import annotations

import sys

from synthdsl.cli.common import EXIT_OK, EXIT_USAGE


def cmd_lsp(args) -> int:
    try:
        import pygls  # noqa: F401 - only to say what is missing before the server starts
    except ImportError:
        print("synth lsp needs pygls, which is not installed: pip install 'synthdsl[lsp]'",
              file=sys.stderr)
        return EXIT_USAGE
    from synthdsl.editor.server import serve

    serve()
    return EXIT_OK
