"""Editor support: a language server for .synth specs (`synth lsp`).

:mod:`synthdsl.editor.analysis` answers what an editor asks (diagnostics, hover,
completion, definitions) as plain functions; :mod:`synthdsl.editor.server` speaks the
Language Server Protocol over stdio with pygls (the ``lsp`` extra).
"""
