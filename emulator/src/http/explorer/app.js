// The emulator's explorer: plain JavaScript, no build step. It asks for a key once, signs
// its own SAS tokens (Web Crypto HMAC-SHA256, as every Service Bus client does), and talks
// to the emulator's REST surface and control API (/$emulator/...) like any other client.
"use strict";

const ATOM = "http://www.w3.org/2005/Atom";
const $ = (id) => document.getElementById(id);
const state = { keyName: "", key: "", token: null, tokenUntil: 0, selected: null, manual: false };

// ---- signing and requests ----------------------------------------------------------------

async function token() {
  const now = Math.floor(Date.now() / 1000);
  if (state.token && now < state.tokenUntil - 60) return state.token;
  const expiry = now + 3600;
  const resource = encodeURIComponent(location.origin + "/");
  const raw = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", raw.encode(state.key), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, raw.encode(resource + "\n" + expiry));
  const signature = btoa(String.fromCharCode(...new Uint8Array(mac)));
  state.token = `SharedAccessSignature sr=${resource}&sig=${encodeURIComponent(signature)}&se=${expiry}&skn=${encodeURIComponent(state.keyName)}`;
  state.tokenUntil = expiry;
  return state.token;
}

// Path segments are encoded one by one: entity names may hold '/'.
const url = (path) => "/" + path.split("/").map(encodeURIComponent).join("/");

async function api(method, path, { body, headers = {}, query = "" } = {}) {
  const response = await fetch(url(path) + query, {
    method,
    body,
    headers: { Authorization: await token(), ...headers },
  });
  if (response.status >= 400) {
    const text = await response.text();
    const detail = (text.match(/<Detail>([^<]*)/) || [])[1] || (() => { try { return JSON.parse(text).error; } catch { return text; } })();
    throw new Error(`${method} ${path}: ${response.status} ${detail || ""}`);
  }
  return response;
}

const xml = async (response) => new DOMParser().parseFromString(await response.text(), "application/xml");
const json = async (response) => response.json();

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function guarded(action) {
  try {
    await action();
  } catch (e) {
    say(e.message, true);
  }
}

// ---- reading entities --------------------------------------------------------------------

function entries(doc) {
  return [...doc.getElementsByTagNameNS(ATOM, "entry")].map((entry) => {
    const text = (name) => {
      const node = entry.getElementsByTagNameNS("*", name)[0];
      return node ? node.textContent : "";
    };
    return {
      name: entry.getElementsByTagNameNS(ATOM, "title")[0].textContent,
      active: +text("ActiveMessageCount"),
      deadLetter: +text("DeadLetterMessageCount"),
      scheduled: +text("ScheduledMessageCount"),
      sql: text("SqlExpression"),
      filterType: (entry.getElementsByTagNameNS("*", "Filter")[0] || { getAttribute: () => "" })
        .getAttribute("i:type"),
    };
  });
}

async function list(path) {
  return entries(await xml(await api("GET", path, { query: "?$top=1000" })));
}

function counts(e) {
  const span = document.createElement("span");
  span.className = "count";
  span.dataset.active = e.active;
  span.dataset.deadLetter = e.deadLetter;
  span.dataset.scheduled = e.scheduled;
  span.innerHTML = `${e.active} active, <span class="dlq">${e.deadLetter} dead-letter</span>, ${e.scheduled} scheduled`;
  return span;
}

function item(label, entity, e) {
  const li = document.createElement("li");
  const a = document.createElement("a");
  a.textContent = label;
  a.dataset.path = entity.path;
  if (state.selected && state.selected.path === entity.path) a.classList.add("selected");
  a.onclick = () => select(entity);
  li.append(a);
  if (e && entity.kind !== "topic") li.append(counts(e));
  return li;
}

