"""End to end: the HTML page in a real headless Chromium, driven over the DevTools protocol.

The page is opened from a file:// URL with background networking off; the test
waits for it to be ready, counts the drawn nodes, clicks a node and reads its
details (spec line included), collapses and expands a source, searches by name,
and checks that injected names stayed text, that nothing reached the console,
and that the page made no request at all besides loading itself.

Skipped, with the reason, only where no Chromium is installed (`make test`
installs Debian's `chromium`; SYNTH_CHROMIUM names another binary).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from synthdsl.checks import check_graph
from synthdsl.graph import build_graph
from synthdsl.lang.parse import parse_spec
from synthdsl.viz import build_view, render_graph

CHROMIUM = os.environ.get("SYNTH_CHROMIUM") or next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome",
                                            "google-chrome-stable")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium installed: `make test` installs Debian's `chromium` "
    "(apt-get install -y chromium); or set SYNTH_CHROMIUM to a Chrome/Chromium binary")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--disable-breakpad",
         "--disable-domain-reliability", "--no-default-browser-check", "--mute-audio",
         "--metrics-recording-only", "--password-store=basic", "--use-mock-keychain",
         "--window-size=1400,1000", "--remote-debugging-port=0")

INJECT_NAME = '<img src=x onerror="window.__pwned=1">'
INJECT_LABEL = "</script><script>window.__pwned=2</script>\u2028\u2029"
INJECT_WEIGHTS = "<img src=y onerror=window.__pwned=3>.safetensors"
INJECT_OPTION = "</script><svg onload=window.__pwned=4>"

SPEC = f"""\
synth Browser
input image: [B, 3, 32, 32]
source net = timm("test_resnet", num_classes=10)
source bad = timm("test_resnet", weights="{INJECT_WEIGHTS}")
stem   = net.conv1(image)
feats  = net.layer1(stem)
pooled = GlobalAvgPool(feats)
hidden = Linear(pooled, out=16) |> GELU(approximate="{INJECT_OPTION}")
logits = Linear(hidden, out=10)
freeze net.conv1
output logits
"""


class Chrome:
    """A headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, tmp: Path) -> None:
        import websocket  # websocket-client, a dev extra

        self.profile = tmp / "profile"
        self.log = open(tmp / "chromium.log", "wb")
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"], stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("Chromium did not start: "
                                   + (tmp / "chromium.log").read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            targets = json.load(r)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params):
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def js(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        while time.monotonic() < deadline:
            value = self.js(guarded)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression}")

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=0 if kind == "mouseMoved" else 1)

    def key(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                      windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                try:
                    self.send("Browser.close")
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
                self.ws.close()
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.log.close()


def centre_of(selector_js: str) -> str:
    return (f"(() => {{ const e = {selector_js}; if (!e) return null; "
            "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")


def node_js(node_id: str) -> str:
    return ("Array.from(document.querySelectorAll('#layer-nodes .node'))"
            f".find(e => e.getAttribute('data-id') === {json.dumps(node_id)})")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    g = check_graph(build_graph(parse_spec(SPEC)), raise_errors=False)
    # what a spec cannot spell but a hand-built graph (or a future syntax) can
    g.add_node(INJECT_NAME, kind="op", name=INJECT_NAME, label=INJECT_LABEL, inputs=("logits",),
               options={"note": INJECT_LABEL})
    g.add_edge("logits", INJECT_NAME, kind="data", shape=("B", INJECT_LABEL))
    g.add_edge("net", "hidden.0", kind="inherit", tensors=2, params=1040, mode="partial")
    view = build_view(g)
    html = render_graph(g, "html")
    path = tmp / "viz.html"
    path.write_text(html, "utf-8")
    chrome = Chrome(tmp)
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            chrome.send(f"{domain}.enable")
        url = path.resolve().as_uri()
        chrome.send("Page.navigate", url=url)
        chrome.wait_for("document.documentElement.getAttribute('data-ready') === 'true' "
                        "&& !!window.synthViz && window.synthViz.ready")
        yield chrome, view, url
    finally:
        chrome.close()


def test_page_draws_every_node_and_edge(page):
    chrome, view, _ = page
    assert chrome.js("window.synthViz.nodeCount()") == len(view.nodes)
    assert chrome.js("document.querySelectorAll('#layer-edges .edge').length") == len(view.edges)
    assert chrome.js("document.querySelectorAll('#layer-clusters .cluster').length") == 2
    # frozen is marked by a dashed border and a lock, not by colour alone
    stem = chrome.js(f"(() => {{ const e = {node_js('stem')}; return [e.getAttribute('class'), "
                     "!!e.querySelector('.lock'), getComputedStyle(e.querySelector('rect.box'))"
                     ".strokeDasharray]; })()")
    assert "state-frozen" in stem[0] and stem[1] is True and stem[2] not in ("", "none")
    assert chrome.js("document.querySelectorAll('#legend .item').length") >= 8
    # the edge drawn for a hand-built inherit edge is the dashed purple kind, labelled
    inherit = chrome.js("(() => { const e = document.querySelector('.edge.kind-inherit'); "
                        "return e && e.textContent; })()")
    assert "2 tensors" in inherit and "1,040 params" in inherit and "partial" in inherit


def test_click_a_node_shows_its_details_and_spec_line(page):
    chrome, view, _ = page
    xy = chrome.wait_for(centre_of(node_js("feats")))
    chrome.click(*xy)
    text = chrome.wait_for("(() => { const t = document.getElementById('details').innerText; "
                           "return t.includes('feats') && t; })()")
    assert "part of net" in text
    assert "[B, 16, 8, 8]" in text or "[B, " in text
    assert "<spec>:6" in text
    assert "feats  = net.layer1(stem)" in text
    assert chrome.js("document.querySelectorAll('#layer-nodes .node.selected').length") == 1
    # the failing source shows its message, the path from the spec as plain text
    xy = chrome.wait_for(centre_of(node_js("bad")))
    chrome.click(*xy)
    text = chrome.wait_for("(() => { const t = document.getElementById('details').innerText; "
                           "return t.includes('S203') && t; })()")
    assert INJECT_WEIGHTS in text


def test_collapse_and_expand_a_source(page):
    chrome, view, _ = page
    before = chrome.js("window.synthViz.nodeCount()")
    xy = chrome.wait_for(centre_of(
        "document.querySelector('#layer-clusters .toggle[data-toggle=\"net\"] rect')"))
    chrome.click(*xy)
    chrome.wait_for(f"window.synthViz.nodeCount() === {before - 2}")
    assert chrome.js("window.synthViz.collapsed()") == ["net"]
    # the collapsed source still shows its whole count; its badge expands it again
    assert "collapsed" in chrome.js(f"{node_js('net')}.getAttribute('class')")
    xy = chrome.wait_for(centre_of(f"{node_js('net')}.querySelector('.badge rect')"))
    chrome.click(*xy)
    chrome.wait_for(f"window.synthViz.nodeCount() === {before}")


def test_search_by_name(page):
    chrome, view, _ = page
    xy = chrome.wait_for(centre_of("document.getElementById('search')"))
    chrome.click(*xy)
    chrome.send("Input.insertText", text="hidden")
    status = chrome.wait_for("(() => { const s = document.getElementById('search-status')"
                             ".textContent; return s.includes('match') && s; })()")
    assert status.startswith("2 matches")
    assert chrome.js("document.querySelectorAll('#layer-nodes .node.match').length") == 2
    chrome.key("Enter", 13)
    chrome.wait_for("document.getElementById('details').innerText.includes('hidden.0')")
    chrome.key("Escape", 27)
    chrome.wait_for("document.getElementById('search-status').textContent === ''")


def test_injected_names_stay_text(page):
    chrome, view, _ = page
    assert chrome.js("window.__pwned === undefined") is True
    assert chrome.js("document.querySelectorAll('img, iframe, object, embed').length") == 0
    assert chrome.js("document.querySelectorAll('script').length") == 2
    assert chrome.js("document.querySelectorAll('#canvas svg, #details svg, #banner *').length "
                     "=== document.querySelectorAll('#banner div').length")
    assert chrome.js("Array.from(document.querySelectorAll('*')).some(e => "
                     "Array.from(e.attributes).some(a => a.name.startsWith('on')))") is False
    shown = chrome.js(f"{node_js(INJECT_NAME)}.querySelector('text.name').textContent")
    assert shown == INJECT_NAME
    label = view.node(INJECT_NAME).what  # line separators made visible: `\u2028`
    assert label == "</script><script>window.__pwned=2</script>\\u2028\\u2029"
    shown = chrome.js(f"{node_js(INJECT_NAME)}.querySelector('text.what').textContent")
    assert shown == view.node(INJECT_NAME).detail and shown.startswith(label + "(note=")
    chrome.js(f"window.synthViz.select({json.dumps(INJECT_NAME)})")
    details = chrome.js("document.getElementById('details').textContent")
    assert INJECT_NAME in details and label in details
    chrome.js("window.synthViz.select('hidden.1')")
    assert json.dumps(INJECT_OPTION, ensure_ascii=False) in \
        chrome.js("document.getElementById('details').textContent")
    assert chrome.js("document.title") == "synth Browser"


def test_no_console_errors_and_no_network_requests(page):
    chrome, view, url = page
    chrome.js("1")  # drain events that arrived since the last command
    problems = [e for e in chrome.events if e["method"] == "Runtime.exceptionThrown"
                or (e["method"] == "Runtime.consoleAPICalled"
                    and e["params"]["type"] in ("error", "warning", "assert"))
                or (e["method"] == "Log.entryAdded"
                    and e["params"]["entry"]["level"] in ("error", "warning"))]
    assert problems == []
    requests = [e["params"]["request"]["url"] for e in chrome.events
                if e["method"] == "Network.requestWillBeSent"]
    assert requests and all(u == url or u.startswith("data:") for u in requests), requests
    assert chrome.js("performance.getEntriesByType('resource').length") == 0


MERMAID_JS = os.environ.get("SYNTH_MERMAID_JS")


@pytest.mark.skipif(not MERMAID_JS, reason="set SYNTH_MERMAID_JS to a local mermaid.min.js "
                    "(e.g. from `npm pack mermaid`) to check the Mermaid output with Mermaid")
def test_mermaid_output_parses_and_renders_with_mermaid(tmp_path):
    from synthdsl.pipeline import check_spec

    g = check_graph(build_graph(parse_spec(SPEC)), raise_errors=False)
    g.add_node(INJECT_NAME, kind="op", name=INJECT_NAME, label=INJECT_LABEL, inputs=("logits",))
    g.add_edge("logits", INJECT_NAME, kind="data", shape=("B", INJECT_LABEL))
    g.add_edge("net", "hidden.0", kind="inherit", tensors=2, params=1040, mode="strict")
    texts = [render_graph(g, "mmd"), render_graph(g, "mmd", expand=["net"], depth=2)]
    texts += [render_graph(check_spec(p, raise_errors=False), "mmd")
              for p in sorted((Path(__file__).parent.parent / "models").glob("*.synth"))[:4]]
    page = tmp_path / "mermaid.html"
    page.write_text(f'<html><body><script src="{Path(MERMAID_JS).resolve().as_uri()}">'
                    "</script></body></html>")
    chrome = Chrome(tmp_path)
    try:
        chrome.send("Runtime.enable")
        chrome.send("Page.enable")
        chrome.send("Page.navigate", url=page.as_uri())
        chrome.wait_for("!!window.mermaid")
        chrome.js("mermaid.initialize({startOnLoad: false, securityLevel: 'strict'})")
        for i, text in enumerate(texts):
            result = chrome.js(f"""(async () => {{ try {{
                const out = await mermaid.render('g{i}', {json.dumps(text)});
                return (out.svg.match(/<img/g) || []).length === 0 ? 'ok' : 'img';
            }} catch (e) {{ return 'error: ' + e.message; }} }})()""")
            assert result == "ok", (result, text[:500])
        assert chrome.js("window.__pwned === undefined") is True
    finally:
        chrome.close()
