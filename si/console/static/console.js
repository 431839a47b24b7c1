// si's web console: a client of the hub's HTTP API like any other, in plain JavaScript.
//
// One push feed (GET /api/v1/watch, one NDJSON line of the whole hub a second) drives every
// list; streams (output, log, events, a topic peek) are followed with fetch and resumed by byte
// offset (x-si-offset), so a hub restart or a pause never shows a byte twice. Requests carry the
// session cookie of `si hub console`, or the bearer token typed into the sign-in form.
"use strict";

const API = "/api/v1";
const RETRY_MS = 1000; // never ask the hub again sooner than this
const STREAM_LINES = 2000; // lines kept on screen per stream
const TOKEN_KEY = "si.token";

const si = {
  snapshot: null, // the last line of the watch feed
  previous: null, // the one before: rates are the difference
  view: null, // the current view's object, with update() and close()
  hubUp: null,
  lastRenderMs: 0, // how long the last instance list render took (bench/console.py reads it)
  renders: 0,
};
window.siConsole = si;

// -- talking to the hub ---------------------------------------------------------------------

class HubError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra) {
  const result = new Headers(extra || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) result.set("authorization", `Bearer ${token}`);
  return result;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && (body.error || body.message)) message = body.error || body.message;
  } catch (_) {
    /* not JSON: keep the status line */
  }
  return new HubError(response.status, message);
}