async function refresh() {
  const queues = await list("$Resources/Queues");
  const topics = await list("$Resources/Topics");
  const known = new Map();
  const ql = $("queues");
  ql.replaceChildren(...queues.map((q) => {
    const entity = { kind: "queue", path: q.name };
    known.set(entity.path, q);
    return item(q.name, entity, q);
  }));
  const tl = $("topics");
  const topicItems = [];
  for (const t of topics) {
    const entity = { kind: "topic", path: t.name };
    known.set(entity.path, t);
    const li = item(t.name, entity, null);
    const subs = document.createElement("ul");
    for (const s of await list(`${t.name}/Subscriptions`)) {
      const sub = { kind: "subscription", path: `${t.name}/Subscriptions/${s.name}`, topic: t.name };
      known.set(sub.path, s);
      subs.append(item(s.name, sub, s));
    }
    li.append(subs);
    topicItems.push(li);
  }
  tl.replaceChildren(...topicItems);
  const clock = await json(await api("GET", "$emulator/clock"));
  state.manual = clock.manual;
  $("clock").textContent = `broker time ${clock.now}${clock.manual ? " (manual)" : ""}`;
  $("advance").hidden = !clock.manual;
  if (state.selected) {
    const e = known.get(state.selected.path);
    if (!e) {
      state.selected = null;
      $("detail").hidden = true;
    } else {
      $("detail-counts").replaceChildren(state.selected.kind === "topic" ? "" : counts(e));
      if (state.selected.kind === "subscription") await rules();
    }
  }
  document.body.dataset.connected = "true";
}

async function rules() {
  const found = await list(`${state.selected.path}/Rules`);
  const ul = document.createElement("ul");
  ul.id = "rules";
  for (const r of found) {
    const li = document.createElement("li");
    li.textContent = `${r.name}: ${r.filterType || "filter"} ${r.sql}`;
    ul.append(li);
  }
  const title = document.createElement("h3");
  title.textContent = "Rules";
  $("detail-rules").replaceChildren(title, ul);
}

// ---- the selected entity -----------------------------------------------------------------

async function select(entity) {
  state.selected = entity;
  $("detail").hidden = false;
  $("detail-title").textContent = `${entity.kind} ${entity.path}`;
  $("detail-rules").replaceChildren();
  $("send").hidden = entity.kind === "subscription";
  $("messages-pane").hidden = entity.kind === "topic";
  $("new-subscription").hidden = entity.kind !== "topic";
  $("subqueue").value = "";
  $("resubmit").hidden = true;
  $("messages").tBodies[0].replaceChildren();
  await guarded(refresh);
  if (entity.kind !== "topic") await guarded(peek);
}

const receivable = () => state.selected.path + ($("subqueue").value === "dlq" ? "/$DeadLetterQueue" : "");

function cell(text, pre = false) {
  const td = document.createElement("td");
  if (pre) {
    const p = document.createElement("pre");
    p.textContent = text;
    td.append(p);
  } else {
    td.textContent = text;
  }
  return td;
}

// Custom properties as values: the peek gives each as its REST header text (`"blue"` for a
// string, `42` for a number), which the resubmit sends back unchanged.
function readable(properties) {
  const out = {};
  for (const [name, text] of Object.entries(properties)) {
    try {
      out[name] = JSON.parse(text);
    } catch {
      out[name] = text;
    }
  }
  return out;
}

async function peek() {
  const peeked = await json(await api("GET", `$emulator/peek/${receivable()}`, { query: "?count=100" }));
  const rows = peeked.messages.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.sequence = m.sequenceNumber;
    const system = {};
    for (const k of ["messageId", "correlationId", "label", "to", "replyTo", "contentType", "sessionId", "deliveryCount", "enqueuedTimeUtc", "timeToLive"]) {
      if (m[k] !== null && m[k] !== undefined) system[k] = m[k];
    }
    tr.append(
      cell(m.sequenceNumber),
      cell(m.state),
      cell(m.body !== undefined ? m.body : `(base64) ${m.bodyBase64}`, true),
      cell(JSON.stringify(system, null, 1), true),
      cell(JSON.stringify(readable(m.userProperties), null, 1), true),
    );
    return tr;
  });
  $("messages").tBodies[0].replaceChildren(...rows);
  $("resubmit").hidden = $("subqueue").value !== "dlq";
  say(`${rows.length} message(s) peeked`);
}

