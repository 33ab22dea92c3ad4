/*
 * taskswarm dashboard.
 *
 * Served by every peer at `/`. Shows the swarm's totals, the peers (each with a
 * load chart drawn as inline SVG), a searchable table of the swarm's tasks, and a
 * page per task (`#/task/<id>`) with its fields, attempts, history, output and
 * proof. It can also submit a task and cancel one.
 *
 * Endpoints read (on the origin that served the page):
 *   GET    /v1/cluster                 every 2 s: header, totals, peers, own load samples
 *   GET    /v1/cluster/load            every 10 s: load history for the charts
 *   GET    /v1/tasks?limit=50&...      every 2 s: the task table ("more" follows `next`)
 *   GET    /v1/tasks?limit=1           every 2 s: the swarm's counts by state (`counts`)
 *   GET    /v1/tasks/{id}              every 2 s while a task page is open
 *   GET    /v1/tasks/{id}/proof        with the task, until the task has ended
 *   POST   /v1/tasks                   the submit form
 *   DELETE /v1/tasks/{id}              the cancel button
 *
 * localStorage: "taskswarm.token" (sent as `Authorization: Bearer ...`; a 401/403
 * asks for one). When the serving peer stops answering, the page says so and links
 * to the dashboards of the other peers it knew; typing an address goes there too.
 *
 * Every API string goes into the DOM as text (textContent / text nodes), never as HTML.
 */
"use strict";

const LS_TOKEN = "taskswarm.token";
const TIMEOUT_MS = 4000;
const LOAD_WINDOW_MS = 10 * 60 * 1000;
const PAGE_SIZE = 50;
const STATES = ["waiting", "unschedulable", "running", "completed", "failed", "cancelled"];
const ENDED = new Set(["completed", "failed", "cancelled"]);

const state = {
  base: "",           // the API is this page's own origin; another peer is another page
  token: readStorage(LS_TOKEN),
  gen: 0,              // bumped when the base changes; answers from the old base are dropped
  netFailures: 0,      // requests in a row that got no answer
  down: false,
  authError: null,
  httpError: null,
  lastOk: 0,
  cluster: null,
  meId: null,
  known: new Map(),    // peer id -> PeerInfo, every peer seen since the page loaded
  load: new Map(),     // peer id -> [{at, load, slots, local}]
  list: emptyList(),
  counts: null,
  route: { page: "home" },
  task: null,
  taskError: null,
  proof: null,
  proofError: null,
  proofFinal: false,
  proofOpen: false,
  taskNote: null,
  retryAfterAuth: null,
  drawn: {},           // section -> key of what was drawn last (skip identical redraws)
};

/* ---------- storage ---------- */

function readStorage(key) {
  try { return localStorage.getItem(key) || ""; } catch (e) { return ""; }
}

function writeStorage(key, value) {
  try {
    if (value) localStorage.setItem(key, value); else localStorage.removeItem(key);
  } catch (e) { /* storage unavailable: keep the value in memory only */ }
}

/* ---------- DOM helpers ---------- */

const $ = (id) => document.getElementById(id);

// h("td", {class: "x", text: "...", data: {taskId: id}, onclick: fn}, ...children)
function h(tag, props, ...children) {
  const node = document.createElement(tag);
  setProps(node, props || {});
  appendAll(node, children);
  return node;
}