async function api(method, path, body, extraHeaders) {
  const init = { method, headers: headers(extraHeaders), credentials: "same-origin" };
  if (body !== undefined) {
    if (typeof body === "string" || body instanceof Blob) {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers.set("content-type", "application/json");
    }
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (error) {
    throw new HubError(0, "the hub does not answer");
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (error.status === 401) askForToken(error.message);
    throw error;
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// Follow a byte stream from `position` (null: where the hub says), calling onData(text, start)
// for each piece; resumes at the next byte after a break. Returns {stop(), position}.
function follow(path, { position = null, onData, onState, onEnd, decode = true }) {
  const stream = { position, stopped: false, controller: null };
  const decoder = new TextDecoder();
  stream.stop = () => {
    stream.stopped = true;
    if (stream.controller) stream.controller.abort();
  };
  (async () => {
    while (!stream.stopped) {
      stream.controller = new AbortController();
      const extra = {};
      if (stream.position !== null) extra["x-si-offset"] = String(stream.position);
      let ended = false;
      try {
        const response = await fetch(API + path, {
          headers: headers(extra),
          credentials: "same-origin",
          signal: stream.controller.signal,
        });
        if (!response.ok) {
          const error = await errorOf(response);
          if (error.status === 401) askForToken(error.message);
          onState && onState(`stopped: ${error.message}`, error);
          if (error.status === 404 || error.status === 400 || error.status === 401) return;
          throw error;
        }
        const start = response.headers.get("x-si-offset");
        if (start !== null) stream.position = Number(start);
        onState && onState("following");
        const reader = response.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const begin = stream.position;
          if (stream.position !== null) stream.position += value.byteLength;
          onData(decode ? decoder.decode(value, { stream: true }) : value, begin);
        }
        ended = true;
      } catch (error) {
        if (stream.stopped) return;
        onState && onState(`reconnecting (${error.message || error})`, error);
      }
      if (ended) {
        // A clean end: the stream is over (the instance ended), unless the hub went away.
        onEnd && onEnd();
        if (!stream.again) return;
      }
      await sleep(RETRY_MS);
    }
  })();
  return stream;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- the watch feed: everything the lists show ------------------------------------------------

function startWatch() {
  let buffer = "";
  const feed = follow("/watch", {
    onData(text) {
      buffer += text;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 1);
        if (!line) continue;
        si.previous = si.snapshot;
        si.snapshot = JSON.parse(line);
        setHubUp(true);
        if (si.view && si.view.update) si.view.update();
      }
    },
    onState(state, error) {
      if (state === "following") return;
      buffer = "";
      if (error && error.status === 401) {
        setHubUp(null, "not signed in");
        return;
      }
      setHubUp(false, error && error.message);
    },
  });
  feed.again = true; // the feed never ends by itself: an end means the hub went away
  return feed;
}

function setHubUp(up, why) {
  const state = document.getElementById("hub-state");
  const banner = document.getElementById("banner");
  si.hubUp = up;
  if (up) {
    state.textContent = "hub: connected";
    state.className = "hub-state up";
    if (banner.dataset.kind === "hub") banner.hidden = true;
  } else if (up === false) {
    state.textContent = "hub: not answering";
    state.className = "hub-state down";
    showBanner(
      `The hub is not answering${why ? ` (${why})` : ""}. Retrying every second; ` +
        "running instances keep running.",
      "hub",
    );
  } else {
    state.textContent = `hub: ${why}`;
    state.className = "hub-state";
  }
}

function showBanner(text, kind = "error") {
  const banner = document.getElementById("banner");
  banner.textContent = text;
  banner.dataset.kind = kind;
  banner.hidden = false;
}

function askForToken(reason) {
  const form = document.getElementById("login");
  document.getElementById("login-reason").textContent = sessionStorage.getItem(TOKEN_KEY)
    ? `The hub refused the token: ${reason}`
    : reason;
  form.hidden = false;
}

// -- formatting -----------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

function age(iso) {
  if (!iso) return "–";
  let seconds = Math.max(0, Math.round(Date.now() / 1000 - Date.parse(iso) / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${seconds % 60 ? ` ${seconds % 60}s` : ""}`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h ${minutes % 60}m`;
  return `${Math.floor(hours / 24)}d`;
}

function rates() {
  // Per instance id: {cpu %, out B/s, in B/s}, from the last two lines of the feed.
  const result = new Map();
  const now = si.snapshot;
  const before = si.previous;
  if (!now || !before) return result;
  const seconds = now.at - before.at;
  if (seconds <= 0) return result;
  const old = new Map(before.instances.map((row) => [row.id, row]));
  for (const row of now.instances) {
    const was = old.get(row.id);
    if (!was) continue;
    const cpu =
      row.cpuSeconds !== null && was.cpuSeconds !== null && row.cpuSeconds !== undefined
        ? (100 * (row.cpuSeconds - was.cpuSeconds)) / seconds
        : null;
    result.set(row.id, {
      cpu,
      out: Math.max(0, (row.outputBytes - was.outputBytes) / seconds),
      in: Math.max(0, (row.inputBytes - was.inputBytes) / seconds),
    });
  }
  return result;
}

function sequenceId(row) {
  return typeof row.sequence === "object" && row.sequence ? row.sequence.id : row.sequence;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

const ENDED = new Set(["completed", "errored", "lost"]);

// -- instance actions -----------------------------------------------------------------------

async function act(what, id, button) {
  if (button) button.disabled = true;
  try {
    if (what === "stop") await api("POST", `/instance/${enc(id)}/_stop`, {});
    else if (what === "kill") await api("POST", `/instance/${enc(id)}/_kill`, {});
    else if (what === "restart") await restart(id);
    announce(`${what}: ${id}`);
  } catch (error) {
    showBanner(`Could not ${what} ${id}: ${error.message}`);
  } finally {
    if (button) button.disabled = false;
  }
}

// As `si inst restart`: kill, wait until the id is free, start again with the same settings.
async function restart(id) {
  const record = await api("GET", `/instance/${enc(id)}`);
  const payload = { appConfig: record.appConfig || {} };
  if (record.args && record.args.length) payload.args = record.args;
  if (record.requires) payload.inputTopic = record.requires;
  if (record.provides) payload.outputTopic = record.provides;
  if (record.name) payload.name = record.name;
  const policy = record.restartPolicy || {};
  if (policy.restart && policy.restart !== "no") {
    payload.restart = policy.restart;
    if (policy.maxRestarts !== undefined) payload.maxRestarts = policy.maxRestarts;
    if (policy.restartWindow !== undefined) payload.restartWindow = policy.restartWindow;
  }
  if (record.limits) {
    const limits = {};
    if (record.limits.memory !== undefined) limits.memory = record.limits.memory;
    if (record.limits.cpu !== undefined) limits.cpu = record.limits.cpu;
    payload.limits = limits;
  }
  let ended = ENDED.has(record.status);
  if (!ended) {
    try {
      await api("POST", `/instance/${enc(id)}/_kill`, { removeImmediately: true });
    } catch (error) {
      if (error.status !== 400) throw error;
      ended = true;
    }
  }
  if (!ended) {
    for (let tries = 0; ; tries++) {
      try {
        await api("GET", `/instance/${enc(id)}`);
      } catch (error) {
        if (error.status === 404) break;
        throw error;
      }
      if (tries > 15) throw new HubError(0, "the killed instance did not go away");
      await sleep(RETRY_MS);
    }
    payload.instanceId = id;
  }
  const started = await api("POST", `/sequence/${enc(sequenceId(record))}/start`, payload);
  if (started.id && started.id !== id) location.hash = `#/instance/${started.id}`;
}

const enc = encodeURIComponent;

function announce(text) {
  const state = document.getElementById("hub-state");
  state.dataset.last = text;
}

function actionButtons(id) {
  const wrap = element("span", { class: "row-actions" });
  for (const what of ["stop", "kill", "restart"]) {
    const button = element("button", {
      type: "button",
      class: what,
      "data-act": what,
      "aria-label": `${what} ${id}`,
      text: what[0].toUpperCase() + what.slice(1),
    });
    button.addEventListener("click", () => act(what, id, button));
    wrap.append(button);
  }
  return wrap;
}

// -- views ----------------------------------------------------------------------------------

function mount(templateId) {
  const main = document.getElementById("main");
  const content = document.getElementById(templateId).content.cloneNode(true);
  main.replaceChildren(content);
  return main;
}

function instancesView() {
  const root = mount("view-instances");
  const tbody = root.querySelector("[data-rows]");
  const filter = root.querySelector("[data-filter]");
  const status = root.querySelector("[data-status]");
  const rows = new Map(); // id -> {tr, cells}
  filter.value = sessionStorage.getItem("si.filter") || "";
  const redraw = () => {
    sessionStorage.setItem("si.filter", filter.value);
    update();
  };
  filter.addEventListener("input", redraw);
  status.addEventListener("change", redraw);

  function makeRow(row) {
    const link = element("a", { href: `#/instance/${row.id}` });
    const cells = {};
    const tr = element("tr", { "data-id": row.id });
    const names = ["id", "sequence", "status", "cpu", "rss", "out", "in", "restarts", "pid", "age"];
    const numeric = new Set(["cpu", "rss", "out", "in", "restarts", "pid", "age"]);
    const wide = new Set(["sequence", "out", "in", "restarts", "pid"]);
    for (const name of names) {
      const td = element(name === "id" ? "th" : "td");
      if (name === "id") td.setAttribute("scope", "row");
      const classes = [numeric.has(name) ? "num" : "", wide.has(name) ? "wide" : ""];
      td.className = classes.join(" ").trim();
      if (name === "id") {
        td.append(link);
        cells.id = link;
      } else cells[name] = td;
      td.dataset.col = name;
      tr.append(td);
    }
    const actions = element("td", { class: "actions" }, actionButtons(row.id));
    tr.append(actions);
    return { tr, cells };
  }

  function update() {
    const started = performance.now();
    const snapshot = si.snapshot;
    if (!snapshot) return;
    const measured = rates();
    const words = filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const wanted = status.value;
    const seen = new Set();
    let shown = 0;
    const fragment = document.createDocumentFragment();
    for (const row of snapshot.instances) {
      seen.add(row.id);
      let entry = rows.get(row.id);
      if (!entry) {
        entry = makeRow(row);
        rows.set(row.id, entry);
      }
      const haystack = `${row.id} ${row.name || ""} ${sequenceId(row)} ${row.status}`.toLowerCase();
      const visible =
        (!wanted || row.status === wanted) && words.every((word) => haystack.includes(word));
      entry.tr.hidden = !visible;
      if (visible) shown += 1;
      const rate = measured.get(row.id) || {};
      const c = entry.cells;
      setText(c.id, row.name ? `${row.name} (${row.id.slice(0, 8)})` : row.id.slice(0, 8));
      c.id.title = row.id;
      setText(c.sequence, String(sequenceId(row) || "").slice(0, 8));
      setText(c.status, row.status + (row.connected === false && row.status === "running" ? " ⚠" : ""));
      c.status.dataset.status = row.status;
      setText(c.cpu, rate.cpu === null || rate.cpu === undefined ? "–" : `${rate.cpu.toFixed(0)}%`);
      setText(c.rss, bytes(row.rssBytes));
      setText(c.out, rate.out === undefined ? "–" : `${bytes(rate.out)}/s`);
      setText(c.in, rate.in === undefined ? "–" : `${bytes(rate.in)}/s`);
      setText(c.restarts, String(row.restarts || 0));
      setText(c.pid, row.pid ? String(row.pid) : "–");
      setText(c.age, age(row.started || row.created));
      entry.ended = ENDED.has(row.status);
      for (const button of entry.tr.querySelectorAll("button[data-act=stop], button[data-act=kill]")) {
        button.disabled = entry.ended; // nothing left to stop; Restart starts it again
      }
      if (!entry.tr.parentNode) fragment.append(entry.tr);
    }
    if (fragment.childNodes.length) tbody.append(fragment);
    for (const [id, entry] of rows) {
      if (!seen.has(id)) {
        entry.tr.remove();
        rows.delete(id);
      }
    }
    setText(root.querySelector("[data-count]"), `(${shown} of ${snapshot.instances.length})`);
    root.querySelector("[data-empty]").hidden = snapshot.instances.length > 0;
    si.lastRenderMs = performance.now() - started;
    if (si.firstListedMs === undefined && snapshot.instances.length) {
      // From the page's navigation start to the first full list (bench/console.py reads it).
      si.firstListedMs = performance.now();
      si.firstRenderMs = si.lastRenderMs;
    }
    si.renders += 1;
    tbody.dataset.rendered = String(si.renders);
  }
  update();
  return { update, close() {} };
}

function sequencesView() {
  const root = mount("view-sequences");
  const tbody = root.querySelector("[data-rows]");
  const drop = root.querySelector("[data-drop]");
  const file = root.querySelector("[data-file]");
  const progress = root.querySelector("[data-progress]");
  const uploadState = root.querySelector("[data-upload-state]");
  const form = root.querySelector("[data-start]");
  let starting = null;

  function upload(chosen) {
    if (!chosen) return;
    progress.hidden = false;
    progress.value = 0;
    uploadState.textContent = `Uploading ${chosen.name}…`;
    // XMLHttpRequest: fetch cannot report an upload's progress.
    const request = new XMLHttpRequest();
    request.open("POST", `${API}/sequence`);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) request.setRequestHeader("authorization", `Bearer ${token}`);
    request.setRequestHeader("content-type", "application/octet-stream");
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) progress.value = event.loaded / event.total;
    };
    request.onload = () => {
      let body = {};
      try {
        body = JSON.parse(request.responseText);
      } catch (_) {
        /* keep {} */
      }
      if (request.status === 200) {
        progress.value = 1;
        uploadState.textContent = `Uploaded ${chosen.name}: sequence ${body.id}`;
        uploadState.dataset.sequence = body.id;
      } else {
        uploadState.textContent = `Upload refused (${request.status}): ${body.error || request.statusText}`;
        if (request.status === 401) askForToken(body.error || "a token is needed");
      }
    };
    request.onerror = () => {
      uploadState.textContent = "Upload failed: the hub does not answer";
    };
    request.send(chosen);
  }
  file.addEventListener("change", () => upload(file.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    upload(event.dataTransfer.files[0]);
  });

  form.querySelector("[data-cancel]").addEventListener("click", () => {
    form.hidden = true;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const state = form.querySelector("[data-start-state]");
    let payload;
    try {
      payload = startPayload(new FormData(form));
    } catch (error) {
      state.textContent = error.message;
      return;
    }
    try {
      const reply = await api("POST", `/sequence/${enc(starting)}/start`, payload);
      state.textContent = `Started ${reply.id}`;
      location.hash = `#/instance/${reply.id}`;
    } catch (error) {
      state.textContent = `Not started: ${error.message}`;
    }
  });

  function update() {
    const snapshot = si.snapshot;
    if (!snapshot) return;
    const fragment = document.createDocumentFragment();
    for (const sequence of snapshot.sequences) {
      const config = sequence.config || {};
      const start = element("button", { type: "button", "data-act": "start", text: "Start" });
      start.addEventListener("click", () => {
        starting = sequence.id;
        form.hidden = false;
        form.querySelector("[data-start-name]").textContent = config.name || sequence.id;
        form.querySelector("[name=args]").focus();
      });
      const remove = element("button", { type: "button", "data-act": "delete", text: "Delete" });
      remove.addEventListener("click", async () => {
        if (!confirm(`Delete sequence ${config.name || sequence.id}?`)) return;
        try {
          await api("DELETE", `/sequence/${enc(sequence.id)}`);
        } catch (error) {
          showBanner(`Could not delete: ${error.message}`);
        }
      });
      fragment.append(
        element(
          "tr",
          { "data-id": sequence.id },
          element("th", { scope: "row", title: sequence.id, text: sequence.id.slice(0, 8) }),
          element("td", { text: config.name || "" }),
          element("td", { class: "wide", text: config.version || "" }),
          element("td", { class: "num", text: String((sequence.instances || []).length) }),
          element("td", { class: "actions" }, start, " ", remove),
        ),
      );
    }
    // The list is short: rebuilt whole, unless a button in it has the focus.
    if (!tbody.contains(document.activeElement)) tbody.replaceChildren(fragment);
    setText(root.querySelector("[data-count]"), `(${snapshot.sequences.length})`);
    root.querySelector("[data-empty]").hidden = snapshot.sequences.length > 0;
  }
  update();
  return { update, close() {} };
}

function startPayload(data) {
  const payload = {};
  const args = (data.get("args") || "").trim();
  if (args) {
    if (args.startsWith("[")) {
      payload.args = JSON.parse(args);
      if (!Array.isArray(payload.args)) throw new Error("args must be a JSON array");
    } else {
      payload.args = (args.match(/"[^"]*"|\S+/g) || []).map((word) =>
        word.startsWith('"') ? word.slice(1, -1) : word,
      );
    }
  }
  const config = (data.get("appConfig") || "").trim();
  if (config) {
    try {
      payload.appConfig = JSON.parse(config);
    } catch (_) {
      throw new Error("appConfig is not valid JSON");
    }
  }
  for (const key of ["name", "inputTopic", "outputTopic", "restart"]) {
    const value = (data.get(key) || "").trim();
    if (value) payload[key] = value;
  }
  const maxRestarts = data.get("maxRestarts");
  if (maxRestarts) payload.maxRestarts = Number(maxRestarts);
  const limits = {};
  if (data.get("memory")) limits.memory = Number(data.get("memory"));
  if (data.get("cpu")) limits.cpu = Number(data.get("cpu"));
  if (Object.keys(limits).length) payload.limits = limits;
  return payload;
}

function topicsView() {
  const root = mount("view-topics");
  const tbody = root.querySelector("[data-rows]");
  const panel = root.querySelector("[data-peek]");
  const text = root.querySelector("[data-peek-text]");
  let peek = null;
  const closePeek = () => {
    if (peek) peek.stop();
    peek = null;
    panel.hidden = true;
  };
  root.querySelector("[data-peek-close]").addEventListener("click", closePeek);

  function update() {
    const snapshot = si.snapshot;
    if (!snapshot) return;
    const fragment = document.createDocumentFragment();
    for (const topic of snapshot.topics) {
      const button = element("button", { type: "button", "data-act": "peek", text: "Peek" });
      button.addEventListener("click", () => {
        closePeek();
        panel.hidden = false;
        text.textContent = "";
        root.querySelector("[data-peek-name]").textContent = topic.id;
        const screen = new StreamScreen(text);
        peek = follow(`/topics/${enc(topic.id)}/peek`, {
          onData: (chunk) => screen.add(chunk),
          onState: (state) => state !== "following" && screen.note(state),
        });
      });
      fragment.append(
        element(
          "tr",
          { "data-id": topic.id },
          element("th", { scope: "row", text: topic.id }),
          element("td", { class: "wide", text: topic.contentType }),
          element("td", { class: "num", text: String(topic.producers) }),
          element("td", { class: "num", text: String(topic.consumers) }),
          element("td", { class: "num", text: bytes(topic.depthBytes) }),
          element("td", { class: "actions" }, button),
        ),
      );
    }
    if (!tbody.contains(document.activeElement)) tbody.replaceChildren(fragment);
    setText(root.querySelector("[data-count]"), `(${snapshot.topics.length})`);
    root.querySelector("[data-empty]").hidden = snapshot.topics.length > 0;
  }
  update();
  return { update, close: closePeek };
}

// The last STREAM_LINES lines of a stream in a <pre>, kept scrolled to the end unless the
// reader scrolled up.
class StreamScreen {
  constructor(pre, format) {
    this.pre = pre;
    this.format = format;
    this.partial = "";
    this.lines = 0;
  }
  add(text) {
    const stick = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    let chunk = this.partial + text;
    if (this.format) {
      const cut = chunk.lastIndexOf("\n");
      this.partial = chunk.slice(cut + 1);
      chunk = cut < 0 ? "" : chunk.slice(0, cut + 1).split("\n").filter(Boolean).map(this.format).join("");
      if (!chunk) return;
    } else {
      this.partial = "";
    }
    this.pre.append(document.createTextNode(chunk));
    this.lines += (chunk.match(/\n/g) || []).length;
    if (this.lines > STREAM_LINES * 1.5) this.trim();
    if (stick) this.pre.scrollTop = this.pre.scrollHeight;
  }
  trim() {
    const all = this.pre.textContent;
    let cut = all.length;
    for (let kept = 0; kept < STREAM_LINES && cut > 0; kept++) cut = all.lastIndexOf("\n", cut - 2) + 1;
    this.pre.textContent = all.slice(cut);
    this.lines = STREAM_LINES;
  }
  note(text) {
    const mark = element("span", { class: "mark", text: `— ${text} —\n` });
    this.pre.append(mark);
  }
}

function logLine(line) {
  try {
    const entry = JSON.parse(line);
    const when = typeof entry.ts === "number" ? new Date(entry.ts).toISOString().slice(11, 23) : "";
    const level = String(entry.level || "").toUpperCase();
    const extra = entry.data && entry.data.length ? ` ${JSON.stringify(entry.data)}` : "";
    return `${when} ${level} ${entry.msg ?? entry.message ?? ""}${extra}\n`;
  } catch (_) {
    return `${line}\n`;
  }
}

function instanceView(id) {
  const root = mount("view-instance");
  root.querySelector("[data-id]").textContent = id;
  const facts = root.querySelector("[data-facts]");
  const notice = root.querySelector("[data-notice]");
  root.querySelector("[data-actions]").append(actionButtons(id));
  const streams = {};
  const path = `/instance/${enc(id)}`;

  for (const name of ["output", "log"]) {
    const pre = root.querySelector(`[data-stream=${name}]`);
    const stateText = root.querySelector(`[data-state=${name}]`);
    const button = root.querySelector(`[data-pause=${name}]`);
    const screen = new StreamScreen(pre, name === "log" ? logLine : null);
    const entry = { screen, follower: null, position: null, paused: false };
    const open = () => {
      entry.follower = follow(`${path}/${name}${entry.position === null && name === "log" ? "?tail=200" : ""}`, {
        position: entry.position,
        onData: (text) => screen.add(text),
        onState: (state) => {
          stateText.textContent = entry.paused ? "paused" : state;
          pre.dataset.offset = String(entry.follower ? entry.follower.position : "");
        },
        onEnd: () => {
          stateText.textContent = "ended";
        },
      });
      entry.follower.again = false;
    };
    button.addEventListener("click", () => {
      if (entry.paused) {
        entry.paused = false;
        button.textContent = "Pause";
        open();
      } else {
        entry.paused = true;
        entry.position = entry.follower.position; // resume exactly here
        entry.follower.stop();
        button.textContent = "Resume";
        stateText.textContent = `paused at byte ${entry.position}`;
      }
    });
    streams[name] = entry;
    open();
  }

  const events = root.querySelector("[data-events]");
  const addEvent = (direction, name, message) => {
    const item = element("li", { class: direction });
    item.append(
      element("span", { class: "dir", text: direction === "sent" ? "→ sent" : "← received" }),
      " ",
      element("code", { text: name }),
      " ",
      JSON.stringify(message ?? null),
    );
    events.prepend(item);
    while (events.children.length > 200) events.lastChild.remove();
  };
  let eventBuffer = "";
  const eventFeed = follow(`${path}/events`, {
    onData(text) {
      eventBuffer += text;
      let end;
      while ((end = eventBuffer.indexOf("\n")) >= 0) {
        const line = eventBuffer.slice(0, end);
        eventBuffer = eventBuffer.slice(end + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        addEvent("received", event.eventName, event.message);
      }
    },
    onState() {
      eventBuffer = "";
      // A reconnect repeats each name's last event: start the list afresh.
      events.querySelectorAll("li.received").forEach((item) => item.remove());
    },
  });

  const eventForm = root.querySelector("[data-event]");
  eventForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(eventForm);
    let message = null;
    const raw = (data.get("message") || "").trim();
    try {
      message = raw ? JSON.parse(raw) : null;
    } catch (_) {
      message = raw; // plain text is sent as a string
    }
    const name = data.get("eventName");
    try {
      await api("POST", `${path}/_event`, [5001, { eventName: name, message }]);
      addEvent("sent", name, message);
    } catch (error) {
      showBanner(`Event not sent: ${error.message}`);
    }
  });

  const inputForm = root.querySelector("[data-input]");
  const inputState = root.querySelector("[data-input-state]");
  const send = async (to, text, end) => {
    try {
      await api("POST", `${path}/${to}`, text, {
        "content-type": "text/plain",
        "x-end-stream": end ? "true" : "false",
      });
      inputState.textContent = end ? "input ended" : `sent ${text.length} characters to ${to}`;
    } catch (error) {
      inputState.textContent = `not sent: ${error.message}`;
    }
  };
  inputForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const area = inputForm.querySelector("textarea");
    let text = area.value;
    if (text && !text.endsWith("\n")) text += "\n";
    send(event.submitter ? event.submitter.value : "input", text, false);
    area.value = "";
  });
  root.querySelector("[data-end-input]").addEventListener("click", () => send("input", "", true));

  let gone = false;
  function update() {
    const snapshot = si.snapshot;
    if (!snapshot) return;
    const row = snapshot.instances.find((candidate) => candidate.id === id);
    if (!row) {
      if (!gone) {
        notice.textContent = `Instance ${id} is not on this hub (it was removed, or never was).`;
        notice.hidden = false;
        notice.dataset.kind = "gone";
      }
      gone = true;
      return;
    }
    gone = false;
    const rate = rates().get(id) || {};
    const health = row.health ? (row.health.healthy === false ? "unhealthy" : "healthy") : "–";
    const shown = [
      ["Status", row.status],
      ["Sequence", `${(row.sequence && row.sequence.name) || ""} ${sequenceId(row)}`.trim()],
      ["Name", row.name || "–"],
      ["PID", row.pid || "–"],
      ["Age", age(row.started || row.created)],
      ["CPU", rate.cpu === undefined || rate.cpu === null ? "–" : `${rate.cpu.toFixed(0)}%`],
      ["RSS", bytes(row.rssBytes)],
      ["Output", `${bytes(row.outputBytes)}${rate.out !== undefined ? ` (${bytes(rate.out)}/s)` : ""}`],
      ["Input", bytes(row.inputBytes)],
      ["Restarts", String(row.restarts || 0)],
      ["Health", health],
      ["Args", JSON.stringify(row.args || [])],
    ];
    if (row.provides) shown.push(["Provides", row.provides]);
    if (row.requires) shown.push(["Requires", row.requires]);
    const fragment = document.createDocumentFragment();
    for (const [term, value] of shown) {
      fragment.append(element("dt", { text: term }), element("dd", { text: String(value), "data-fact": term.toLowerCase() }));
    }
    facts.replaceChildren(fragment);
    if (ENDED.has(row.status) || row.terminated) {
      const exit = row.lastExit || {};
      const why = exit.reason || (row.terminated && row.terminated.reason) || "";
      notice.textContent =
        `This instance has stopped (${row.status}${why ? `: ${why}` : ""}). ` +
        "Its output and log stay readable until the hub's retention period ends.";
      notice.hidden = false;
      notice.dataset.kind = "ended";
    } else if (row.status === "running" && row.connected === false) {
      notice.textContent = "The hub is reconnecting to this instance's runner…";
      notice.hidden = false;
      notice.dataset.kind = "reconnecting";
    } else {
      notice.hidden = true;
      notice.dataset.kind = "";
    }
  }
  update();
  return {
    update,
    close() {
      for (const entry of Object.values(streams)) entry.follower && entry.follower.stop();
      eventFeed.stop();
    },
  };
}

// -- routing --------------------------------------------------------------------------------

function route() {
  if (si.view && si.view.close) si.view.close();
  const hash = location.hash || "#/instances";
  const [, view, id] = hash.split("/");
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "instance" && id) si.view = instanceView(decodeURIComponent(id));
  else if (view === "sequences") si.view = sequencesView();
  else if (view === "topics") si.view = topicsView();
  else si.view = instancesView();
  document.title = `si console: ${view || "instances"}`;
}

function start() {
  const login = document.getElementById("login");
  login.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("login-token").value.trim());
    login.hidden = true;
    if (si.watch) si.watch.stop();
    si.watch = startWatch();
    route(); // the view's own streams stopped at the 401: open them again with the token
  });
  window.addEventListener("hashchange", route);
  route();
  si.watch = startWatch();
}

document.addEventListener("DOMContentLoaded", start);