// A message as a send request: BrokerProperties and custom properties as the peek read them.
function outgoing(m) {
  const broker = {};
  for (const [k, name] of [["messageId", "MessageId"], ["correlationId", "CorrelationId"], ["label", "Label"], ["to", "To"], ["replyTo", "ReplyTo"], ["contentType", "ContentType"], ["sessionId", "SessionId"]]) {
    if (m[k] !== null && m[k] !== undefined) broker[name] = m[k];
  }
  const headers = { BrokerProperties: JSON.stringify(broker) };
  for (const [name, value] of Object.entries(m.userProperties)) {
    if (!/^DeadLetter(Reason|ErrorDescription)$/i.test(name)) headers[name] = value;
  }
  return { headers, body: m.body !== undefined ? m.body : Uint8Array.from(atob(m.bodyBase64), (c) => c.charCodeAt(0)) };
}

// Moves every dead-lettered message back: each is locked, sent again to its queue (or its
// subscription's topic), then completed, so none is lost or sent twice by the explorer.
async function resubmit() {
  const dlq = `${state.selected.path}/$DeadLetterQueue`;
  const to = state.selected.kind === "subscription" ? state.selected.topic : state.selected.path;
  let moved = 0;
  for (;;) {
    const locked = await api("POST", `${dlq}/messages/head`, { query: "?timeout=0" });
    if (locked.status === 204) break;
    const sequence = JSON.parse(locked.headers.get("BrokerProperties")).SequenceNumber;
    const [m] = (await json(await api("GET", `$emulator/peek/${dlq}`, { query: `?from=${sequence}&count=1` }))).messages;
    const { headers, body } = outgoing(m);
    await api("POST", `${to}/messages`, { headers, body });
    await fetch(new URL(locked.headers.get("Location")).pathname, { method: "DELETE", headers: { Authorization: await token() } });
    moved += 1;
  }
  await refresh();
  await peek();
  say(`${moved} message(s) resubmitted to ${to}`);
}

// ---- forms -------------------------------------------------------------------------------

const entry = (element) => `<?xml version="1.0" encoding="utf-8"?><entry xmlns="${ATOM}"><content type="application/xml"><${element} xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"/></content></entry>`;

async function create(path, element) {
  await api("PUT", path, { body: entry(element), headers: { "Content-Type": "application/atom+xml;type=entry;charset=utf-8" } });
  say(`created ${path}`);
  await refresh();
}

function on(id, event, action) {
  $(id).addEventListener(event, (e) => {
    e.preventDefault();
    guarded(action);
  });
}

on("login", "submit", async () => {
  state.keyName = $("key-name").value;
  state.key = $("key").value;
  state.token = null;
  await refresh();
  say("connected");
});
on("new-queue", "submit", () => create($("new-queue-name").value, "QueueDescription"));
on("new-topic", "submit", () => create($("new-topic-name").value, "TopicDescription"));
on("new-subscription", "submit", () => create(`${state.selected.path}/Subscriptions/${$("new-subscription-name").value}`, "SubscriptionDescription"));
on("delete-entity", "click", async () => {
  if (!confirm(`Delete ${state.selected.path}?`)) return;
  await api("DELETE", state.selected.path);
  say(`deleted ${state.selected.path}`);
  state.selected = null;
  $("detail").hidden = true;
  await refresh();
});
on("send", "submit", async () => {
  const headers = { BrokerProperties: JSON.stringify($("send-label").value ? { Label: $("send-label").value } : {}) };
  const property = $("send-property").value;
  if (property.includes("=")) {
    const [name, ...value] = property.split("=");
    headers[name.trim()] = JSON.stringify(value.join("="));
  }
  await api("POST", `${state.selected.path}/messages`, { body: $("send-body").value, headers });
  say(`sent to ${state.selected.path}`);
  await refresh();
});
on("peek", "click", peek);
on("subqueue", "change", peek);
on("resubmit", "click", resubmit);
on("purge", "click", async () => {
  if (!confirm(`Purge ${receivable()}?`)) return;
  const purged = await json(await api("POST", `$emulator/purge/${receivable()}`));
  say(`${purged.purged} message(s) purged`);
  await refresh();
  await peek();
});
on("advance", "submit", async () => {
  await api("POST", "$emulator/clock/advance", { query: `?seconds=${$("advance-seconds").value}` });
  await refresh();
});

// ---- start -------------------------------------------------------------------------------

$("key-name").value = document.body.dataset.keyName;
$("key").value = document.body.dataset.defaultKey;
if (document.body.dataset.defaultKey) guarded(() => $("login").requestSubmit());
setInterval(() => {
  if (state.key) guarded(refresh);
}, 2000);
document.body.dataset.ready = "true";