function setProps(node, props) {
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function appendAll(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

// Replaces a node's children; like h(), children may be nested arrays with nulls.
function fill(node, children) {
  node.replaceChildren();
  appendAll(node, children);
}

function setText(id, text) {
  const node = $(id);
  if (node && node.textContent !== text) node.textContent = text;
}

// Calls draw() only when key differs from the last one drawn for this section.
function drawIfChanged(section, key, draw) {
  if (state.drawn[section] === key) return;
  state.drawn[section] = key;
  draw();
}

/* ---------- formatting ---------- */

function shortId(id) {
  if (!id) return "—";
  const s = String(id);
  return s.length > 16 ? s.slice(0, 8) + "…" + s.slice(-6) : s;
}

function fmtDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return "—";
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = Math.floor(ms / 1000);
  if (s < 10) return (ms / 1000).toFixed(1) + "s";
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  const hr = Math.floor(m / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  if (hr < 24) return `${hr}h ${m % 60}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

function fmtTime(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour12: false });
  if (d.toDateString() === new Date().toDateString()) return time;
  return d.toLocaleDateString() + " " + time;
}

function fmtFullTime(ms) {
  return ms ? new Date(ms).toLocaleString([], { hour12: false }) : "—";
}

// A lease epoch is a u64 whose high 32 bits are the term and low 32 bits the count ("1.0").
function fmtEpoch(n) {
  if (typeof n !== "number") return n == null ? "—" : String(n);
  return `${Math.floor(n / 4294967296)}.${n % 4294967296}`;
}

function fmtHeard(ms, isMe) {
  if (isMe) return "self";
  if (ms == null) return "—";
  return ms < 1000 ? `${Math.round(ms)} ms ago` : `${fmtDuration(ms)} ago`;
}

function quoteArg(arg) {
  const s = String(arg);
  return s === "" || /[\s"'\\]/.test(s) ? JSON.stringify(s) : s;
}

function commandText(task) {
  if (Array.isArray(task.command)) return task.command.map(quoteArg).join(" ");
  if (task.handler) return `handler ${task.handler}`;
  return task.kind || "";
}

function taskPeer(task) {
  return task.executed_by || task.holder || null;
}

/* ---------- API base and peer addresses ---------- */

function normalizeBase(text) {
  let t = String(text || "").trim();
  if (!t) return "";
  if (!/^https?:\/\//i.test(t)) t = "http://" + t;
  return t.replace(/\/+$/, "");
}

function pageHost() {
  const host = location.hostname || "127.0.0.1";
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

// A peer's configured API address (host:port) as a URL; "any address" hosts
// (0.0.0.0, [::]) become the host of the current page.
function peerUrl(api) {
  if (!api) return null;
  if (/^https?:\/\//i.test(api)) return normalizeBase(api);
  const cut = api.lastIndexOf(":");
  let host = cut > 0 ? api.slice(0, cut) : api;
  const port = cut > 0 ? api.slice(cut) : "";
  if (["0.0.0.0", "[::]", "::", ""].includes(host)) host = pageHost();
  return `http://${host}${port}`;
}

function baseLabel() {
  if (state.base) return state.base;
  return location.origin && location.origin !== "null" ? location.origin : "this page's origin";
}

function apiUrl(path) {
  return state.base + path;
}

/* ---------- requests ---------- */

class ApiError extends Error {
  constructor(message, kind, status) {
    super(message);
    this.kind = kind;      // "net" (no answer), "auth", "http", "stale"
    this.status = status || 0;
  }
}

function parseJson(text) {
  if (!text) return null;
  try { return JSON.parse(text); } catch (e) { return null; }
}

function requestHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  return headers;
}

// One request with a 4 s timeout covering both the answer and its body.
async function send(path, options) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
  try {
    const res = await fetch(apiUrl(path), {
      method: options.method || "GET",
      body: options.body,
      headers: requestHeaders(options.headers),
      signal: ctrl.signal,
      cache: "no-store",
    });
    const text = await res.text();
    return { res, body: parseJson(text), text };
  } finally {
    clearTimeout(timer);
  }
}

async function api(path, options = {}) {
  const gen = state.gen;
  let answer;
  try {
    answer = await send(path, options);
  } catch (e) {
    if (gen === state.gen) noteNoAnswer();
    throw new ApiError(e && e.name === "AbortError" ? "timed out" : "no answer", "net");
  }
  if (gen !== state.gen) throw new ApiError("answer from a previous peer", "stale");
  noteAnswer();
  return checkAnswer(answer);
}

function checkAnswer({ res, body, text }) {
  const message = (body && body.error) || text.trim() || `HTTP ${res.status}`;
  if (res.status === 401 || res.status === 403) {
    askForToken(message, body && body.needs);
    throw new ApiError(message, "auth", res.status);
  }
  if (!res.ok) throw new ApiError(`${res.status}: ${message}`, "http", res.status);
  if (state.authError) {
    state.authError = null;
    renderStatus();
  }
  return body;
}

function noteNoAnswer() {
  state.netFailures += 1;
  if (state.netFailures >= 2) state.down = true;
  renderStatus();
  renderBanner();
}

function noteAnswer() {
  state.netFailures = 0;
  state.lastOk = Date.now();
  if (state.down) {
    state.down = false;
    renderBanner();
  }
  renderStatus();
}

/* ---------- polling ---------- */

const polls = {};

// Runs fn every `every` ms while when() holds; never two at once. A run asked
// for while one is under way happens right after it (coalesced, not stacked).
function addPoll(name, every, fn, when) {
  const poll = { busy: false, again: false };
  poll.run = async (asked) => {
    if (when && !when()) return;
    if (poll.busy) { poll.again = poll.again || asked === true; return; }
    poll.busy = true;
    try {
      await fn();
      clearSectionError(name);
    } catch (e) {
      onPollError(name, e);
    } finally {
      poll.busy = false;
      if (poll.again) { poll.again = false; setTimeout(() => poll.run(), 0); }
    }
  };
  polls[name] = poll;
  setInterval(() => poll.run(), every);
}

function pollNow(...names) {
  for (const name of names) if (polls[name]) polls[name].run(true);
}

function pollAll() {
  pollNow(...Object.keys(polls));
}

function onPollError(name, e) {
  if (!(e instanceof ApiError)) { console.error(name, e); return; }
  if (e.kind !== "http") return;
  if (name === "tasks") showTasksError(e.message);
  else { state.httpError = `${name}: ${e.message}`; renderStatus(); }
}

function clearSectionError(name) {
  if (name === "tasks") showTasksError(null);
  else if (name !== "task" && state.httpError && state.httpError.startsWith(name + ":")) {
    state.httpError = null;
    renderStatus();
  }
}

const onHome = () => state.route.page === "home";
const onTaskPage = () => state.route.page === "task";

/* ---------- cluster ---------- */

