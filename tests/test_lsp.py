"""The language server, as an editor uses it: `synth lsp` over stdio, spoken to in JSON-RPC.

A scripted client starts the server as a child process, opens a spec, and asks what an
editor asks: diagnostics as the text changes, hover, completion, go to definition.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from synthdsl.editor.analysis import analyse, completions, definition, hover

pytest.importorskip("pygls")

ROOT = Path(__file__).resolve().parent.parent
SPEC = """synth Transfer
input image: [B, 3, 32, 32]
source r = timm("test_resnet", num_classes=0)
feats = r(image)
logits = Linear(feats, out=10)
freeze r
output logits
"""


class Client:
    """A minimal LSP client: Content-Length framed JSON-RPC over the child's pipes."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "synthdsl", "lsp"], cwd=cwd,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.messages: queue.Queue = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.messages.put(json.loads(out.read(length)))

    def send(self, method: str, params: dict, request: bool = True) -> int | None:
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            msg["id"] = self.next_id
        body = json.dumps(msg).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()
        return msg.get("id")

    def wait(self, pred, timeout: float = 120) -> dict:
        while True:
            msg = self.messages.get(timeout=timeout)
            if pred(msg):
                return msg

    def request(self, method: str, params: dict) -> dict:
        rid = self.send(method, params)
        return self.wait(lambda m: m.get("id") == rid)["result"]

    def diagnostics(self, version: int) -> list[dict]:
        return self.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics"
                         and m["params"].get("version") == version)["params"]["diagnostics"]


@pytest.fixture
def client(tmp_path):
    c = Client(tmp_path)
    init = c.request("initialize", {"processId": None, "rootUri": tmp_path.as_uri(),
                                    "capabilities": {}})
    assert init["capabilities"]["hoverProvider"]
    assert init["capabilities"]["definitionProvider"]
    c.send("initialized", {}, request=False)
    yield c
    c.request("shutdown", None)
    c.send("exit", None, request=False)
    c.proc.wait(timeout=30)


