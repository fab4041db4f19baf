// The clawmatrix status page: polls /status.json (see README.md,
// Observability) and draws it. Every text from the cluster goes in through
// textContent, never as markup: other nodes choose their ids and
// descriptions.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function sv(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtMs(v) {
  if (v === undefined || v === null) return "–";
  if (v >= 1000) return (v / 1000).toFixed(2) + " s";
  if (v >= 10) return v.toFixed(0) + " ms";
  return v.toFixed(2) + " ms";
}

function fmtTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? "" : d.toLocaleTimeString();
}

function fmtBytes(n) {
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MB";
  if (n >= 1024) return (n / 1024).toFixed(1) + " KB";
  return n + " B";
}

function setConn(state, text) {
  const c = document.getElementById("conn");
  c.dataset.state = state;
  c.textContent = text;
}

// nodesOf lists this node first, then the peers by id.
function nodesOf(s) {
  const self = { nodeId: s.node.nodeId, status: "self", agents: s.node.agents, models: s.node.models, tags: s.node.tags, lastErrors: [] };
  return [self, ...s.peers];
}

function drawGraph(s) {
  const g = document.getElementById("graph");
  g.replaceChildren();
  const nodes = nodesOf(s);
  const W = 640, H = 360, cx = W / 2, cy = H / 2 - 5;
  const r = nodes.length === 1 ? 0 : Math.min(130, 60 + 25 * nodes.length);
  const pos = new Map();
  nodes.forEach((n, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / nodes.length;
    pos.set(n.nodeId, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
  });
  const up = new Set(nodes.filter((n) => n.status !== "down").map((n) => n.nodeId));
  for (const l of s.links) {
    if (!up.has(l.from) || !up.has(l.to)) continue;
    const a = pos.get(l.from), b = pos.get(l.to);
    if (!a || !b) continue;
    const direct = l.from === s.node.nodeId || l.to === s.node.nodeId;
    g.append(sv("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: direct ? "direct" : "remote", "data-link": l.from + "-" + l.to }));
    if (l.rttMs !== undefined) {
      g.append(sv("text", { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 - 6, class: "rtt" }, fmtMs(l.rttMs)));
    }
  }
  for (const n of nodes) {
    const p = pos.get(n.nodeId);
    const grp = sv("g", { "data-node": n.nodeId, "data-state": n.status });
    grp.append(sv("circle", { cx: p.x, cy: p.y, r: 24 }));
    grp.append(sv("text", { x: p.x, y: p.y + 4 }, n.nodeId.length > 8 ? n.nodeId.slice(0, 7) + "…" : n.nodeId));
    let sub = "";
    if (n.status === "self") sub = "this node";
    else if (n.status === "connected") sub = "direct " + fmtMs(n.rttMs);
    else if (n.status === "relay") sub = "via " + n.via + " " + fmtMs(n.rttMs);
    else if (n.status === "down") sub = "down since " + fmtTime(n.since);
    grp.append(sv("text", { x: p.x, y: p.y + 42, class: "sub" }, sub));
    g.append(grp);
  }
}

function row(dl, term, value) {
  if (!value) return;
  dl.append(el("dt", {}, term), el("dd", {}, value));
}

function drawCards(s) {
  const box = document.getElementById("nodes");
  box.replaceChildren();
  for (const n of nodesOf(s)) {
    const badge = n.status === "self" ? "this node" : n.status === "relay" ? "relay via " + n.via : n.status;
    const card = el("article", { class: "card", "data-node": n.nodeId, "data-state": n.status },
      el("h3", {}, el("span", {}, n.nodeId), el("span", { class: "badge" }, badge)));
    const dl = el("dl");
    if (n.status !== "self" && n.status !== "down") row(dl, "rtt", fmtMs(n.rttMs) + (n.hops > 1 ? " (" + n.hops + " hops)" : ""));
    if (n.status === "down") row(dl, "last seen", fmtTime(n.lastSeen));
    row(dl, "models", (n.models || []).join(", ") || "none");
    row(dl, "agents", (n.agents || []).map((a) => (a.description ? a.id + " — " + a.description : a.id)).join("; ") || "none");
    row(dl, "tags", (n.tags || []).join(", "));
    card.append(dl);
    for (const e of (n.lastErrors || []).slice(0, 2)) {
      card.append(el("p", { class: "err" }, fmtTime(e.at) + " " + e.message));
    }
    box.append(card);
  }
}

function drawRequests(s) {
  const body = document.querySelector("#requests tbody");
  body.replaceChildren();
  for (const q of s.requests) {
    const bad = q.error ? " bad" : "";
    body.append(el("tr", { "data-status": q.status },
      el("td", {}, fmtTime(q.at)),
      el("td", {}, q.model || "?"),
      el("td", { class: "path" }, (q.path || []).join(" → ") || "–"),
      el("td", { class: "num" }, q.attempts),
      el("td", { class: "num" + bad }, q.status),
      el("td", { class: "num" }, fmtMs(q.ttfbMs)),
      el("td", { class: "num" }, fmtMs(q.durationMs)),
      el("td", { class: "num" }, fmtBytes(q.bytes)),
      el("td", { class: bad.trim() }, q.error || "")));
  }
  document.getElementById("no-requests").hidden = s.requests.length > 0;
}

function drawErrors(s) {
  const ul = document.getElementById("errors");
  ul.replaceChildren();
  for (const e of s.errors) {
    ul.append(el("li", {}, el("span", { class: "when" }, fmtTime(e.at)), el("span", { class: "kind" }, e.kind), e.message));
  }
  document.getElementById("no-errors").hidden = s.errors.length > 0;
}

function render(s) {
  document.getElementById("self").textContent = s.node.nodeId;
  const down = s.peers.filter((p) => p.status === "down").length;
  document.getElementById("meta").textContent = "v" + s.node.version + " · " + (s.peers.length - down) + " reachable, " + down +
    " down · tracing " + (s.node.tracing ? "on" : "off");
  document.title = "clawmatrix " + s.node.nodeId;
  drawGraph(s);
  drawCards(s);
  drawRequests(s);
  drawErrors(s);
}

async function poll() {
  try {
    const r = await fetch("/status.json", { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) {
      setConn("error", "session ended: open a new status link");
    } else if (!r.ok) {
      setConn("error", "the node answered " + r.status);
    } else {
      render(await r.json());
      setConn("live", "live · " + new Date().toLocaleTimeString());
    }
  } catch (e) {
    setConn("error", "the node does not answer");
  }
  setTimeout(poll, POLL_MS);
}

poll();