async function pollCluster() {
  const cluster = await api("/v1/cluster");
  state.cluster = cluster;
  state.meId = cluster.me ? cluster.me.peer_id : null;
  for (const peer of clusterPeers(cluster)) state.known.set(peer.peer_id, peer);
  addLocalSamples(cluster);
  renderHeader();
  renderSwarm();
  renderPeers();
}

function clusterPeers(cluster) {
  if (!cluster) return [];
  const others = (cluster.peers || []).filter((p) => !cluster.me || p.peer_id !== cluster.me.peer_id);
  others.sort((a, b) => a.peer_id.localeCompare(b.peer_id));
  return cluster.me ? [cluster.me, ...others] : others;
}

async function pollLoad() {
  const history = await api("/v1/cluster/load");
  mergeServerLoad((history && history.samples) || []);
  renderPeers();
}

function sampleOf(at, p) {
  return { at, load: (p.running || 0) + (p.queued || 0), slots: p.slots || 0 };
}

// The server's samples replace ours, but the samples we took since its last one stay.
function mergeServerLoad(samples) {
  const byPeer = new Map();
  for (const sample of samples) {
    for (const [id, p] of Object.entries(sample.peers || {})) {
      if (!byPeer.has(id)) byPeer.set(id, []);
      byPeer.get(id).push(sampleOf(sample.at_ms, p));
    }
  }
  for (const [id, server] of byPeer) {
    const last = server.length ? server[server.length - 1].at : 0;
    const local = (state.load.get(id) || []).filter((s) => s.local && s.at > last);
    state.load.set(id, trimWindow(server.concat(local)));
  }
}

function addLocalSamples(cluster) {
  const now = Date.now();
  for (const peer of clusterPeers(cluster)) {
    const series = state.load.get(peer.peer_id) || [];
    series.push(Object.assign(sampleOf(now, peer), { local: true }));
    state.load.set(peer.peer_id, trimWindow(series));
  }
}

function trimWindow(series) {
  const from = Date.now() - LOAD_WINDOW_MS - 10000;
  return series.filter((s) => s.at >= from).sort((a, b) => a.at - b.at);
}

/* ---------- tasks list and counts ---------- */

function emptyList() {
  return { key: "", tasks: [], next: null, extra: [], extraNext: null, pages: 0, meta: null, loaded: false };
}

function serverFilters() {
  return {
    state: $("filter-state").value,
    label: $("filter-label").value.trim(),
    submitter: $("filter-submitter").value.trim(),
  };
}

function listPath(cursor) {
  const f = serverFilters();
  const q = new URLSearchParams();
  if (f.state) q.set("state", f.state);
  if (f.label) q.set("label", f.label);
  if (f.submitter) q.set("submitter", f.submitter);
  q.set("limit", String(PAGE_SIZE));
  if (cursor) q.set("cursor", cursor);
  return "/v1/tasks?" + q.toString();
}

function filterKey() {
  return JSON.stringify(serverFilters()) + "@" + state.gen;
}

async function pollTasks() {
  const key = filterKey();
  const page = await api(listPath(null));
  if (key !== filterKey()) return;          // the filters changed meanwhile
  if (state.list.key !== key) state.list = emptyList();
  Object.assign(state.list, { key, tasks: page.tasks || [], next: page.next || null, meta: page, loaded: true });
  renderTasks();
}

async function loadMore() {
  const list = state.list;
  const cursor = list.pages ? list.extraNext : list.next;
  if (!cursor) return;
  const key = filterKey();
  $("tasks-more").disabled = true;
  try {
    const page = await api(listPath(cursor));
    if (key !== filterKey() || list !== state.list) return;
    list.extra.push(...(page.tasks || []));
    list.extraNext = page.next || null;
    list.pages += 1;
    renderTasks();
  } catch (e) {
    if (e.kind === "http") showTasksError(e.message);
  } finally {
    $("tasks-more").disabled = false;
  }
}

function loadedTasks() {
  const seen = new Set();
  const all = [];
  for (const t of state.list.tasks.concat(state.list.extra)) {
    if (seen.has(t.id)) continue;
    seen.add(t.id);
    all.push(t);
  }
  return all;
}

function taskMatches(task, query) {
  if (!query) return true;
  const hay = [task.id, task.name, commandText(task), task.handler, task.state, task.reason]
    .filter(Boolean).join("\n").toLowerCase();
  return hay.includes(query);
}

function onFiltersChanged() {
  state.list = emptyList();
  state.drawn.tasks = null;
  renderTasks();
  pollNow("tasks");
}

// The swarm's tasks by state: every peer counts the records it leads, so one list of a single
// entry carries the counts of the whole swarm.
async function pollCounts() {
  const gen = state.gen;
  const page = await api(`/v1/tasks?limit=1`);
  if (gen !== state.gen) return;
  const counts = Object.fromEntries(STATES.map((s) => [s, (page.counts && page.counts[s]) || 0]));
  const total = STATES.reduce((sum, s) => sum + counts[s], 0);
  state.counts = { counts, more: false, total, page };
  renderCounts();
}

/* ---------- one task ---------- */