def test_a_session_diagnostics_hover_completion_definition(client, tmp_path):
    uri = (tmp_path / "t.synth").as_uri()
    doc = {"uri": uri}
    client.send("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "synth", "version": 1, "text": SPEC}}, request=False)
    assert client.diagnostics(1) == []

    # typing a mistake: the check's own code, message and span
    bad = SPEC.replace("Linear(feats", "Linaer(feats")
    client.send("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                           "contentChanges": [{"text": bad}]}, request=False)
    [d] = client.diagnostics(2)
    assert d["code"] == "S101" and "Linear" in d["message"]
    assert d["range"] == {"start": {"line": 4, "character": 9},
                          "end": {"line": 4, "character": 15}}

    client.send("textDocument/didChange", {"textDocument": {"uri": uri, "version": 3},
                                           "contentChanges": [{"text": SPEC}]}, request=False)
    assert client.diagnostics(3) == []
    h = client.request("textDocument/hover", {"textDocument": doc,
                                              "position": {"line": 4, "character": 11}})
    text = h["contents"]["value"]
    assert "Linear" in text and "[B, 10]" in text and "trainable" in text
    h = client.request("textDocument/hover", {"textDocument": doc,
                                              "position": {"line": 3, "character": 1}})
    assert "feats" in h["contents"]["value"] and "frozen" in h["contents"]["value"]

    items = client.request("textDocument/completion", {
        "textDocument": doc, "position": {"line": 4, "character": 16}})["items"]
    labels = {i["label"] for i in items}  # after `Linear(`: values, layers, operations
    assert {"Linear", "feats", "image", "concat"} <= labels
    items = client.request("textDocument/completion", {
        "textDocument": doc, "position": {"line": 4, "character": 11}})["items"]
    assert "Linear" in {i["label"] for i in items}  # `Li` typed
    assert all(i["label"].startswith("Li") for i in items)

    where = client.request("textDocument/definition", {
        "textDocument": doc, "position": {"line": 4, "character": 18}})
    assert where["uri"] == uri and where["range"]["start"] == {"line": 3, "character": 0}


def test_completion_knows_architectures_cut_points_and_submodules(tmp_path):
    a = analyse(SPEC, str(tmp_path / "t.synth"))
    arch = completions(analyse('synth A\nsource r = timm("resn', None, a), 1, 21)
    assert "resnet18" in {i["label"] for i in arch}
    assert all(i["label"].startswith("resn") for i in arch)
    text = SPEC.replace("feats = r(image)", 'feats = r(image, at="layer')
    line = 3
    cuts = completions(analyse(text, None, a), line, len('feats = r(image, at="layer'))
    assert {"layer1", "layer2.0.conv1"} <= {i["label"] for i in cuts}
    text = SPEC.replace("feats = r(image)", "feats = r.la")
    subs = completions(analyse(text, None, a), line, len("feats = r.la"))
    assert {i["label"] for i in subs} == {"layer1", "layer2", "layer3", "layer4"}
    text = SPEC.replace("feats = r(image)", "feats = r.forw")
    assert {i["label"] for i in completions(analyse(text, None, a), line,
                                            len("feats = r.forw"))} == \
        {"forward_features", "forward_head"}
    start = completions(a, 5, 0)
    assert {"freeze", "train", "output"} <= {i["label"] for i in start}


def test_hover_and_definition_on_the_python_side():
    a = analyse(SPEC, None)
    assert hover(a, 0, 1) is None  # the header's keyword: nothing to say
    h = hover(a, 2, 8)  # the source's name
    assert "timm:test_resnet" in h["value"] and "parameters" in h["value"]
    assert definition(a, 5, 7) == (2, 7, 2, 8)  # `freeze r` -> `source r`
    assert definition(a, 0, 2) is None


def test_without_pygls_the_command_says_what_to_install(monkeypatch, capsys):
    import builtins

    from synthdsl.cli.app import run

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "pygls":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    assert run(["lsp"]) == 2
    assert "pip install 'synthdsl[lsp]'" in capsys.readouterr().err


# ---- the TextMate grammar -----------------------------------------------------------------

GRAMMAR = ROOT / "editors" / "synth.tmLanguage.json"


def tm_tokens(text: str) -> list[tuple[str, str]]:
    """(token, scope) of `text` under the grammar's top-level patterns, tried in order at
    each position as a TextMate engine does for `match` rules (Python's re stands in for
    Oniguruma: the grammar uses only what both accept)."""
    import re

    grammar = json.loads(GRAMMAR.read_text())
    rules = [grammar["repository"][p["include"][1:]] for p in grammar["patterns"]]
    compiled = [(re.compile(r["match"], re.M), r) for r in rules]
    out, i = [], 0
    while i < len(text):
        for rx, rule in compiled:
            m = rx.match(text, i)
            if m and m.end() > i:
                if "captures" in rule:
                    out.append((m.group(1), rule["captures"]["1"]["name"]))
                else:
                    out.append((m.group(), rule["name"]))
                i = m.end()
                break
        else:
            i += 1
    return out


def test_the_textmate_grammar_names_every_keyword_and_scopes_a_spec():
    from synthdsl.lang.parse import KEYWORDS

    grammar = json.loads(GRAMMAR.read_text())
    assert grammar["scopeName"] == "source.synth" and grammar["fileTypes"] == ["synth"]
    for word in KEYWORDS:
        [(tok, scope)] = tm_tokens(word)
        assert tok == word and scope.split(".")[0] in ("keyword", "constant", "storage"), word
    text = (ROOT / "models" / "fusion_vgg_mobilenet.synth").read_text()
    scopes = dict(tm_tokens(text))
    assert scopes['"vgg16"'] == "string.quoted.double.synth"
    assert scopes["freeze"] == "keyword.control.synth"
    assert scopes["|>"] == "keyword.operator.pipe.synth"
    assert scopes["Linear"] == scopes["timm"] == "entity.name.function.synth"
    assert scopes["512"] == "constant.numeric.synth"
    assert any(s == "comment.line.number-sign.synth" and t.startswith("# VGG16")
               for t, s in tm_tokens(text))
    # a `#` inside a string is not a comment; a keyword inside a name is not a keyword
    assert tm_tokens('x = timm("a#b")  # c') == [
        ("=", "keyword.operator.synth"), ("timm", "entity.name.function.synth"),
        ('"a#b"', "string.quoted.double.synth"), ("# c", "comment.line.number-sign.synth")]
    assert tm_tokens("trainable") == []
    assert ("<=", "keyword.operator.synth") in tm_tokens("input t: [B, T<=512] int64")
