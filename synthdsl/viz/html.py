"""The view as one self-contained HTML page: inline SVG drawn by vanilla JavaScript.

The page makes no network request of any kind: its script, style and data are
inline, its icon is a ``data:`` URL, and a Content-Security-Policy of
``default-src 'none'`` forbids anything else. The view model is embedded as JSON
in a ``<script type="application/json">`` element, with ``<``, ``>``, ``&``,
U+2028 and U+2029 written as ``\\u`` escapes, so no string from a spec can end
the element (``</script>``) or be read as markup; the script sets every string
with ``textContent``/``setAttribute``, never as HTML.

The layered order is computed here (:mod:`synthdsl.viz.layout`); the page packs
the rows itself, so it can lay out again when a source is collapsed or expanded.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources

from synthdsl.viz.layout import layered_order
from synthdsl.viz.view import View

_PLACEHOLDER = re.compile(r"\{\{(TITLE|CSS|JS|DATA)\}\}")
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _asset(name: str) -> str:
    return resources.files("synthdsl.viz").joinpath(name).read_text("utf-8")


def embed_json(data) -> str:
    """JSON that is safe inside a <script> element (and inside JavaScript source)."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def page_data(view: View) -> dict:
    data = view.to_dict()
    data["layout"] = {k: [r, x] for k, (r, x) in layered_order(view).items()}
    return data


def render_html(view: View) -> str:
    values = {"TITLE": html.escape(f"synth {view.name}", quote=True),
              "CSS": _asset("viz.css").strip(),
              "JS": _asset("viz.js").strip(),
              "DATA": embed_json(page_data(view))}
    # one pass, so text substituted for one placeholder is never searched for another
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], _asset("template.html"))