async function pollTask() {
  const id = state.route.id;
  const wantProof = !(state.proofFinal && state.proof);
  const [task, proof] = await Promise.allSettled([
    api(`/v1/tasks/${encodeURIComponent(id)}`),
    wantProof ? api(`/v1/tasks/${encodeURIComponent(id)}/proof`) : Promise.resolve(state.proof),
  ]);
  if (state.route.id !== id) return;
  const endedBefore = Boolean(state.task && state.task.id === id && ENDED.has(state.task.state));
  takeTask(task);
  takeProof(proof, wantProof, endedBefore);
  renderTaskPage();
}

function takeTask(result) {
  if (result.status === "fulfilled") {
    state.task = result.value;
    state.taskError = null;
  } else if (result.reason && result.reason.kind === "http") {
    state.taskError = result.reason.status === 404 ? "No peer knows this task." : result.reason.message;
  }
}

// Once the task had ended before the proof was asked for, the proof will not change.
function takeProof(result, asked, endedBefore) {
  if (!asked) return;
  if (result.status === "fulfilled") {
    state.proof = result.value;
    state.proofError = null;
    state.proofFinal = endedBefore;
  } else if (result.reason && result.reason.kind === "http") {
    state.proofError = result.reason.message;
  }
}

async function cancelTask(id) {
  state.taskNote = "Cancelling…";
  renderTaskPage();
  try {
    await api(`/v1/tasks/${encodeURIComponent(id)}`, { method: "DELETE" });
    state.taskNote = "Cancel requested.";
  } catch (e) {
    state.taskNote = `Cancel failed: ${e.message}`;
    if (e.kind === "auth") state.retryAfterAuth = () => cancelTask(id);
  }
  renderTaskPage();
  pollNow("task");
}

/* ---------- submitting ---------- */

// Splits a command line on spaces; "double" or 'single' quotes keep spaces in one argument.
function splitCommand(line) {
  const args = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let m;
  while ((m = re.exec(line)) !== null) args.push(m[1] ?? m[2] ?? m[3]);
  return args;
}

function submittedIds(answer) {
  if (!answer) return [];
  if (answer.id) return [answer.id];
  if (Array.isArray(answer.ids)) return answer.ids;
  if (Array.isArray(answer)) return answer.map((a) => a && a.id).filter(Boolean);
  return [];
}

async function submitSpec(spec) {
  const out = $("submit-result");
  out.replaceChildren(h("span", { class: "muted", text: "Submitting…" }));
  try {
    const answer = await api("/v1/tasks", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(spec),
    });
    const links = submittedIds(answer).map((id) => h("a", { href: `#/task/${encodeURIComponent(id)}`, class: "mono", text: shortId(id) }));
    out.replaceChildren(h("span", { class: "ok-text", text: "Submitted: " }), ...joinNodes(links, ", "));
    pollNow("tasks", "counts");
  } catch (e) {
    out.replaceChildren(h("span", { class: "error-text", text: `Not submitted: ${e.message}` }));
    if (e.kind === "auth") state.retryAfterAuth = () => submitSpec(spec);
  }
}

function joinNodes(nodes, sep) {
  return nodes.flatMap((n, i) => (i ? [sep, n] : [n]));
}

function onSubmitCommand(event) {
  event.preventDefault();
  const args = splitCommand($("submit-command").value);
  if (!args.length) return;
  submitSpec({ command: args });
}

function onSubmitJson(event) {
  event.preventDefault();
  let spec;
  try {
    spec = JSON.parse($("submit-json").value);
  } catch (e) {
    $("submit-result").replaceChildren(h("span", { class: "error-text", text: `Not JSON: ${e.message}` }));
    return;
  }
  submitSpec(spec);
}

/* ---------- token ---------- */

function askForToken(message, needs) {
  const first = $("auth-box").hidden;
  state.authError = message;
  const suffix = needs ? ` (needs the ${needs} role)` : "";
  setText("auth-error", message + suffix);
  $("auth-box").hidden = false;
  if (first) $("auth-token").focus();
  renderStatus();
}

function saveToken(token) {
  state.token = token.trim();
  writeStorage(LS_TOKEN, state.token);
  state.authError = null;
  $("auth-box").hidden = true;
  $("auth-token").value = "";
  renderStatus();
  pollAll();
  const retry = state.retryAfterAuth;
  state.retryAfterAuth = null;
  if (retry) retry();
}

function showTokenForm() {
  const box = $("auth-box");
  box.hidden = !box.hidden;
  if (!box.hidden) {
    setText("auth-error", state.token ? "A token is set." : "No token set.");
    $("auth-token").focus();
  }
}

/* ---------- switching peers ---------- */

// Another peer's dashboard: the page goes there (its own origin, so no peer needs to answer
// requests from another origin), keeping the task it shows. That origin keeps its own token.
function setBase(text) {
  const base = normalizeBase(text);
  if (!base) return;
  location.href = `${base}/${location.hash}`;
}

// The peers the page knows with an API address, except the one it talks to now.
function otherPeers() {
  const result = [];
  for (const peer of state.known.values()) {
    const url = peerUrl(peer.api);
    if (!url || peer.peer_id === state.meId || url === state.base) continue;
    result.push({ peer, url });
  }
  return result;
}

