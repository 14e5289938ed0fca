/* synthdsl viz: draws the embedded view model as SVG. Offline, no libraries.
 * Every string from the spec is set with textContent or setAttribute, never parsed as markup. */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var DATA = JSON.parse(document.getElementById("synth-data").textContent);
  var LOCK = "\uD83D\uDD12", WARN = "\u26A0";
  var RANK_GAP = 54, NODE_GAP = 26, CHAR_W = 6.6, LINE_H = 15, UNIT = 200;

  var nodes = DATA.nodes, clusters = DATA.clusters, hints = DATA.layout || {};
  var byId = new Map(), order = new Map(), clusterById = new Map(), clusterOf = new Map();
  nodes.forEach(function (n, i) { byId.set(n.id, n); order.set(n.id, i); });
  clusters.forEach(function (c) {
    clusterById.set(c.id, c);
    c.members.forEach(function (m, i) { if (i > 0) clusterOf.set(m, c.id); });
  });
  var collapsed = new Set(clusters.filter(function (c) { return c.collapsed; }).map(function (c) { return c.id; }));
  var state = { selected: null, query: "", matchIndex: -1, k: 1, tx: 20, ty: 20, pos: new Map(), visible: [] };

  var svg = document.getElementById("canvas");
  var viewport = document.getElementById("viewport");
  var layerClusters = document.getElementById("layer-clusters");
  var layerEdges = document.getElementById("layer-edges");
  var layerNodes = document.getElementById("layer-nodes");
  var details = document.getElementById("details");

  function el(tag, attrs, parent) {
    var e = document.createElementNS(SVGNS, tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (parent) parent.appendChild(e);
    return e;
  }
  function svgText(parent, x, y, str, cls) {
    var t = el("text", { x: x, y: y }, parent);
    if (cls) t.setAttribute("class", cls);
    t.textContent = str;
    return t;
  }
  function html(tag, text, parent, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(n) { return Number(n).toLocaleString("en-US"); }
  function shortCount(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + "B";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return fmt(n);
  }
  function hiddenIn(id) { return clusterOf.has(id) && collapsed.has(clusterOf.get(id)); }
  function rep(id) { return hiddenIn(id) ? clusterOf.get(id) : id; }

  /* ---- what is shown -------------------------------------------------------------- */

  function nodeLines(n) {
    var lines = [n.title];
    lines.push((n.kind === "layer" || n.kind === "op") && n.detail ? n.detail : n.what);
    var meta = [];
    if (n.shape) meta.push("\u2192 " + n.shape);
    if (n.counts && n.counts.params) {
      var s = shortCount(n.counts.params) + " params";
      if (n.state === "frozen" || n.state === "partial" || n.state === "unused") s += " \u00b7 " + n.state;
      meta.push(s);
    }
    if (meta.length) lines.push(meta.join("  "));
    if (collapsed.has(n.id)) {
      var c = clusterById.get(n.id);
      lines.push("collapsed: " + (c.members.length - 1) + " hidden");
    }
    if (n.status === "error") {
      var m = n.messages.filter(function (x) { return x.severity === "error"; })[0];
      if (m) lines.push(WARN + " " + m.code + ": " + (m.message.length > 48 ? m.message.slice(0, 47) + "\u2026" : m.message));
    }
    return lines;
  }
  function size(n) {
    var lines = nodeLines(n), w = 0;
    lines.forEach(function (l, i) { w = Math.max(w, l.length * (i === 0 ? 7.2 : CHAR_W)); });
    return { w: Math.max(96, Math.min(420, w + 40)), h: lines.length * LINE_H + 12, lines: lines };
  }

  function visibleGraph() {
    var vis = nodes.filter(function (n) { return !hiddenIn(n.id); });
    var seen = new Set(), edges = [];
    DATA.edges.forEach(function (e) {
      var u = rep(e.source), v = rep(e.target);
      if (u === v || !byId.has(u) || !byId.has(v)) return;
      var key = JSON.stringify([u, v, e.kind, e.label]);
      if (seen.has(key)) return;
      seen.add(key);
      edges.push({ source: u, target: v, kind: e.kind, label: e.label, attrs: e.attrs });
    });
    return { nodes: vis, edges: edges };
  }

  /* ---- layout -------------------------------------------------------------------------
   * Ranks by longest path over the view order; rows ordered by the hints computed in Python
   * (barycenter sweeps), the members of a source kept together. Each open source is a rigid
   * block (its members' rows packed inside it), every other node a block of its own; blocks
   * that follow each other in some row must not overlap, and within that, each block goes
   * as near as it can to the mean position of its neighbours (two passes). */

  function layout(g) {
    var rank = new Map(), preds = new Map(), nbrs = new Map(), sizes = new Map();
    g.nodes.forEach(function (n) { preds.set(n.id, []); nbrs.set(n.id, []); sizes.set(n.id, size(n)); });
    g.edges.forEach(function (e) {
      nbrs.get(e.target).push(e.source);
      nbrs.get(e.source).push(e.target);
      if (order.get(e.source) < order.get(e.target)) preds.get(e.target).push(e.source);
    });
    g.nodes.forEach(function (n) {
      var r = 0;
      preds.get(n.id).forEach(function (p) { r = Math.max(r, rank.get(p) + 1); });
      rank.set(n.id, r);
    });
    var hint = function (id) { return hints[id] ? hints[id][1] : 0; };
    var blockOf = function (id) {
      var c = clusterOf.has(id) ? clusterOf.get(id) : (clusterById.has(id) ? id : null);
      return c !== null && !collapsed.has(c) ? "c:" + c : "n:" + id;
    };
    // a source's key is the mean hint of all its visible members, so sources keep one order
    var sum = new Map(), cnt = new Map();
    g.nodes.forEach(function (n) {
      var b = blockOf(n.id);
      sum.set(b, (sum.get(b) || 0) + hint(n.id)); cnt.set(b, (cnt.get(b) || 0) + 1);
    });
    var key = function (id) { var b = blockOf(id); return sum.get(b) / cnt.get(b); };
    var rows = [];
    g.nodes.forEach(function (n) { var r = rank.get(n.id); (rows[r] = rows[r] || []).push(n.id); });
    var ys = [], y = 0;
    rows.forEach(function (row, r) {
      if (!row) return;
      row.sort(function (a, b) {
        return (key(a) - key(b)) || (blockOf(a) < blockOf(b) ? -1 : blockOf(a) > blockOf(b) ? 1 : 0)
          || (hint(a) - hint(b)) || (order.get(a) - order.get(b));
      });
      var hmax = 0;
      row.forEach(function (id) { hmax = Math.max(hmax, sizes.get(id).h); });
      ys[r] = y + hmax / 2;
      y += hmax + RANK_GAP;
    });
    // blocks: members' offsets inside, half widths
    var PAD = 14, blocks = new Map();
    rows.forEach(function (row) {
      if (!row) return;
      var runs = [];
      row.forEach(function (id) {
        var b = blockOf(id);
        if (runs.length && runs[runs.length - 1].b === b) runs[runs.length - 1].ids.push(id);
        else runs.push({ b: b, ids: [id] });
      });
      runs.forEach(function (run) {
        var blk = blocks.get(run.b);
        if (!blk) { blk = { id: run.b, rows: [], half: 0, offset: new Map(), succ: new Map(), npred: 0 }; blocks.set(run.b, blk); }
        var w = -NODE_GAP;
        run.ids.forEach(function (id) { w += sizes.get(id).w + NODE_GAP; });
        var x = -w / 2;
        run.ids.forEach(function (id) {
          var sw = sizes.get(id).w;
          blk.offset.set(id, x + sw / 2);
          x += sw + NODE_GAP;
        });
        blk.half = Math.max(blk.half, w / 2 + (run.b.charAt(0) === "c" ? PAD : 0));
        if (run.b.charAt(0) === "c") blk.half = Math.max(blk.half, clusterLabel(clusterById.get(run.b.slice(2))).length * 3.2 + 24);
      });
      for (var i = 1; i < runs.length; i++) {
        var a = blocks.get(runs[i - 1].b), b = blocks.get(runs[i].b);
        if (a === b) continue;
        if (!a.succ.has(b.id)) { a.succ.set(b.id, true); b.npred++; }
      }
    });
    // an order of blocks that respects every row (Kahn; a conflict is broken by hint)
    var topo = [], ready = [], npred = new Map();
    blocks.forEach(function (b) { npred.set(b.id, b.npred); if (!b.npred) ready.push(b.id); });
    var bkey = function (bid) { return sum.get(bid) / cnt.get(bid); };
    while (topo.length < blocks.size) {
      if (!ready.length) {
        var rest = [];
        blocks.forEach(function (b) { if (npred.get(b.id) > 0) rest.push(b.id); });
        rest.sort(function (a, b) { return bkey(a) - bkey(b); });
        npred.set(rest[0], 0);
        ready.push(rest[0]);
      }
      ready.sort(function (a, b) { return bkey(a) - bkey(b) || (a < b ? -1 : 1); });
      var id = ready.shift();
      if (npred.get(id) < 0) continue;
      topo.push(id);
      npred.set(id, -1);
      blocks.get(id).succ.forEach(function (_, s) {
        if (npred.get(s) > 0) { npred.set(s, npred.get(s) - 1); if (npred.get(s) === 0) ready.push(s); }
      });
    }
    var predsOf = new Map();
    blocks.forEach(function (b) { b.succ.forEach(function (_, s) { (predsOf.get(s) || predsOf.set(s, []).get(s)).push(b.id); }); });
    var bx = new Map(), pos = new Map();
    var place = function (desired) {
      bx.clear();
      topo.forEach(function (bid) {
        var b = blocks.get(bid), lo = -Infinity;
        (predsOf.get(bid) || []).forEach(function (p) {
          if (bx.has(p)) lo = Math.max(lo, bx.get(p) + blocks.get(p).half + b.half + NODE_GAP);
        });
        bx.set(bid, Math.max(lo, desired(b)));
      });
      g.nodes.forEach(function (n) {
        var b = blocks.get(blockOf(n.id)), s = sizes.get(n.id);
        pos.set(n.id, { x: bx.get(b.id) + b.offset.get(n.id), y: ys[rank.get(n.id)], w: s.w, h: s.h, lines: s.lines, rank: rank.get(n.id) });
      });
    };
    var mean = function (b, f) {
      var t = 0, k = 0;
      b.offset.forEach(function (off, id) { var v = f(id, off); if (v !== null) { t += v; k++; } });
      return k ? t / k : null;
    };
    place(function (b) { return mean(b, function (id, off) { return hint(id) * UNIT - off; }); });
    for (var pass = 0; pass < 2; pass++) {
      var prev = new Map(pos);
      place(function (b) {
        var m = mean(b, function (id, off) {
          var ns = nbrs.get(id).filter(function (o) { return blockOf(o) !== b.id && prev.has(o); });
          if (!ns.length) return null;
          var t = 0;
          ns.forEach(function (o) { t += prev.get(o).x; });
          return t / ns.length - off;
        });
        return m === null ? prev.get(b.offset.keys().next().value).x - b.offset.values().next().value : m;
      });
    }
    return pos;
  }

  /* ---- drawing ----------------------------------------------------------------------- */

  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }

  function drawLock(parent, x, y) {
    var g = el("g", { "class": "lock", transform: "translate(" + x + "," + y + ")" }, parent);
    el("path", { d: "M2.5,6 V4 a3,3 0 0 1 6,0 V6" }, g);
    el("rect", { x: 1, y: 6, width: 9, height: 7, rx: 1 }, g);
    var t = el("title", null, g);
    t.textContent = "frozen";
    return g;
  }

  function drawNode(n, p) {
    var cls = "node kind-" + n.kind + " state-" + n.state + " status-" + n.status;
    if (collapsed.has(n.id)) cls += " collapsed";
    var g = el("g", { "class": cls, transform: "translate(" + p.x + "," + p.y + ")", tabindex: 0, role: "button" }, layerNodes);
    g.setAttribute("data-id", n.id);
    g.setAttribute("aria-label", n.title + ", " + n.kind + (n.state !== "none" ? ", " + n.state : "") + (n.status === "error" ? ", error" : ""));
    el("rect", { "class": "box", x: -p.w / 2, y: -p.h / 2, width: p.w, height: p.h, rx: n.kind === "op" ? 14 : 6 }, g);
    if (n.status === "skipped") {
      el("path", { "class": "cross", d: "M" + (-p.w / 2) + "," + (-p.h / 2 + 8) + " l8,-8 M" + (p.w / 2 - 8) + "," + (p.h / 2) + " l8,-8" }, g);
    }
    var top = -p.h / 2 + 6 + LINE_H / 2;
    p.lines.forEach(function (line, i) {
      svgText(g, -p.w / 2 + 10, top + i * LINE_H, line, i === 0 ? "name" : (i === 1 ? "what" : "meta"));
    });
    var mx = p.w / 2 - 16;
    if (n.state === "frozen" || n.state === "partial") { drawLock(g, mx - 2, -p.h / 2 + 3); mx -= 16; }
    if (n.status === "error") svgText(g, mx, -p.h / 2 + 11, WARN, "warn");
    if (clusterById.has(n.id)) {
      var b = el("g", { "class": "badge toggle", transform: "translate(" + (p.w / 2 - 2) + "," + (p.h / 2 - 2) + ")" }, g);
      b.setAttribute("data-toggle", n.id);
      el("rect", { x: -8, y: -8, width: 16, height: 16, rx: 3 }, b);
      svgText(b, 0, 1, collapsed.has(n.id) ? "+" : "\u2212");
      var bt = el("title", null, b);
      bt.textContent = collapsed.has(n.id) ? "expand this source" : "collapse this source";
    }
    var title = el("title", null, g);
    title.textContent = n.title + " (" + n.what + ")" + (n.location ? " \u2014 " + n.location : "");
    return g;
  }

  function drawEdge(e, pos) {
    var a = pos.get(e.source), b = pos.get(e.target);
    if (!a || !b) return;
    var g = el("g", { "class": "edge kind-" + e.kind }, layerEdges);
    g.setAttribute("data-source", e.source);
    g.setAttribute("data-target", e.target);
    var x1 = a.x, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y - b.h / 2;
    if (y2 < y1) { y1 = a.y - a.h / 2; y2 = b.y + b.h / 2; }
    var dy = Math.max(30, Math.abs(y2 - y1) / 2);
    var sgn = y2 >= y1 ? 1 : -1;
    var d = "M" + x1 + "," + y1 + " C" + x1 + "," + (y1 + sgn * dy) + " " + x2 + "," + (y2 - sgn * dy) + " " + x2 + "," + y2;
    var path = el("path", { d: d }, g);
    if (e.kind !== "member") path.setAttribute("marker-end", e.kind === "inherit" ? "url(#arrow-inherit)" : "url(#arrow)");
    if (e.label) svgText(g, (x1 + x2) / 2, (y1 + y2) / 2, e.label);
    var t = el("title", null, g);
    t.textContent = e.source + " \u2192 " + e.target + " (" + e.kind + (e.label ? ": " + e.label : "") + ")";
  }

  function clusterLabel(c) {
    var frozen = c.counts && c.counts.state === "frozen";
    return c.name + " \u00b7 " + c.what + (c.counts ? " \u00b7 " + shortCount(c.counts.params) + " params" : "") + (frozen ? " " + LOCK : "");
  }

  function drawCluster(c, pos) {
    var members = c.members.filter(function (m) { return pos.has(m); });
    if (collapsed.has(c.id) || !members.length) return;
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    members.forEach(function (m) {
      var p = pos.get(m);
      x0 = Math.min(x0, p.x - p.w / 2); x1 = Math.max(x1, p.x + p.w / 2);
      y0 = Math.min(y0, p.y - p.h / 2); y1 = Math.max(y1, p.y + p.h / 2);
    });
    var pad = 10, head = 18;
    var frozen = c.counts && c.counts.state === "frozen";
    var g = el("g", { "class": "cluster" + (frozen ? " state-frozen" : "") }, layerClusters);
    g.setAttribute("data-cluster", c.id);
    el("rect", { "class": "frame", x: x0 - pad, y: y0 - pad - head, width: x1 - x0 + 2 * pad, height: y1 - y0 + 2 * pad + head, rx: 10 }, g);
    var label = clusterLabel(c);
    svgText(g, x0 - pad + 28, y0 - pad - head / 2 + 2, label);
    var t = el("g", { "class": "toggle", transform: "translate(" + (x0 - pad + 13) + "," + (y0 - pad - head / 2 + 2) + ")" }, g);
    t.setAttribute("data-toggle", c.id);
    el("rect", { x: -7, y: -7, width: 14, height: 14, rx: 3 }, t);
    svgText(t, 0, 1, "\u2212");
    var tt = el("title", null, t);
    tt.textContent = "collapse " + c.name;
  }

  function render() {
    var g = visibleGraph();
    var pos = layout(g);
    state.pos = pos;
    state.visible = g.nodes.map(function (n) { return n.id; });
    clear(layerClusters); clear(layerEdges); clear(layerNodes);
    clusters.forEach(function (c) { drawCluster(c, pos); });
    g.edges.forEach(function (e) { drawEdge(e, pos); });
    g.nodes.forEach(function (n) { drawNode(n, pos.get(n.id)); });
    applySearch();
    if (state.selected && pos.has(state.selected)) markSelected(state.selected);
  }

  /* ---- pan and zoom ------------------------------------------------------------------ */

  function applyTransform() {
    viewport.setAttribute("transform", "translate(" + state.tx + "," + state.ty + ") scale(" + state.k + ")");
  }
  function bounds() {
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    state.pos.forEach(function (p) {
      x0 = Math.min(x0, p.x - p.w / 2); x1 = Math.max(x1, p.x + p.w / 2);
      y0 = Math.min(y0, p.y - p.h / 2 - 30); y1 = Math.max(y1, p.y + p.h / 2);
    });
    if (x0 === Infinity) return { x: 0, y: 0, w: 1, h: 1 };
    return { x: x0 - 20, y: y0 - 20, w: x1 - x0 + 40, h: y1 - y0 + 40 };
  }
  function fit() {
    var b = bounds(), r = svg.getBoundingClientRect();
    var W = r.width || 800, H = r.height || 600;
    state.k = Math.max(0.02, Math.min(1.5, Math.min(W / b.w, H / b.h)));
    state.tx = (W - b.w * state.k) / 2 - b.x * state.k;
    state.ty = Math.max(0, (H - b.h * state.k) / 2) - b.y * state.k;
    applyTransform();
  }
  /* The first view: everything if it stays readable, else the top at a readable scale. */
  function initialView() {
    var b = bounds(), r = svg.getBoundingClientRect();
    var W = r.width || 800, H = r.height || 600;
    if (Math.min(W / b.w, H / b.h) >= 0.3) { fit(); return; }
    state.k = Math.max(0.3, Math.min(1, W / b.w));
    state.tx = (W - b.w * state.k) / 2 - b.x * state.k;
    state.ty = 10 - b.y * state.k;
    applyTransform();
  }
  function zoomAt(factor, cx, cy) {
    var k = Math.max(0.02, Math.min(8, state.k * factor));
    state.tx = cx - (cx - state.tx) * (k / state.k);
    state.ty = cy - (cy - state.ty) * (k / state.k);
    state.k = k;
    applyTransform();
  }
  function centerOn(id) {
    var p = state.pos.get(id);
    if (!p) return;
    var r = svg.getBoundingClientRect();
    if (state.k < 0.6) state.k = 0.9;
    state.tx = (r.width || 800) / 2 - p.x * state.k;
    state.ty = (r.height || 600) / 2 - p.y * state.k;
    applyTransform();
  }
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var r = svg.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  var drag = null;
  svg.addEventListener("pointerdown", function (ev) {
    if (ev.target.closest && ev.target.closest(".node, .toggle")) return;
    drag = { x: ev.clientX, y: ev.clientY, tx: state.tx, ty: state.ty, moved: false };
    svg.classList.add("panning");
  });
  window.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    state.tx = drag.tx + ev.clientX - drag.x;
    state.ty = drag.ty + ev.clientY - drag.y;
    drag.moved = true;
    applyTransform();
  });
  window.addEventListener("pointerup", function () { drag = null; svg.classList.remove("panning"); });

  /* ---- selection and details ----------------------------------------------------------- */

  function markSelected(id) {
    Array.prototype.forEach.call(layerNodes.querySelectorAll(".node.selected"), function (e) { e.classList.remove("selected"); });
    Array.prototype.forEach.call(layerNodes.children, function (e) {
      if (e.getAttribute("data-id") === id) e.classList.add("selected");
    });
  }

  function row(dl, key, value) {
    if (value === null || value === undefined || value === "") return;
    html("dt", key, dl);
    html("dd", value, dl);
  }

  function showDetails(n) {
    clear(details);
    html("h2", n.title, details);
    var badges = html("div", null, details, "badges");
    html("span", n.kind, badges, "kind-" + n.kind);
    if (n.state !== "none") html("span", (n.state === "frozen" || n.state === "partial" ? LOCK + " " : "") + n.state, badges, "state-" + n.state);
    if (n.status !== "ok") html("span", (n.status === "error" ? WARN + " " : "") + n.status, badges, "status-" + n.status);
    var dl = html("dl", null, details);
    row(dl, "id", n.id);
    row(dl, "what", n.what);
    row(dl, "detail", n.detail);
    row(dl, "output shape", n.shape);
    if (n.counts) {
      row(dl, "parameters", fmt(n.counts.params));
      row(dl, "trainable", fmt(n.counts.trainable));
      row(dl, "frozen", fmt(n.counts.frozen) + (n.counts.frozen ? " " + LOCK : ""));
      if (n.counts.unused) row(dl, "not installed", fmt(n.counts.unused));
    }
    if (n.inputs.length) row(dl, "inputs", n.inputs.join(", "));
    Object.keys(n.options).sort().forEach(function (k) { row(dl, "option " + k, n.options[k]); });
    Object.keys(n.extra).sort().forEach(function (k) { row(dl, k, n.extra[k]); });
    row(dl, "spec location", n.location);
    if (n.source_line !== null && n.source_line !== undefined) {
      var line = n.location ? n.location.split(":").pop() : "";
      var pre = html("pre", null, details, "source-line");
      pre.textContent = line + " | " + n.source_line;
    }
    n.messages.forEach(function (m) {
      var box = html("div", null, details, "msg " + m.severity);
      html("div", m.code ? m.severity + "[" + m.code + "]: " + m.message : m.message, box, "headline");
      if (m.location) html("div", "at " + m.location, box, "sub");
      m.notes.forEach(function (x) { html("div", "note: " + x, box, "sub"); });
      if (m.hint) html("div", "help: " + m.hint, box, "sub");
    });
    if (clusterById.has(n.id)) {
      var c = clusterById.get(n.id);
      var p = html("p", (c.members.length - 1) + " member(s) in this source" + (c.expanded ? ", its fx graph grouped to depth " + c.depth : "") + (c.note ? " (" + c.note + ")" : ""), details, "hint");
      var b = html("button", collapsed.has(c.id) ? "Expand" : "Collapse", p);
      b.type = "button";
      b.addEventListener("click", function () { toggle(c.id); });
    }
  }

  function select(id) {
    var n = byId.get(id);
    if (!n) return false;
    if (hiddenIn(id)) { collapsed.delete(clusterOf.get(id)); render(); }
    state.selected = id;
    markSelected(id);
    showDetails(n);
    return true;
  }

  function toggle(cid) {
    if (!clusterById.has(cid)) return false;
    if (collapsed.has(cid)) collapsed.delete(cid); else collapsed.add(cid);
    if (state.selected && hiddenIn(state.selected)) state.selected = cid;
    render();
    if (state.selected) showDetails(byId.get(state.selected));
    return true;
  }

  layerNodes.addEventListener("click", function (ev) {
    var t = ev.target.closest ? ev.target.closest(".toggle") : null;
    if (t) { toggle(t.getAttribute("data-toggle")); return; }
    var g = ev.target.closest ? ev.target.closest(".node") : null;
    if (g) select(g.getAttribute("data-id"));
  });
  layerClusters.addEventListener("click", function (ev) {
    var t = ev.target.closest ? ev.target.closest(".toggle") : null;
    if (t) toggle(t.getAttribute("data-toggle"));
  });
  layerNodes.addEventListener("keydown", function (ev) {
    var g = ev.target.closest ? ev.target.closest(".node") : null;
    if (g && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); select(g.getAttribute("data-id")); }
  });

  /* ---- search ---------------------------------------------------------------------------- */

  var search = document.getElementById("search"), status = document.getElementById("search-status");
  function matches(q) {
    if (!q) return [];
    q = q.toLowerCase();
    return nodes.filter(function (n) {
      return n.name.toLowerCase().indexOf(q) >= 0 || n.id.toLowerCase().indexOf(q) >= 0;
    }).map(function (n) { return n.id; });
  }
  function applySearch() {
    var found = new Set(matches(state.query));
    Array.prototype.forEach.call(layerNodes.children, function (e) {
      var id = e.getAttribute("data-id");
      e.classList.toggle("match", found.has(id));
      e.classList.toggle("dim", !!state.query && !found.has(id));
    });
    Array.prototype.forEach.call(layerEdges.children, function (e) { e.classList.toggle("dim", !!state.query); });
    if (!state.query) { status.textContent = ""; return found.size; }
    var hidden = 0;
    found.forEach(function (id) { if (hiddenIn(id)) hidden++; });
    status.textContent = found.size + (found.size === 1 ? " match" : " matches") + (hidden ? " (" + hidden + " in collapsed sources)" : "");
    return found.size;
  }
  function runSearch(q) {
    state.query = q || "";
    state.matchIndex = -1;
    return applySearch();
  }
  function nextMatch() {
    var m = matches(state.query);
    if (!m.length) return null;
    state.matchIndex = (state.matchIndex + 1) % m.length;
    var id = m[state.matchIndex];
    select(id);
    centerOn(id);
    return id;
  }
  search.addEventListener("input", function () { runSearch(search.value); });
  search.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter") { ev.preventDefault(); nextMatch(); }
    if (ev.key === "Escape") { search.value = ""; runSearch(""); }
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "/" && document.activeElement !== search) { ev.preventDefault(); search.focus(); }
  });

  /* ---- page chrome ------------------------------------------------------------------------ */

  function chrome() {
    document.getElementById("spec-name").textContent = "synth " + DATA.name;
    document.getElementById("spec-file").textContent = DATA.file || "";
    var t = DATA.totals, errors = 0;
    nodes.forEach(function (n) { n.messages.forEach(function (m) { if (m.severity === "error") errors++; }); });
    DATA.messages.forEach(function (m) { if (m.severity === "error") errors++; });
    document.getElementById("spec-totals").textContent = DATA.checked
      ? fmt(t.params) + " parameters: " + fmt(t.trainable) + " trainable, " + fmt(t.frozen) + " frozen " + LOCK + (errors ? " \u00b7 " + WARN + " " + errors + " error" + (errors === 1 ? "" : "s") : "")
      : "not checked: no shapes or counts";
    var banner = document.getElementById("banner");
    if (DATA.messages.length) {
      banner.hidden = false;
      DATA.messages.forEach(function (m) {
        html("div", WARN + " " + m.severity + "[" + m.code + "]: " + m.message + (m.location ? " (" + m.location + ")" : "") + (m.hint ? " \u2014 help: " + m.hint : ""), banner);
      });
    }
    var legend = document.getElementById("legend");
    var samples = {
      trainable: { cls: "node kind-layer state-trainable" }, frozen: { cls: "node kind-layer state-frozen", lock: true },
      partial: { cls: "node kind-layer state-partial", lock: true }, unused: { cls: "node kind-group state-unused" },
      error: { cls: "node kind-layer status-error" }, skipped: { cls: "node kind-layer status-skipped" },
      data: { edge: "data" }, inherit: { edge: "inherit" }, member: { edge: "member" }
    };
    DATA.legend.forEach(function (item) {
      var span = html("span", null, legend, "item");
      var s = samples[item.key] || {};
      var icon = document.createElementNS(SVGNS, "svg");
      icon.setAttribute("viewBox", "0 0 30 16");
      span.appendChild(icon);
      if (s.edge) {
        var g = el("g", { "class": "edge kind-" + s.edge }, icon);
        el("path", { d: "M2,8 L28,8" }, g);
      } else {
        var n = el("g", { "class": s.cls }, icon);
        el("rect", { "class": "box", x: 1.5, y: 1.5, width: 27, height: 13, rx: 3 }, n);
        if (s.lock) drawLock(n, 10, 1);
      }
      html("span", item.label, span);
    });
  }

  document.getElementById("btn-fit").addEventListener("click", fit);
  document.getElementById("btn-zoom-in").addEventListener("click", function () { var r = svg.getBoundingClientRect(); zoomAt(1.25, r.width / 2, r.height / 2); });
  document.getElementById("btn-zoom-out").addEventListener("click", function () { var r = svg.getBoundingClientRect(); zoomAt(0.8, r.width / 2, r.height / 2); });
  document.getElementById("btn-expand").addEventListener("click", function () { collapsed.clear(); render(); fit(); });
  document.getElementById("btn-collapse").addEventListener("click", function () { clusters.forEach(function (c) { collapsed.add(c.id); }); render(); fit(); });

  chrome();
  render();
  initialView();

  window.synthViz = {
    ready: true,
    nodeCount: function () { return layerNodes.querySelectorAll(".node").length; },
    visibleIds: function () { return state.visible.slice(); },
    select: select,
    toggle: toggle,
    search: runSearch,
    nextMatch: nextMatch,
    fit: fit,
    collapsed: function () { return Array.from(collapsed).sort(); }
  };
  document.documentElement.setAttribute("data-ready", "true");
})();
