// clonekv inspector: follows /v1/watch?prefix=P over server-sent events and
// keeps a table of the keys under P; sets and deletes through /v1/kv.
"use strict";

const $ = (id) => document.getElementById(id);
const rows = new Map(); // key -> <tr>
let source = null;
let prefix = new URLSearchParams(location.search).get("prefix") || "";
let lastSeq = 0;
let events = 0; // live updates (not snapshot keys), for the rate
let live = false;

function setState(s) { $("state").textContent = s; document.body.dataset.state = s; }
function say(text, isError) { $("msg").textContent = text; $("msg").className = isError ? "error" : ""; }

// keyURL is the /v1/kv URL of a key: in the path when it starts with a
// slash, as ?key= otherwise.
function keyURL(key, query) {
  const q = new URLSearchParams(query || {});
  let path = "/v1/kv";
  if (key.startsWith("/") && !key.split("/").some((s) => s === "." || s === "..")) {
    path += key.split("/").map(encodeURIComponent).join("/");
  } else {
    q.set("key", key);
  }
  const qs = q.toString();
  return qs ? path + "?" + qs : path;
}

function showValue(td, d) {
  td.textContent = d.value;
  td.className = "value" + (d.encoding === "base64" ? " base64" : "");
}

function upsert(d) {
  let tr = rows.get(d.key);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.key = d.key;
    for (const cls of ["key", "value", "seq", "expires", "actions"]) {
      const td = document.createElement("td");
      td.className = cls;
      tr.appendChild(td);
    }
    tr.cells[0].textContent = d.key;
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = "delete";
    b.className = "row-delete";
    b.addEventListener("click", () => write("DELETE", d.key));
    tr.cells[4].appendChild(b);
    tr.cells[0].addEventListener("click", () => { $("form-key").value = d.key; $("form-value").value = tr.cells[1].textContent; });
    // keep the table in key order
    let before = null;
    for (const [k, other] of rows) { if (k > d.key && (!before || k < before.dataset.key)) before = other; }
    $("rows").insertBefore(tr, before);
    rows.set(d.key, tr);
  }
  showValue(tr.cells[1], d);
  tr.cells[2].textContent = d.seq;
  tr.cells[3].textContent = d.ttl ? new Date(Date.now() + d.ttl * 1000).toLocaleTimeString() : "";
  tr.classList.remove("changed"); void tr.offsetWidth; tr.classList.add("changed");
  $("count").textContent = rows.size;
}

function remove(key) {
  const tr = rows.get(key);
  if (tr) { tr.remove(); rows.delete(key); }
  $("count").textContent = rows.size;
}

function seen(seq) {
  if (seq > lastSeq) { lastSeq = seq; $("seq").textContent = seq; }
  if (live) events++;
}

function watch(p) {
  prefix = p;
  $("prefix").value = p;
  history.replaceState(null, "", "?prefix=" + encodeURIComponent(p));
  if (source) source.close();
  rows.clear();
  $("rows").replaceChildren();
  $("count").textContent = 0;
  setState("connecting");
  // EventSource reconnects by itself, sending Last-Event-ID: the gateway
  // then sends only what was missed, or a reset and a fresh snapshot.
  source = new EventSource("/v1/watch?prefix=" + encodeURIComponent(p));
  source.addEventListener("reset", (e) => {
    const d = JSON.parse(e.data);
    rows.clear();
    $("rows").replaceChildren();
    live = false;
    lastSeq = 0;
    setState("loading");
    seen(d.seq);
  });
  source.addEventListener("put", (e) => { const d = JSON.parse(e.data); upsert(d); seen(d.seq); });
  source.addEventListener("delete", (e) => { const d = JSON.parse(e.data); remove(d.key); seen(d.seq); });
  source.addEventListener("synced", (e) => { const d = JSON.parse(e.data); seen(d.seq); live = true; setState("synced"); });
  source.addEventListener("closed", (e) => { say("stream closed by the server: " + JSON.parse(e.data).reason, true); });
  source.onerror = () => setState("reconnecting");
}

async function write(method, key) {
  const value = $("form-value").value;
  const ttl = $("form-ttl").value.trim();
  const headers = {};
  const token = $("form-token").value;
  if (token) headers["Authorization"] = "Bearer " + token;
  let body;
  if (method === "PUT") {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(ttl ? { value: value, ttl: ttl } : { value: value });
  }
  try {
    const r = await fetch(keyURL(key), { method, headers, body });
    const d = await r.json();
    if (!r.ok) { say(method + " " + key + ": " + d.error, true); return; }
    say((method === "PUT" ? "set " : "deleted ") + key + " at seq " + d.seq);
  } catch (err) {
    say(method + " " + key + ": " + err, true);
  }
}

async function poll() {
  try {
    const r = await fetch("/v1/status");
    const s = await r.json();
    $("watchers").textContent = s.watchers;
    $("subscribers").textContent = s.subscribers === undefined ? "-" : s.subscribers;
    $("token-label").hidden = !s.token_required;
    if (s.read_only) { $("set").disabled = true; $("del").disabled = true; }
  } catch (err) { /* the stream shows the connection state */ }
}

let rateFrom = { t: Date.now(), n: 0 };
setInterval(() => {
  const now = Date.now();
  $("rate").textContent = Math.round((events - rateFrom.n) * 1000 / (now - rateFrom.t));
  rateFrom = { t: now, n: events };
  poll();
}, 1000);

$("browse").addEventListener("submit", (e) => { e.preventDefault(); watch($("prefix").value); });
$("edit").addEventListener("submit", (e) => { e.preventDefault(); write("PUT", $("form-key").value); });
$("del").addEventListener("click", () => write("DELETE", $("form-key").value));
poll();
watch(prefix);