/* ---------- rendering: header, banner, totals ---------- */

function renderAll() {
  renderHeader();
  renderStatus();
  renderBanner();
  renderSwarm();
  renderCounts();
  renderPeers();
  renderTasks();
}

function renderHeader() {
  const me = state.cluster && state.cluster.me;
  setText("me-id", me ? shortId(me.peer_id) : "…");
  $("me-id").title = me ? me.peer_id : "";
  setText("me-api", me ? (me.api ? `api ${me.api}` : "no API address") : "");
  setText("me-version", me && me.version ? `v${me.version}` : "");
  if (document.activeElement !== $("peer-base")) $("peer-base").value = state.base;
}

function statusOf() {
  if (state.down) return ["down", `not answering: ${baseLabel()}`];
  if (state.authError) return ["warn", "token needed"];
  if (state.httpError) return ["warn", state.httpError];
  if (!state.lastOk) return ["idle", "connecting…"];
  return ["ok", `live · updated ${fmtTime(state.lastOk)}`];
}

function renderStatus() {
  const [kind, text] = statusOf();
  const dot = $("status-dot");
  dot.className = `dot ${kind}`;
  dot.dataset.status = kind;
  dot.title = text;
  setText("status-text", text);
}

function renderBanner() {
  const banner = $("peer-down");
  banner.hidden = !state.down;
  if (!state.down) return;
  setText("peer-down-text", `The peer at ${baseLabel()} is not answering`);
  const others = otherPeers();
  setText("peer-down-hint", others.length ? "Switch to another peer:" : "No other peer with an API address is known; type one:");
  const key = JSON.stringify(others.map((o) => [o.peer.peer_id, o.url]));
  drawIfChanged("banner", key, () => $("peer-down-peers").replaceChildren(...others.map(peerButton)));
}

function peerButton({ peer, url }) {
  return h("a", { class: "peer-link", href: `${url}/`, title: peer.peer_id },
    shortId(peer.peer_id), " ", h("span", { class: "muted", text: url }));
}

function renderSwarm() {
  const swarm = (state.cluster && state.cluster.swarm) || null;
  for (const key of ["peers", "slots", "running", "queued", "draining"]) {
    setText(`swarm-${key}`, swarm && swarm[key] != null ? String(swarm[key]) : "–");
  }
}

function renderCounts() {
  const c = state.counts;
  for (const s of STATES) setText(`count-${s}`, c ? `${c.counts[s]}${c.more ? "+" : ""}` : "–");
  setText("counts-note", c ? countsNote(c) : "");
}

function countsNote(c) {
  return `${c.total} tasks in the swarm${answeredNote(c.page)}.`;
}

function answeredNote(page) {
  if (!page || page.peers_asked == null) return "";
  const partial = page.peers_answered < page.peers_asked;
  return `, ${page.peers_answered}/${page.peers_asked} peers answered${partial ? " (partial)" : ""}`;
}

/* ---------- rendering: peers ---------- */

function renderPeers() {
  const peers = clusterPeers(state.cluster);
  const range = chartRange(Date.now());
  $("peers-table").tBodies[0].replaceChildren(...peers.map((p) => peerRow(p, range)));
  $("peers-empty").hidden = peers.length > 0 || !state.cluster;
  setText("peers-note", state.cluster ? `${peers.length} known to the serving peer` : "");
}

function peerRow(p, range) {
  const isMe = state.cluster && state.cluster.me && p.peer_id === state.cluster.me.peer_id;
  const stale = !isMe && p.last_heard_ms > 10000;
  return h("tr", { data: { peerId: p.peer_id }, class: isMe ? "me-row" : null },
    h("td", { title: p.peer_id }, peerIdCell(p, isMe)),
    h("td", { text: p.version || "—" }),
    h("td", { text: fmtDuration(p.uptime_ms) }),
    h("td", { class: "num", text: p.slots ?? "—" }),
    h("td", { class: "num", text: p.running ?? "—" }),
    h("td", { class: "num", text: p.queued ?? "—" }),
    h("td", { class: "num", text: p.cpus ?? "—" }),
    h("td", { text: p.memory || "—" }),
    h("td", { text: p.disk || "—" }),
    h("td", {}, labelChips(p)),
    h("td", { class: stale ? "stale" : null, text: fmtHeard(p.last_heard_ms, isMe) }),
    h("td", {}, p.draining ? h("span", { class: "chip chip-warn", text: "draining" }) : h("span", { class: "muted", text: "no" })),
    h("td", {}, loadChart(state.load.get(p.peer_id) || [], range)));
}

function peerIdCell(p, isMe) {
  return [
    h("span", { class: "mono", text: shortId(p.peer_id) }),
    isMe ? h("span", { class: "chip chip-me", text: "serving" }) : null,
    h("div", { class: "muted small", text: p.api || "no API address" }),
  ];
}

function labelChips(p) {
  const chips = (p.labels || []).map((l) => h("span", { class: "chip", text: l }));
  if (p.exec === false) chips.push(h("span", { class: "chip chip-warn", text: "no exec" }));
  for (const handler of p.handlers || []) chips.push(h("span", { class: "chip chip-handler", title: "handler", text: handler }));
  return chips.length ? chips : h("span", { class: "muted", text: "—" });
}

