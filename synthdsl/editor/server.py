"""`synth lsp`: the language server of .synth specs, over stdio (pygls).

Diagnostics as you type (the codes, messages and spans `synth check` prints), hover with a
value's shape and parameter counts, completion of names, layers, operations, kinds of
source, timm and torchvision architectures and cut points, and go to definition. Each
request is answered by :mod:`synthdsl.editor.analysis`. Needs pygls
(``pip install synthdsl[lsp]``).
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from synthdsl.editor.analysis import (Analysis, analyse, completions, definition, diagnostics,
                                      hover)

#: LSP completion item kinds for what :func:`completions` offers.
_KINDS = {"input": 6, "value": 6, "source": 9, "layer": 7, "operation": 3, "keyword": 14,
          "architecture": 9, "cut point": 5, "submodule": 5, "method": 2, "constructor": 4}
_SEVERITY = {"error": 1, "warning": 2}


def _path(uri: str) -> str | None:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else None


def make_server():
    """The pygls server, its features registered."""
    from importlib import metadata

    from lsprotocol import types as t
    from pygls.lsp.server import LanguageServer

    server = LanguageServer("synth-lsp", metadata.version("synthdsl"),
                            text_document_sync_kind=t.TextDocumentSyncKind.Full)
    analyses: dict[str, Analysis] = {}

    def rng(r) -> t.Range:
        return t.Range(t.Position(r[0], r[1]), t.Position(r[2], r[3]))

    def refresh(uri: str) -> None:
        doc = server.workspace.get_text_document(uri)
        a = analyse(doc.source, _path(uri), analyses.get(uri))
        analyses[uri] = a
        server.text_document_publish_diagnostics(t.PublishDiagnosticsParams(
            uri=uri, version=doc.version, diagnostics=[
                t.Diagnostic(range=rng(d["range"]), message=d["message"], code=d["code"],
                             severity=t.DiagnosticSeverity(_SEVERITY.get(d["severity"], 1)),
                             source="synth")
                for d in diagnostics(a)]))

    @server.feature(t.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls, params: t.DidOpenTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(t.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls, params: t.DidChangeTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(t.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls, params: t.DidSaveTextDocumentParams) -> None:
        refresh(params.text_document.uri)

    @server.feature(t.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls, params: t.DidCloseTextDocumentParams) -> None:
        analyses.pop(params.text_document.uri, None)
        server.text_document_publish_diagnostics(t.PublishDiagnosticsParams(
            uri=params.text_document.uri, diagnostics=[]))

    def current(uri: str) -> Analysis:
        doc = server.workspace.get_text_document(uri)
        a = analyses.get(uri)
        if a is None or a.text != doc.source:
            a = analyses[uri] = analyse(doc.source, _path(uri), a)
        return a

    @server.feature(t.TEXT_DOCUMENT_HOVER)
    def on_hover(ls, params: t.HoverParams) -> t.Hover | None:
        h = hover(current(params.text_document.uri), params.position.line,
                  params.position.character)
        if h is None:
            return None
        return t.Hover(contents=t.MarkupContent(kind=t.MarkupKind.Markdown, value=h["value"]),
                       range=rng(h["range"]) if h["range"] else None)

    @server.feature(t.TEXT_DOCUMENT_COMPLETION,
                    t.CompletionOptions(trigger_characters=[".", '"', "(", " "]))
    def on_completion(ls, params: t.CompletionParams) -> t.CompletionList:
        items = completions(current(params.text_document.uri), params.position.line,
                            params.position.character)
        return t.CompletionList(is_incomplete=False, items=[
            t.CompletionItem(label=i["label"], detail=i["detail"] or None,
                             kind=t.CompletionItemKind(_KINDS.get(i["kind"], 1)))
            for i in items])

    @server.feature(t.TEXT_DOCUMENT_DEFINITION)
    def on_definition(ls, params: t.DefinitionParams) -> t.Location | None:
        r = definition(current(params.text_document.uri), params.position.line,
                       params.position.character)
        return None if r is None else t.Location(uri=params.text_document.uri, range=rng(r))

    return server


def serve() -> None:
    """Run the server on stdin and stdout until the client exits."""
    make_server().start_io()