/* ---------- load chart ---------- */

const CHART_W = 150;
const CHART_H = 30;
const CHART_PAD = 2;

// The time axis shared by every peer's chart: the last 10 minutes, or less while
// the page knows less history (at least one minute), ending now.
function chartRange(now) {
  let from = now;
  for (const series of state.load.values()) {
    for (const s of series) if (s.at >= now - LOAD_WINDOW_MS && s.at < from) from = s.at;
  }
  from = Math.min(from, now - 60000);
  return { from, to: now, span: now - from };
}

function chartScale(points, range) {
  const max = Math.max(1, ...points.map((s) => Math.max(s.load, s.slots)));
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return {
    max,
    x: (at) => (CHART_PAD + (CHART_W - 2 * CHART_PAD) * clamp((at - range.from) / range.span)).toFixed(1),
    y: (v) => (CHART_H - CHART_PAD - (CHART_H - 2 * CHART_PAD) * (v / max)).toFixed(1),
  };
}

function loadChart(series, range) {
  const points = series.filter((s) => s.at >= range.from);
  const root = svg("svg", { class: "chart", width: CHART_W, height: CHART_H, viewBox: `0 0 ${CHART_W} ${CHART_H}` });
  const wrap = h("span", { class: "chart-wrap" }, root);
  if (!points.length) {
    root.append(svg("line", { x1: 0, x2: CHART_W, y1: CHART_H - 1, y2: CHART_H - 1, class: "chart-base" }));
    return wrap;
  }
  const sc = chartScale(points, range);
  const line = (key) => points.map((s) => `${sc.x(s.at)},${sc.y(s[key])}`).join(" ");
  const first = points[0];
  const last = points[points.length - 1];
  const area = `${sc.x(first.at)},${sc.y(0)} ${line("load")} ${sc.x(last.at)},${sc.y(0)}`;
  root.append(
    svg("polygon", { points: area, class: "chart-area" }),
    svg("polyline", { points: line("slots"), class: "chart-slots" }),
    svg("polyline", { points: line("load"), class: "chart-load" }),
    svg("circle", { cx: sc.x(last.at), cy: sc.y(last.load), r: 2, class: "chart-dot" }));
  const title = svg("title");
  title.textContent = `load ${last.load} (running + queued), ${last.slots} slots; ` +
    `scale 0–${sc.max}; last ${fmtDuration(range.span)}`;
  root.prepend(title);
  wrap.append(h("span", { class: "chart-now", text: `${last.load}/${last.slots}` }));
  return wrap;
}

/* ---------- rendering: tasks table ---------- */

function showTasksError(message) {
  const box = $("tasks-error");
  box.hidden = !message;
  setText("tasks-error", message ? `Tasks: ${message}` : "");
}

function renderTasks() {
  const query = $("task-search").value.trim().toLowerCase();
  const all = loadedTasks();
  const shown = all.filter((t) => taskMatches(t, query));
  const key = JSON.stringify([shown, query]);
  drawIfChanged("tasks", key, () => $("tasks-table").tBodies[0].replaceChildren(...shown.map(taskRow)));
  $("tasks-empty").hidden = shown.length > 0 || !state.list.loaded;
  setText("tasks-empty", all.length ? "No loaded task matches the filter." : "No tasks.");
  const more = state.list.pages ? state.list.extraNext : state.list.next;
  $("tasks-more").hidden = !more;
  setText("tasks-more", `more (next ${PAGE_SIZE})`);
  setText("tasks-info", tasksInfo(shown.length, all.length));
}

function tasksInfo(shown, loaded) {
  if (!state.list.loaded) return "loading…";
  const count = shown === loaded ? `${loaded} tasks` : `${shown} of ${loaded} loaded tasks`;
  const scope = state.list.meta && state.list.meta.scope ? ` · scope ${state.list.meta.scope}` : "";
  return `${count}${scope}${answeredNote(state.list.meta)}`;
}

function stateBadge(s) {
  return h("span", { class: `badge st-${s || "unknown"}`, text: s || "unknown" });
}

function taskRow(t) {
  const peer = taskPeer(t);
  return h("tr", { data: { taskId: t.id } },
    h("td", {}, h("a", { href: `#/task/${encodeURIComponent(t.id)}`, class: "mono", title: t.id, text: shortId(t.id) })),
    h("td", { class: "name", text: t.name || "" }),
    h("td", { class: "cmd", title: commandText(t) }, kindCell(t)),
    h("td", {}, stateBadge(t.state)),
    h("td", { class: t.reason ? "reason" : "muted", text: t.reason || "" }),
    h("td", { class: "mono", title: peer || "" , text: peer ? shortId(peer) : "—" }),
    h("td", { class: "nowrap", title: fmtFullTime(t.submitted_ms), text: fmtTime(t.submitted_ms) }),
    h("td", { class: "num nowrap", text: fmtDuration(t.duration_ms) }));
}

function kindCell(t) {
  if (t.kind === "handler" || (!t.command && t.handler)) {
    return [h("span", { class: "kind", text: "handler" }), " ", h("span", { class: "mono", text: t.handler || "" })];
  }
  return [h("span", { class: "kind", text: t.kind || "process" }), " ", h("span", { class: "mono", text: commandText(t) })];
}

/* ---------- rendering: task page ---------- */

function openTaskPage(id) {
  if (state.task && state.task.id !== id) state.task = null;
  Object.assign(state, { taskError: null, proof: null, proofError: null, proofFinal: false, proofOpen: false, taskNote: null });
  state.drawn.task = null;
  const page = h("article", { id: "task-page", class: "panel" });
  $("task-view").replaceChildren(page);
  $("task-view").hidden = false;
  renderTaskPage();
  pollNow("task");
}

function closeTaskPage() {
  $("task-view").replaceChildren();
  $("task-view").hidden = true;
  state.task = null;
}

function renderTaskPage() {
  const root = $("task-page");
  if (!root) return;
  const id = state.route.id;
  const task = state.task && state.task.id === id ? state.task : null;
  const key = JSON.stringify([id, task, state.taskError, state.proof, state.proofError, state.proofOpen, state.taskNote]);
  drawIfChanged("task", key, () => fill(root, taskPage(id, task)));
}

function taskPage(id, task) {
  return [
    h("div", { class: "crumbs" }, h("a", { href: "#/", text: "← all tasks" })),
    h("div", { class: "task-title" },
      h("h2", {}, "Task ", h("span", { class: "mono full-id", text: id })),
      task ? stateBadge(task.state) : null,
      task && task.name ? h("span", { class: "task-name", text: task.name }) : null,
      cancelButton(id, task)),
    state.taskNote ? h("div", { class: "note", text: state.taskNote }) : null,
    state.taskError ? h("div", { class: "error-line", text: state.taskError }) : null,
    task && task.reason ? h("div", { class: `reason-box st-border-${task.state}` }, h("strong", { text: "Why: " }), task.reason) : null,
    task ? taskDetails(task) : h("p", { class: "muted", text: state.taskError ? "" : "Loading…" }),
    proofSection(),
  ];
}

function cancelButton(id, task) {
  if (!task || ENDED.has(task.state)) return null;
  return h("button", { type: "button", class: "danger", onclick: () => cancelTask(id), text: "Cancel task" });
}

function taskDetails(task) {
  return [
    h("div", { class: "fields" }, fieldList(task)),
    outputSection(task),
    h("h3", { text: `Attempts (${(task.attempts || []).length})` }),
    attemptsTable(task.attempts || []),
    h("h3", { text: `History (${(task.history || []).length})` }),
    historyTable(task.history || []),
  ];
}

function field(label, value) {
  const content = value == null || value === "" ? h("span", { class: "muted", text: "—" }) : value;
  return [h("dt", { text: label }), h("dd", {}, content)];
}

function mono(text) {
  return text == null ? null : h("span", { class: "mono", text: String(text) });
}

function idList(ids, linkTasks) {
  if (!ids || !ids.length) return null;
  return h("div", { class: "id-list" }, ids.map((id) => linkTasks
    ? h("a", { href: `#/task/${encodeURIComponent(id)}`, class: "mono", text: id })
    : h("span", { class: "mono", text: id })));
}

function fieldList(t) {
  return h("dl", {},
    field("state", stateBadge(t.state)),
    field("name", t.name),
    field("priority", t.priority != null ? String(t.priority) : null),
    field("kind", t.kind),
    field("command", Array.isArray(t.command) ? mono(commandText(t)) : null),
    field("handler", mono(t.handler)),
    field("needs", t.needs && t.needs.length ? t.needs.map((n) => h("span", { class: "chip", text: n })) : null),
    field("after", idList(t.after, true)),
    field("exit code", t.exit_code != null ? mono(t.exit_code) : null),
    field("duration", t.duration_ms != null ? fmtDuration(t.duration_ms) : null),
    field("submitted", t.submitted_ms ? fmtFullTime(t.submitted_ms) : null),
    field("client", t.client),
    field("executed by", mono(t.executed_by)),
    field("holder", mono(t.holder)),
    field("lease epoch", t.lease_epoch != null ? mono(`${fmtEpoch(t.lease_epoch)} (${t.lease_epoch})`) : null),
    field("epoch", mono(t.epoch)),
    field("origin", mono(t.origin)),
    field("home", idList(t.home, false)));
}

function outputSection(t) {
  const parts = ["stdout", "stderr", "output", "error"]
    .filter((k) => t[k] != null)
    .map((k) => h("div", { class: `out out-${k}` },
      h("div", { class: "out-label", text: k }),
      h("pre", { text: t[k] === "" ? "(empty)" : t[k] })));
  return [h("h3", { text: "Output" }), parts.length ? parts : h("p", { class: "muted", text: "No output yet." })];
}

function smallTable(headers, rows) {
  if (!rows.length) return h("p", { class: "muted", text: "None." });
  return h("table", { class: "grid small-grid" },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { text: x })))),
    h("tbody", {}, rows));
}

function attemptsTable(attempts) {
  return smallTable(["#", "peer", "epoch", "ending", "exit code", "detail", "at"], attempts.map((a, i) =>
    h("tr", {},
      h("td", { class: "num", text: i + 1 }),
      h("td", { class: "mono", title: a.peer || "", text: shortId(a.peer) }),
      h("td", { class: "mono", title: String(a.epoch), text: fmtEpoch(a.epoch) }),
      h("td", {}, h("span", { class: `badge ending-${a.ending === "success" ? "ok" : "bad"}`, text: a.ending || "—" })),
      h("td", { class: "num", text: a.exit_code ?? "—" }),
      h("td", { class: "detail", text: a.detail || "" }),
      h("td", { class: "nowrap", title: fmtFullTime(a.at_ms), text: fmtTime(a.at_ms) }))));
}

function historyTable(history) {
  return smallTable(["at", "state", "peer", "epoch", "note"], history.map((e) =>
    h("tr", {},
      h("td", { class: "nowrap", title: fmtFullTime(e.at_ms), text: fmtTime(e.at_ms) }),
      h("td", {}, stateBadge(e.state)),
      h("td", { class: "mono", title: e.peer || "", text: e.peer ? shortId(e.peer) : "—" }),
      h("td", { class: "mono", title: String(e.epoch ?? ""), text: fmtEpoch(e.epoch) }),
      h("td", { class: "detail", text: e.note || "" }))));
}

const SEALED_SHOWN = 96;

function proofSection() {
  const title = h("h3", { text: "Proof" });
  if (!state.proof) {
    const text = state.proofError ? `No proof: ${state.proofError}` : "Loading…";
    return [title, h("p", { class: "muted", text })];
  }
  const chain = state.proof.chain || [];
  return [
    title,
    chain.length ? h("ol", { class: "chain" }, chain.map((line) => h("li", { class: "mono", text: line })))
      : h("p", { class: "muted", text: "Empty chain." }),
    sealedBlock(state.proof.sealed || ""),
  ];
}

function sealedBlock(hex) {
  const long = hex.length > SEALED_SHOWN;
  const shown = long && !state.proofOpen ? hex.slice(0, SEALED_SHOWN) + "…" : hex;
  const toggle = long ? h("button", {
    type: "button", class: "ghost small",
    text: state.proofOpen ? "collapse" : `show all (${Math.floor(hex.length / 2)} bytes)`,
    onclick: () => { state.proofOpen = !state.proofOpen; renderTaskPage(); },
  }) : null;
  return h("div", { class: "sealed" },
    h("div", { class: "out-label" }, "sealed ", toggle),
    h("pre", { class: "hex", text: shown || "(empty)" }));
}

/* ---------- routing ---------- */

function routeOf(hash) {
  const m = /^#\/task\/([^/?#]+)/.exec(hash || "");
  return m ? { page: "task", id: decodeURIComponent(m[1]) } : { page: "home" };
}

function onRoute() {
  const before = state.route;
  state.route = routeOf(location.hash);
  const onTask = state.route.page === "task";
  $("home-page").hidden = onTask;
  if (onTask) {
    if (before.page !== "task" || before.id !== state.route.id) window.scrollTo(0, 0);
    openTaskPage(state.route.id);
  } else {
    closeTaskPage();
    pollNow("tasks", "counts", "load");
  }
}

/* ---------- wiring ---------- */

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

function bindForms() {
  $("base-form").addEventListener("submit", (e) => { e.preventDefault(); setBase($("peer-base").value); });
  $("peer-down-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("peer-down-input").value.trim();
    if (value) setBase(value);
  });
  $("auth-form").addEventListener("submit", (e) => { e.preventDefault(); saveToken($("auth-token").value); });
  $("auth-clear").addEventListener("click", () => saveToken(""));
  $("auth-close").addEventListener("click", () => { $("auth-box").hidden = true; });
  $("token-button").addEventListener("click", showTokenForm);
  $("submit-command-form").addEventListener("submit", onSubmitCommand);
  $("submit-json-form").addEventListener("submit", onSubmitJson);
  $("submit-command").addEventListener("input", showCommandPreview);
}

function showCommandPreview() {
  const args = splitCommand($("submit-command").value);
  setText("submit-preview", args.length ? `→ ${JSON.stringify({ command: args })}` : "");
}

function bindFilters() {
  $("task-filters").addEventListener("submit", (e) => e.preventDefault());
  $("task-search").addEventListener("input", renderTasks);
  $("filter-state").addEventListener("change", onFiltersChanged);
  const later = debounce(onFiltersChanged, 400);
  $("filter-label").addEventListener("input", later);
  $("filter-submitter").addEventListener("input", later);
  $("tasks-more").addEventListener("click", loadMore);
}

function init() {
  bindForms();
  bindFilters();
  addPoll("cluster", 2000, pollCluster);
  addPoll("tasks", 2000, pollTasks, onHome);
  addPoll("counts", 2000, pollCounts, onHome);
  addPoll("load", 10000, pollLoad, onHome);
  addPoll("task", 2000, pollTask, onTaskPage);
  window.addEventListener("hashchange", onRoute);
  renderAll();
  onRoute();
  pollNow("cluster");
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
