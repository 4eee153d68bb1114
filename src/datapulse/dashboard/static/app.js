/*
 * DataPulse dashboard: the page's only script (plain ES2020, no framework, no build step, no dependency).
 * Served at /dashboard/app.js under a strict Content-Security-Policy; talks to the JSON API under
 * /dashboard/api/ and to the DataPulse API (/events, /message). The contract is docs/dashboard.md.
 *
 * Credentials: the token typed by the user is sent once (POST /dashboard/api/sign-in) and dropped; the
 * dashboard ticket it is exchanged for lives in `state.ticket` and sessionStorage only. Neither ever goes
 * into a URL, localStorage or the console.
 */
"use strict";

(() => {
  const TICKET_KEY = "datapulse.ticket";
  const EXPIRED_MESSAGE = "Your dashboard ticket expired or was revoked; sign in again.";
  const TABS = ["sessions", "catalog", "stats", "audit", "try", "watch"];
  const LIVE_TABS = new Set(["sessions", "stats", "audit"]);
  const POLL_MS = 2000;
  const MAX_WATCH_FRAMES = 2000;
  const MAX_TRY_FRAMES = 500;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STATUS_TEXT = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
  };

  const state = {
    ticket: null, // "dpt_..." or null (auth off)
    signedIn: false,
    principal: null,
    admin: false,
    overview: null,
    catalog: null,
    catalogLoading: null,
    tab: "sessions",
    pollGeneration: 0,
    pollTimer: null,
    lastRendered: { stats: null, audit: null },
  };

  // ---------------------------------------------------------------------------------------------------------
  // Small DOM helpers

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  /** Create an element: el("td", {class: "age", title: "..."}, "12 s", childNode, ...). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    appendAll(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    appendAll(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function appendAll(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  /** Show `message` in an error element (hidden when empty). */
  function setError(node, message) {
    node.textContent = message || "";
    node.hidden = !message;
  }

  function pretty(value) {
    try {
      return JSON.stringify(value, null, 2);
    } catch (_err) {
      return String(value);
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Formatting

  function fmtDuration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
    const s = Math.max(0, seconds);
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) {
      const h = Math.floor(s / 3600);
      const m = Math.floor((s % 3600) / 60);
      return m ? `${h} h ${m} min` : `${h} h`;
    }
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    return h ? `${d} d ${h} h` : `${d} d`;
  }

  /** Milliseconds with a sensible precision; "—" for null. */
  function fmtMs(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "—";
    const digits = Math.abs(value) < 10 ? 2 : Math.abs(value) < 1000 ? 1 : 0;
    return String(Number(value.toFixed(digits)));
  }

  function fmtPercent(rate) {
    if (typeof rate !== "number" || !Number.isFinite(rate)) return "—";
    return `${Number((rate * 100).toFixed(1))} %`;
  }

  function pad(n, width = 2) {
    return String(n).padStart(width, "0");
  }

  /** A Unix time in seconds (number) or an ISO 8601 string, as a Date (or null). */
  function toDate(value) {
    if (typeof value === "number" && Number.isFinite(value)) return new Date(value * 1000);
    if (typeof value === "string" && value) {
      const date = new Date(value);
      return Number.isNaN(date.getTime()) ? null : date;
    }
    return null;
  }

  function fmtClock(date) {
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }

  function fmtDateTime(date) {
    const today = new Date();
    const sameDay = date.toDateString() === today.toDateString();
    const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
    return sameDay ? fmtClock(date) : `${day} ${fmtClock(date)}`;
  }

  function text(value) {
    if (value === null || value === undefined || value === "") return "—";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  // ---------------------------------------------------------------------------------------------------------
  // HTTP

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.unauthorized = status === 401;
    }
  }

  /** The human message in an error body: {"error": {"message"}}, {"error": "..."}, {"message": "..."}. */
  function messageFromBody(body) {
    if (!body || typeof body !== "object") return null;
    const error = body.error;
    if (typeof error === "string" && error) return error;
    if (error && typeof error === "object" && typeof error.message === "string" && error.message) return error.message;
    if (typeof body.message === "string" && body.message) return body.message;
    if (typeof body.detail === "string" && body.detail) return body.detail;
    return null;
  }

  function statusLine(response) {
    return `${response.status} ${response.statusText || STATUS_TEXT[response.status] || ""}`.trim();
  }

  /** An ApiError for a non-2xx response: the server's message if it sent one, else the status text. */
  async function responseError(response) {
    let message = null;
    try {
      const body = await response.text();
      if (body) {
        try {
          message = messageFromBody(JSON.parse(body));
        } catch (_err) {
          message = null; // not JSON: fall back to the status text
        }
      }
    } catch (_err) {
      message = null;
    }
    return new ApiError(message || statusLine(response), response.status);
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    if (state.ticket) headers.Authorization = `Bearer ${state.ticket}`;
    return headers;
  }

  function networkError(err) {
    return new ApiError(`Network error: ${err && err.message ? err.message : "the server did not answer"}`, 0);
  }

  /**
   * Call the JSON API. Returns the parsed body (null for an empty one). Throws ApiError.
   * A 401 while signed in drops the ticket and shows the sign-in form (unless `expireOn401` is false).
   */
  async function api(method, path, { body, headers, expireOn401 = true } = {}) {
    const init = {
      method,
      headers: Object.assign(authHeaders({ Accept: "application/json" }), headers || {}),
      cache: "no-store",
      credentials: "same-origin",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw networkError(err);
    }
    if (!response.ok) {
      const error = await responseError(response);
      if (error.unauthorized && expireOn401) expireSession();
      throw error;
    }
    if (response.status === 204) return null;
    const raw = await response.text();
    if (!raw) return null;
    try {
      return JSON.parse(raw);
    } catch (_err) {
      throw new ApiError(`The server answered ${statusLine(response)} with a body that is not JSON`, response.status);
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Server-Sent Events (read with fetch so that credentials travel in a header, never in the URL)

  /** Parse one SSE block (the text between blank lines) into {event, data, id, retry, comment, hasData}. */
  function parseSseBlock(raw) {
    const out = { event: "message", data: "", id: null, retry: null, comment: false, hasData: false };
    const data = [];
    let fields = 0;
    for (const line of raw.split("\n")) {
      if (line === "") continue;
      if (line.startsWith(":")) {
        out.comment = true;
        continue;
      }
      fields += 1;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") out.event = value || "message";
      else if (field === "id") out.id = value;
      else if (field === "retry") out.retry = value;
    }
    out.comment = out.comment && fields === 0;
    out.hasData = data.length > 0;
    out.data = data.join("\n");
    return out;
  }

  /**
   * Read an event stream body to its end, calling onBlocks([{raw, event}]) once per network chunk with the
   * complete blocks it finished. Rejects with an AbortError when the fetch is aborted.
   */
  async function readSse(body, onBlocks) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const drain = (final) => {
      // Normalise line ends; keep a trailing CR until we know whether an LF follows it.
      let pending = "";
      if (!final && buffer.endsWith("\r")) {
        pending = "\r";
        buffer = buffer.slice(0, -1);
      }
      buffer = buffer.replace(/\r\n?/g, "\n");
      const blocks = [];
      let index;
      while ((index = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, index);
        buffer = buffer.slice(index + 2);
        if (raw.trim() === "") continue;
        blocks.push({ raw, event: parseSseBlock(raw) });
      }
      buffer += pending;
      if (blocks.length) onBlocks(blocks);
    };
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        drain(false);
      }
      buffer += decoder.decode();
      drain(true); // an unterminated last block is discarded, as EventSource does
    } finally {
      try {
        reader.releaseLock();
      } catch (_err) {
        // the reader is already released when the stream errored
      }
    }
  }

  function isAbort(err) {
    return err && (err.name === "AbortError" || err.code === 20);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Sign-in, sign-out, the signed-in chrome

  const ui = {};

  function readTicket() {
    try {
      return window.sessionStorage.getItem(TICKET_KEY);
    } catch (_err) {
      return null;
    }
  }

  function storeTicket(ticket) {
    state.ticket = ticket || null;
    try {
      if (ticket) window.sessionStorage.setItem(TICKET_KEY, ticket);
      else window.sessionStorage.removeItem(TICKET_KEY);
    } catch (_err) {
      // sessionStorage unavailable (privacy mode): the ticket lives in memory only
    }
  }

  function showSignIn(message) {
    state.signedIn = false;
    stopPolling();
    stopWatch("stopped");
    cancelTry("signed out");
    show(ui.loading, false);
    show(ui.app, false);
    show(ui.account, false);
    show(ui.signInForm, true);
    setError(ui.signInError, message || "");
    ui.signInError.hidden = false; // keep the alert region in the layout
    ui.whoami.textContent = "";
    ui.token.value = "";
    ui.token.focus();
  }

  /** A call answered 401 while signed in: the ticket expired or was revoked. */
  function expireSession() {
    storeTicket(null);
    if (state.signedIn) showSignIn(EXPIRED_MESSAGE);
  }

  function setPrincipal(principal, admin) {
    state.principal = principal || state.principal || "";
    state.admin = Boolean(admin);
    ui.whoami.textContent = `${state.principal || "anonymous"}${state.admin ? " (admin)" : ""}`;
  }

  function enterSignedIn(info) {
    state.signedIn = true;
    setPrincipal(info && info.principal, info && info.admin);
    show(ui.loading, false);
    show(ui.signInForm, false);
    setError(ui.signInError, "");
    show(ui.account, true);
    show(ui.app, true);
    if (info && info.server) renderOverview(info);
    else loadOverview();
    loadCatalog();
    selectTab(state.tab, { replaceHash: false });
  }

  async function loadOverview() {
    try {
      renderOverview(await api("GET", "/dashboard/api/overview"));
    } catch (err) {
      if (!err.unauthorized) ui.serverMeta.textContent = `overview unavailable: ${err.message}`;
    }
  }

  function renderOverview(overview) {
    state.overview = overview;
    const server = overview.server || {};
    ui.serverName.textContent = [server.name, server.version].filter(Boolean).join(" ");
    const meta = [];
    if (overview.datapulse_version && overview.datapulse_version !== server.version) {
      meta.push(`DataPulse ${overview.datapulse_version}`);
    }
    if (overview.node_id) meta.push(`node ${overview.node_id}`);
    if (overview.cluster) {
      const nodes = Array.isArray(overview.nodes) ? overview.nodes.length : 0;
      meta.push(`cluster of ${nodes} node${nodes === 1 ? "" : "s"}`);
    }
    ui.serverMeta.textContent = meta.join(" · ");
    if (overview.principal !== undefined) setPrincipal(overview.principal, overview.admin);
    document.title = server.name ? `${server.name} · DataPulse dashboard` : "DataPulse dashboard";
    if (state.catalog) renderCatalog(state.catalog);
  }

  async function boot() {
    const stored = readTicket();
    if (stored) {
      state.ticket = stored;
      try {
        const overview = await api("GET", "/dashboard/api/overview", { expireOn401: false });
        enterSignedIn(overview);
      } catch (err) {
        if (err.unauthorized) {
          storeTicket(null);
          showSignIn(EXPIRED_MESSAGE);
        } else {
          // The ticket may still be good: stay signed in and say what went wrong.
          enterSignedIn({ principal: "", admin: false });
          ui.serverMeta.textContent = `overview unavailable: ${err.message}`;
        }
      }
      return;
    }
    await signIn(null);
  }

  /** POST sign-in: with a token (the form), or with none (auth off answers 200 {"auth": false}). */
  async function signIn(token) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    state.ticket = null; // never send an old ticket along with a sign-in
    try {
      const init = {
        method: "POST",
        headers: Object.assign({ Accept: "application/json" }, headers),
        cache: "no-store",
        credentials: "same-origin",
      };
      let response;
      try {
        response = await fetch("/dashboard/api/sign-in", init);
      } catch (err) {
        throw networkError(err);
      }
      if (!response.ok) throw await responseError(response);
      const body = (await response.json().catch(() => null)) || {};
      storeTicket(body.auth === false ? null : body.ticket || null);
      enterSignedIn({ principal: body.principal, admin: body.admin });
    } catch (err) {
      if (!token && err.unauthorized) showSignIn(""); // auth is on: ask for a token
      else showSignIn(err.message);
    }
  }

  async function signOut() {
    stopPolling();
    stopWatch("stopped");
    await cancelTry("signed out"); // ends its session while the ticket is still good
    let problem = "";
    try {
      await api("POST", "/dashboard/api/sign-out", { expireOn401: false });
    } catch (err) {
      if (!err.unauthorized) problem = `Sign-out: ${err.message}`;
    }
    storeTicket(null);
    showSignIn(problem);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Tabs and polling

  function selectTab(name, { replaceHash = true } = {}) {
    if (!TABS.includes(name)) name = "sessions";
    state.tab = name;
    for (const button of ui.tabButtons) {
      const active = button.dataset.tab === name;
      button.classList.toggle("active", active);
      button.setAttribute("aria-selected", active ? "true" : "false");
      button.tabIndex = active ? 0 : -1;
    }
    for (const tab of TABS) show($(`#tab-${tab}`), tab === name);
    if (replaceHash && window.history && window.history.replaceState) {
      window.history.replaceState(null, "", `#${name}`);
    }
    if (!state.signedIn) return;
    if ((name === "catalog" || name === "try") && !state.catalog) loadCatalog();
    restartPolling();
  }

  function shouldPoll() {
    return state.signedIn && LIVE_TABS.has(state.tab) && document.visibilityState !== "hidden";
  }

  function stopPolling() {
    state.pollGeneration += 1;
    if (state.pollTimer) clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  /** One loop per generation: refresh the visible live view, then again 2 s after it answered. */
  function restartPolling() {
    stopPolling();
    if (!shouldPoll()) return;
    const generation = state.pollGeneration;
    const tick = async () => {
      if (generation !== state.pollGeneration || !shouldPoll()) return;
      const tab = state.tab;
      try {
        if (tab === "sessions") await refreshSessions();
        else if (tab === "stats") await refreshStats();
        else if (tab === "audit") await refreshAudit();
      } finally {
        if (generation === state.pollGeneration && shouldPoll()) state.pollTimer = setTimeout(tick, POLL_MS);
      }
    };
    tick();
  }

  function warnUnreachable(node, nodes) {
    if (Array.isArray(nodes) && nodes.length) {
      node.textContent = `Not shown: node${nodes.length === 1 ? "" : "s"} unreachable: ${nodes.join(", ")}`;
      node.hidden = false;
    } else {
      node.textContent = "";
      node.hidden = true;
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Sessions

  const SESSION_CELLS = ["session-id", "principal", "transport", "protocol", "node", "age", "idle", "streams", "queue"];

  async function refreshSessions() {
    try {
      const body = await api("GET", "/dashboard/api/sessions");
      if (!state.signedIn) return;
      setError(ui.sessionsError, "");
      renderSessions(body || {});
    } catch (err) {
      if (!err.unauthorized) setError(ui.sessionsError, `Sessions: ${err.message}`);
    }
  }

  function sessionValues(session) {
    return {
      "session-id": session.session_id,
      principal: text(session.principal),
      transport: text(session.transport),
      protocol: text(session.protocol_version),
      node: text(session.node_id),
      age: fmtDuration(session.age_s),
      idle: fmtDuration(session.idle_s),
      streams: text(session.streams),
      queue: text(session.queue_depth),
    };
  }

  function makeSessionRow(id) {
    const row = el("tr", { "data-session-id": id });
    for (const cls of SESSION_CELLS) {
      const numeric = ["age", "idle", "streams", "queue"].includes(cls);
      row.append(el("td", { class: numeric ? `${cls} num` : cls }));
    }
    const watch = el("button", { type: "button", class: "watch small", title: "Watch this session's frames" }, "Watch");
    watch.addEventListener("click", () => watchSession(id));
    row.append(el("td", { class: "actions" }, watch));
    return row;
  }

  /** Update the table in place (keyed by session id) so that a poll does not eat a click. */
  function renderSessions(body) {
    const sessions = Array.isArray(body.sessions) ? body.sessions : [];
    warnUnreachable(ui.sessionsWarning, body.nodes_unreachable);
    const tbody = ui.sessionsTable.tBodies[0];
    const existing = new Map();
    for (const row of Array.from(tbody.rows)) existing.set(row.dataset.sessionId, row);
    let previous = null;
    for (const session of sessions) {
      const id = String(session.session_id);
      let row = existing.get(id);
      if (row) existing.delete(id);
      else row = makeSessionRow(id);
      const values = sessionValues(session);
      for (const cls of SESSION_CELLS) {
        const cell = row.querySelector(`td.${cls}`);
        if (cell.textContent !== values[cls]) cell.textContent = values[cls];
      }
      row.querySelector("td.age").title = `${session.age_s} s`;
      row.querySelector("td.idle").title = `${session.idle_s} s`;
      if (session.created_at) {
        const created = toDate(session.created_at);
        if (created) row.querySelector("td.session-id").title = `created ${created.toLocaleString()}`;
      }
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (expected !== row) tbody.insertBefore(row, expected);
      previous = row;
    }
    for (const row of existing.values()) row.remove();
    ui.sessionsCount.textContent = `${sessions.length} session${sessions.length === 1 ? "" : "s"}`;
    show(ui.sessionsEmpty, sessions.length === 0);
  }

  function watchSession(id) {
    selectTab("watch");
    ui.watchSession.value = id;
    startWatch();
  }

  // ---------------------------------------------------------------------------------------------------------
  // Catalog

  function loadCatalog() {
    if (!state.catalogLoading) {
      state.catalogLoading = fetchCatalog().finally(() => {
        state.catalogLoading = null;
      });
    }
    return state.catalogLoading;
  }

  async function fetchCatalog() {
    try {
      const catalog = await api("GET", "/dashboard/api/catalog");
      if (!state.signedIn) return;
      setError(ui.catalogError, "");
      state.catalog = catalog || {};
      renderCatalog(state.catalog);
      fillTryTools(state.catalog);
    } catch (err) {
      if (!err.unauthorized) setError(ui.catalogError, `Catalog: ${err.message}`);
    }
  }

  function schemaBlock(label, schema) {
    return el("div", { class: "schema" }, el("div", { class: "schema-label muted" }, label), el("pre", { class: "json" }, pretty(schema)));
  }

  function renderCatalog(catalog) {
    const root = ui.catalog;
    root.replaceChildren();
    const tools = Array.isArray(catalog.tools) ? catalog.tools : [];
    const resources = Array.isArray(catalog.resources) ? catalog.resources : [];
    const templates = Array.isArray(catalog.resource_templates) ? catalog.resource_templates : [];
    const prompts = Array.isArray(catalog.prompts) ? catalog.prompts : [];
    ui.catalogCount.textContent =
      `${tools.length} tools · ${resources.length + templates.length} resources · ${prompts.length} prompts`;

    root.append(el("h3", null, `Tools (${tools.length})`));
    if (!tools.length) root.append(el("p", { class: "empty muted" }, "No tools."));
    for (const tool of tools) {
      const tryButton = el("button", { type: "button", class: "try small" }, "Try it");
      tryButton.addEventListener("click", () => openTry(tool.name));
      const head = el("div", { class: "item-head" }, el("span", { class: "name" }, tool.name));
      if (tool.title && tool.title !== tool.name) head.append(el("span", { class: "title muted" }, tool.title));
      head.append(tryButton);
      const card = el("div", { class: "tool item", "data-tool": tool.name }, head,
        el("p", { class: "description" }, tool.description || ""),
        schemaBlock("input schema", tool.input_schema || {}));
      root.append(card);
    }

    root.append(el("h3", null, `Resources (${resources.length + templates.length})`));
    if (!resources.length && !templates.length) root.append(el("p", { class: "empty muted" }, "No resources."));
    for (const resource of resources) {
      root.append(el("div", { class: "resource item", "data-uri": resource.uri },
        el("div", { class: "item-head" }, el("span", { class: "name mono" }, resource.uri),
          resource.name ? el("span", { class: "title muted" }, resource.name) : null,
          resource.mime_type ? el("span", { class: "badge" }, resource.mime_type) : null),
        el("p", { class: "description" }, resource.description || "")));
    }
    for (const template of templates) {
      root.append(el("div", { class: "resource-template item", "data-uri-template": template.uri_template },
        el("div", { class: "item-head" }, el("span", { class: "name mono" }, template.uri_template),
          template.name ? el("span", { class: "title muted" }, template.name) : null,
          el("span", { class: "badge" }, "template"),
          template.mime_type ? el("span", { class: "badge" }, template.mime_type) : null),
        el("p", { class: "description" }, template.description || "")));
    }

    root.append(el("h3", null, `Prompts (${prompts.length})`));
    if (!prompts.length) root.append(el("p", { class: "empty muted" }, "No prompts."));
    for (const prompt of prompts) {
      const args = Array.isArray(prompt.arguments) ? prompt.arguments : [];
      const list = el("ul", { class: "arguments" });
      for (const arg of args) {
        list.append(el("li", null, el("span", { class: "mono" }, arg.name), arg.required ? el("span", { class: "required-mark" }, " *") : null,
          arg.description ? el("span", { class: "muted" }, ` — ${arg.description}`) : null));
      }
      root.append(el("div", { class: "prompt item", "data-prompt": prompt.name },
        el("div", { class: "item-head" }, el("span", { class: "name" }, prompt.name)),
        el("p", { class: "description" }, prompt.description || ""),
        args.length ? list : el("p", { class: "muted small-text" }, "no arguments")));
    }

    const endpoints = state.overview && Array.isArray(state.overview.endpoints) ? state.overview.endpoints : [];
    if (endpoints.length) {
      root.append(el("h3", null, `HTTP endpoints (${endpoints.length})`));
      const table = el("table", { class: "data endpoints" },
        el("thead", null, el("tr", null, el("th", null, "Path"), el("th", null, "Methods"), el("th", null, "Description"))));
      const body = el("tbody");
      for (const endpoint of endpoints) {
        body.append(el("tr", null, el("td", { class: "mono" }, endpoint.path),
          el("td", null, (endpoint.methods || []).join(", ")), el("td", null, endpoint.description || "")));
      }
      table.append(body);
      root.append(table);
    }
  }

  function openTry(name) {
    selectTab("try");
    if (state.catalog) fillTryTools(state.catalog);
    ui.tryTool.value = name;
    buildTryForm();
    const first = $("input, select, textarea", ui.tryFields);
    if (first) first.focus();
  }

  // ---------------------------------------------------------------------------------------------------------
  // Stats

  async function refreshStats() {
    try {
      const body = await api("GET", "/dashboard/api/stats");
      if (!state.signedIn) return;
      setError(ui.statsError, "");
      const key = JSON.stringify(body);
      if (key === state.lastRendered.stats) return;
      state.lastRendered.stats = key;
      renderStats(body || {});
    } catch (err) {
      if (!err.unauthorized) setError(ui.statsError, `Stats: ${err.message}`);
    }
  }

  function renderStats(body) {
    const tools = Array.isArray(body.tools) ? body.tools : [];
    warnUnreachable(ui.statsWarning, body.nodes_unreachable);
    const tbody = ui.statsTable.tBodies[0];
    const rows = tools.map((tool) => {
      const rate = typeof tool.error_rate === "number" ? tool.error_rate : tool.calls ? tool.errors / tool.calls : null;
      const row = el("tr", { "data-tool": tool.name },
        el("td", { class: "name" }, tool.name),
        el("td", { class: "calls num" }, text(tool.calls)),
        el("td", { class: "errors num" }, text(tool.errors)),
        el("td", { class: "error-rate num" }, fmtPercent(rate)),
        el("td", { class: "p50 num" }, fmtMs(tool.p50_ms)),
        el("td", { class: "p95 num" }, fmtMs(tool.p95_ms)),
        el("td", { class: "p99 num" }, fmtMs(tool.p99_ms)));
      if (tool.errors > 0) row.classList.add("has-errors");
      return row;
    });
    tbody.replaceChildren(...rows);
    show(ui.statsEmpty, tools.length === 0);
    renderChart(tools);
  }

  function truncate(value, max) {
    const s = String(value);
    return s.length > max ? `${s.slice(0, max - 1)}…` : s;
  }

  /** Horizontal bars: per tool, calls (errors overlaid) and a thin p95 bar under it. */
  function renderChart(tools) {
    const chart = ui.statsChart;
    chart.replaceChildren();
    const width = 640;
    const labelWidth = 150;
    const valueWidth = 130;
    const barMax = width - labelWidth - valueWidth;
    const rowHeight = 32;
    const top = 6;
    const height = Math.max(40, top + tools.length * rowHeight + 4);
    chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
    chart.setAttribute("width", String(width));
    chart.setAttribute("height", String(height));
    if (!tools.length) {
      chart.append(svg("text", { x: 8, y: 24, class: "chart-empty" }, "No tool calls yet."));
      return;
    }
    const maxCalls = Math.max(1, ...tools.map((t) => (typeof t.calls === "number" ? t.calls : 0)));
    const p95s = tools.map((t) => t.p95_ms).filter((v) => typeof v === "number" && Number.isFinite(v));
    const maxP95 = Math.max(0, ...p95s) || 1;
    tools.forEach((tool, index) => {
      const y = top + index * rowHeight;
      const calls = typeof tool.calls === "number" ? tool.calls : 0;
      const errors = typeof tool.errors === "number" ? Math.min(tool.errors, calls) : 0;
      const callsWidth = calls > 0 ? Math.max(2, (calls / maxCalls) * barMax) : 0;
      const errorsWidth = errors > 0 ? Math.max(1, (errors / maxCalls) * barMax) : 0;
      const p95 = typeof tool.p95_ms === "number" && Number.isFinite(tool.p95_ms) ? tool.p95_ms : null;
      const p95Width = p95 !== null ? Math.max(1, (p95 / maxP95) * barMax) : 0;
      const group = svg("g", { class: "chart-row", "data-tool": tool.name },
        svg("title", null, `${tool.name}: ${calls} calls, ${errors} errors, p95 ${p95 === null ? "—" : `${fmtMs(p95)} ms`}`),
        svg("text", { x: labelWidth - 8, y: y + 13, class: "chart-label", "text-anchor": "end" }, truncate(tool.name, 22)),
        svg("rect", { x: labelWidth, y: y + 2, width: callsWidth.toFixed(1), height: 14, rx: 2, class: "bar-calls" }),
        errorsWidth ? svg("rect", { x: labelWidth, y: y + 2, width: errorsWidth.toFixed(1), height: 14, rx: 2, class: "bar-errors" }) : null,
        svg("text", { x: labelWidth + callsWidth + 6, y: y + 13, class: "chart-value" },
          `${calls} call${calls === 1 ? "" : "s"}${errors ? ` · ${errors} err` : ""}`),
        svg("rect", { x: labelWidth, y: y + 19, width: p95Width.toFixed(1), height: 5, rx: 1, class: "bar-p95" }),
        svg("text", { x: labelWidth + p95Width + 6, y: y + 25, class: "chart-value small" },
          p95 === null ? "p95 —" : `p95 ${fmtMs(p95)} ms`));
      chart.append(group);
    });
  }

  // ---------------------------------------------------------------------------------------------------------
  // Audit

  /** Columns shown when at least one record has one of their keys (first key present wins per record). */
  const AUDIT_COLUMNS = [
    { cls: "time", label: "Time", keys: ["ts", "time", "t"] },
    { cls: "kind", label: "Event", keys: ["kind", "event"] },
    { cls: "principal", label: "Principal", keys: ["principal"] },
    { cls: "session", label: "Session", keys: ["session_id"] },
    { cls: "transport", label: "Transport", keys: ["transport"] },
    { cls: "name", label: "Name", keys: ["name"] },
    { cls: "outcome", label: "Outcome", keys: ["outcome"] },
    { cls: "duration", label: "Duration ms", keys: ["duration_ms"], numeric: true },
  ];

  function auditValue(record, column) {
    for (const key of column.keys) if (Object.prototype.hasOwnProperty.call(record, key)) return record[key];
    return undefined;
  }

  async function refreshAudit() {
    const limit = Number(ui.auditLimit.value) || 200;
    try {
      const body = await api("GET", `/dashboard/api/audit?limit=${encodeURIComponent(limit)}`);
      if (!state.signedIn) return;
      setError(ui.auditError, "");
      const key = JSON.stringify(body);
      if (key === state.lastRendered.audit) return;
      state.lastRendered.audit = key;
      renderAudit(body || {});
    } catch (err) {
      if (!err.unauthorized) setError(ui.auditError, `Audit: ${err.message}`);
    }
  }

  function renderAudit(body) {
    const records = (Array.isArray(body.records) ? body.records : []).filter((r) => r && typeof r === "object");
    warnUnreachable(ui.auditWarning, body.nodes_unreachable);
    // Newest first: the server sends them so; sort by time anyway (stable, so equal times keep its order).
    const timed = records.map((record, index) => {
      const date = toDate(auditValue(record, AUDIT_COLUMNS[0]));
      return { record, index, time: date ? date.getTime() : null };
    });
    if (timed.every((item) => item.time !== null)) timed.sort((a, b) => b.time - a.time || a.index - b.index);
    const columns = AUDIT_COLUMNS.filter((column) => records.some((r) => auditValue(r, column) !== undefined));
    const headRow = ui.auditTable.tHead.rows[0];
    headRow.replaceChildren(...columns.map((c) => el("th", { class: c.numeric ? `${c.cls} num` : c.cls }, c.label)));
    const rows = timed.map(({ record }) => {
      const row = el("tr", null);
      const outcome = record.outcome;
      if (typeof outcome === "string") {
        row.dataset.outcome = outcome;
        if (outcome !== "ok" && outcome !== "allowed") row.classList.add("bad");
      }
      const kind = auditValue(record, AUDIT_COLUMNS[1]);
      if (typeof kind === "string") row.dataset.kind = kind;
      for (const column of columns) {
        const value = auditValue(record, column);
        const cell = el("td", { class: column.numeric ? `${column.cls} num` : column.cls });
        if (column.cls === "time") {
          const date = toDate(value);
          cell.textContent = date ? fmtDateTime(date) : text(value);
          if (date) cell.title = date.toISOString();
        } else if (column.cls === "duration") {
          cell.textContent = fmtMs(value);
        } else {
          cell.textContent = text(value);
          if (column.cls === "session" && typeof value === "string") cell.title = value;
        }
        row.append(cell);
      }
      return row;
    });
    ui.auditTable.tBodies[0].replaceChildren(...rows);
    ui.auditCount.textContent = `${records.length} record${records.length === 1 ? "" : "s"}`;
    show(ui.auditEmpty, records.length === 0);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Try it: a tool call through the DataPulse API, the result read from GET /events with fetch

  const tryState = { counter: 0, run: null, latest: null };

  function fillTryTools(catalog) {
    const tools = Array.isArray(catalog.tools) ? catalog.tools : [];
    const current = ui.tryTool.value;
    const options = tools.map((tool) => el("option", { value: tool.name }, tool.name));
    ui.tryTool.replaceChildren(...options);
    if (tools.some((tool) => tool.name === current)) ui.tryTool.value = current;
    if (ui.tryTool.value !== current || !ui.tryFields.childElementCount) buildTryForm();
    if (!tryState.run) ui.tryRun.disabled = tools.length === 0;
    if (!tools.length) ui.tryDescription.textContent = "This server has no tools.";
  }

  function selectedTool() {
    const tools = state.catalog && Array.isArray(state.catalog.tools) ? state.catalog.tools : [];
    return tools.find((tool) => tool.name === ui.tryTool.value) || null;
  }

  /** Collapse a property schema to {type, enum, ...}: "type": [..., "null"] and anyOf/oneOf with null. */
  function effectiveSchema(schema) {
    let s = schema && typeof schema === "object" ? Object.assign({}, schema) : {};
    const union = Array.isArray(s.anyOf) ? s.anyOf : Array.isArray(s.oneOf) ? s.oneOf : null;
    if (union) {
      const options = union.filter((option) => !(option && option.type === "null"));
      if (options.length === 1) s = Object.assign({}, options[0], s, { type: options[0].type });
    }
    if (Array.isArray(s.type)) {
      const types = s.type.filter((t) => t !== "null");
      s.type = types.length === 1 ? types[0] : undefined;
    }
    if (s.const !== undefined && !s.enum) s.enum = [s.const];
    return s;
  }

  function fieldKind(schema) {
    if (Array.isArray(schema.enum) && schema.enum.length) return "enum";
    if (schema.type === "string") return "string";
    if (schema.type === "integer") return "integer";
    if (schema.type === "number") return "number";
    if (schema.type === "boolean") return "boolean";
    return "json";
  }

  function buildTryForm() {
    const tool = selectedTool();
    ui.tryFields.replaceChildren();
    ui.tryDescription.textContent = tool ? tool.description || "" : "";
    if (!tool) return;
    const inputSchema = tool.input_schema && typeof tool.input_schema === "object" ? tool.input_schema : {};
    const properties = inputSchema.properties && typeof inputSchema.properties === "object" ? inputSchema.properties : {};
    const required = new Set(Array.isArray(inputSchema.required) ? inputSchema.required : []);
    const names = Object.keys(properties);
    if (!names.length) {
      ui.tryFields.append(el("p", { class: "muted" }, "This tool takes no arguments."));
      return;
    }
    names.forEach((name, index) => {
      const schema = effectiveSchema(properties[name]);
      const kind = fieldKind(schema);
      const isRequired = required.has(name);
      const id = `try-field-${index}`;
      let input;
      if (kind === "enum") {
        input = el("select", { id, name });
        if (!isRequired || schema.default === undefined) input.append(el("option", { value: "" }, isRequired ? "— choose —" : "— none —"));
        for (const value of schema.enum) input.append(el("option", { value: JSON.stringify(value) }, String(value)));
        if (schema.default !== undefined) input.value = JSON.stringify(schema.default);
      } else if (kind === "boolean") {
        input = el("input", { id, name, type: "checkbox" });
        input.checked = schema.default === true;
      } else if (kind === "integer" || kind === "number") {
        input = el("input", { id, name, type: "number", step: kind === "integer" ? "1" : "any" });
        if (typeof schema.minimum === "number") input.min = String(schema.minimum);
        if (typeof schema.maximum === "number") input.max = String(schema.maximum);
        if (typeof schema.default === "number") input.value = String(schema.default);
      } else if (kind === "string") {
        input = el("input", { id, name, type: "text", spellcheck: "false" });
        if (typeof schema.default === "string") input.value = schema.default;
        if (Array.isArray(schema.examples) && typeof schema.examples[0] === "string") input.placeholder = schema.examples[0];
      } else {
        input = el("textarea", { id, name, rows: "3", spellcheck: "false", class: "mono" });
        if (schema.default !== undefined) input.value = pretty(schema.default);
        input.placeholder = schema.type === "array" ? "JSON array, e.g. []" : schema.type === "object" ? "JSON object, e.g. {}" : "JSON value";
      }
      input.dataset.kind = kind;
      if (isRequired) input.setAttribute("aria-required", "true");
      const typeLabel = kind === "json" ? `${schema.type || "any"} · JSON` : kind === "enum" ? "one of" : kind;
      const label = el("label", { for: id, class: isRequired ? "required" : null },
        el("span", { class: "field-name mono" }, name),
        isRequired ? el("span", { class: "required-mark", title: "required" }, " *") : null,
        el("span", { class: "field-type muted" }, ` ${typeLabel}`));
      const field = el("div", { class: `field field-${kind}${isRequired ? " required" : ""}`, "data-field": name });
      if (kind === "boolean") field.append(el("div", { class: "checkbox-row" }, input, label));
      else field.append(label, input);
      const hint = properties[name] && properties[name].description;
      if (hint) field.append(el("div", { class: "hint muted" }, hint));
      ui.tryFields.append(field);
    });
  }

  /** The tool arguments from the form; throws Error(message) for a field that is not valid. */
  function collectArguments() {
    const args = {};
    for (const field of $$(".field", ui.tryFields)) {
      const input = $("[name]", field);
      if (!input) continue;
      const name = input.name;
      const kind = input.dataset.kind;
      const isRequired = field.classList.contains("required");
      input.classList.remove("invalid");
      const fail = (message) => {
        input.classList.add("invalid");
        input.focus();
        throw new Error(`${name}: ${message}`);
      };
      if (kind === "boolean") {
        args[name] = input.checked;
      } else if (kind === "enum") {
        if (input.value !== "") args[name] = JSON.parse(input.value);
      } else if (kind === "integer" || kind === "number") {
        const raw = input.value.trim();
        if (raw === "") {
          if (input.validity && input.validity.badInput) fail("not a number");
          continue;
        }
        const value = Number(raw);
        if (!Number.isFinite(value)) fail("not a number");
        args[name] = value;
      } else if (kind === "string") {
        if (input.value !== "" || isRequired) args[name] = input.value;
      } else {
        const raw = input.value.trim();
        if (raw === "") continue;
        try {
          args[name] = JSON.parse(raw);
        } catch (err) {
          fail(`invalid JSON (${err.message})`);
        }
      }
    }
    return args;
  }

  function randomSessionId() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return `dash-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  function setTryStatus(message, isError) {
    ui.tryStatus.textContent = message;
    ui.tryStatus.classList.toggle("error", Boolean(isError));
  }

  function appendTryFrame(raw) {
    ui.tryFrames.append(el("pre", { class: "frame" }, raw));
    while (ui.tryFrames.childElementCount > MAX_TRY_FRAMES) ui.tryFrames.firstElementChild.remove();
    ui.tryFrames.scrollTop = ui.tryFrames.scrollHeight;
  }

  function showTryResult(event) {
    let shown;
    if (event.data !== undefined) shown = event.data;
    else if (event.error !== undefined) shown = event.error;
    else shown = event;
    ui.tryResult.textContent = typeof shown === "string" ? shown : pretty(shown);
    ui.tryResult.classList.toggle("error", event.type === "error");
  }

  /** Show a run's status: "POST /message: <status>" (once known) · what it is doing or how it ended. */
  function showRunStatus(run, phase, isError) {
    if (phase !== undefined) run.phase = phase;
    if (isError) run.failed = true;
    if (tryState.latest !== run) return; // a newer run owns the status line
    setTryStatus([run.post, run.phase].filter(Boolean).join(" · "), run.failed);
  }

  /** End the run: abort the stream and DELETE the session (once). */
  async function finishTry(run, phase) {
    if (run.finished) return;
    run.finished = true;
    run.controller.abort();
    if (tryState.run === run) {
      tryState.run = null;
      show(ui.tryCancel, false);
      ui.tryRun.disabled = false;
    }
    if (phase !== undefined) showRunStatus(run, phase);
    if (!run.streamOpen) return;
    try {
      await api("DELETE", `/events?session_id=${encodeURIComponent(run.sessionId)}`);
    } catch (err) {
      if (!err.unauthorized) showRunStatus(run, `${run.phase} · ending the session failed: ${err.message}`, true);
    }
  }

  function cancelTry(reason) {
    const run = tryState.run;
    if (!run) return Promise.resolve();
    run.failed = false;
    return finishTry(run, reason || "cancelled");
  }

  async function runTry(event) {
    event.preventDefault();
    const tool = selectedTool();
    if (!tool) {
      setTryStatus("Choose a tool first.", true);
      return;
    }
    let args;
    try {
      args = collectArguments();
    } catch (err) {
      setTryStatus(`Not sent: ${err.message}`, true);
      return;
    }
    if (tryState.run) cancelTry("replaced by a new run");

    tryState.counter += 1;
    const run = {
      sessionId: randomSessionId(),
      requestId: `try-${tryState.counter}`,
      controller: new AbortController(),
      streamOpen: false,
      finished: false,
      failed: false,
      gotResult: false,
      post: "",
      phase: "",
    };
    tryState.run = run;
    tryState.latest = run;
    ui.tryFrames.replaceChildren();
    ui.tryResult.textContent = "";
    ui.tryResult.classList.remove("error");
    ui.tryRun.disabled = true;
    show(ui.tryCancel, true);
    showRunStatus(run, `opening GET /events (session ${run.sessionId})…`);

    let response;
    try {
      response = await fetch(`/events?session_id=${encodeURIComponent(run.sessionId)}`, {
        headers: authHeaders({ Accept: "text/event-stream" }),
        cache: "no-store",
        credentials: "same-origin",
        signal: run.controller.signal,
      });
    } catch (err) {
      if (isAbort(err)) return;
      showRunStatus(run, `GET /events: ${networkError(err).message}`, true);
      finishTry(run);
      return;
    }
    if (!response.ok) {
      const error = await responseError(response);
      showRunStatus(run, `GET /events: ${statusLine(response)}: ${error.message}`, true);
      finishTry(run);
      if (error.unauthorized) expireSession();
      return;
    }
    run.streamOpen = true;

    const reading = readSse(response.body, (blocks) => {
      if (run.finished) return;
      for (const { raw, event: sse } of blocks) {
        appendTryFrame(raw);
        if (!sse.hasData) continue;
        let data;
        try {
          data = JSON.parse(sse.data);
        } catch (_err) {
          continue; // not JSON: shown raw above
        }
        if (data && typeof data === "object" && data.request_id === run.requestId && !run.gotResult) {
          run.gotResult = true;
          if (data.type === "error") run.failed = true;
          showTryResult(data);
          finishTry(run, data.type === "error" ? "the tool call failed" : "done");
          return;
        }
      }
    }).then(
      () => {
        if (!run.finished) {
          run.failed = true;
          finishTry(run, "the stream ended before the result arrived");
        }
      },
      (err) => {
        if (run.finished || isAbort(err)) return;
        run.failed = true;
        finishTry(run, `the stream failed: ${err.message}`);
      },
    );

    const message = { type: "call_tool", request_id: run.requestId, data: { name: tool.name, arguments: args } };
    showRunStatus(run, "stream open; POST /message…");
    try {
      const posted = await fetch(`/message?session_id=${encodeURIComponent(run.sessionId)}`, {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json", Accept: "application/json" }),
        body: JSON.stringify(message),
        cache: "no-store",
        credentials: "same-origin",
      });
      run.post = `POST /message: ${statusLine(posted)}`;
      if (!posted.ok) {
        const error = await responseError(posted);
        run.post = `${run.post}: ${error.message}`;
        showRunStatus(run, "", true);
        await finishTry(run);
        if (error.unauthorized) expireSession();
        return;
      }
      showRunStatus(run, run.finished ? run.phase : "waiting for the result on the stream…");
    } catch (err) {
      run.post = `POST /message: ${networkError(err).message}`;
      showRunStatus(run, "", true);
      await finishTry(run);
    }
    await reading;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Watch: a session's JSON-RPC frames, both directions, from GET /dashboard/api/watch

  const watchState = {
    controller: null,
    sessionId: null,
    paused: false,
    buffer: [],
    dropped: 0,
    count: 0,
  };

  function setWatchStatus(message, isError) {
    ui.watchStatus.textContent = message;
    ui.watchStatus.classList.toggle("error", Boolean(isError));
  }

  function watchStatusText() {
    if (!watchState.controller) return "stopped";
    const base = `watching ${watchState.sessionId}`;
    return watchState.paused ? `${base} — paused, ${watchState.buffer.length} buffered` : base;
  }

  function updateWatchCounters() {
    ui.watchDropped.textContent = String(watchState.dropped);
    ui.watchCount.textContent = String(ui.watchFrames.childElementCount);
  }

  async function startWatch() {
    const id = ui.watchSession.value.trim();
    if (!id) {
      setWatchStatus("Enter a session id to watch.", true);
      ui.watchSession.focus();
      return;
    }
    stopWatch(null);
    if (watchState.paused) togglePause();
    const controller = new AbortController();
    watchState.controller = controller;
    watchState.sessionId = id;
    watchState.buffer = [];
    watchState.dropped = 0;
    ui.watchFrames.replaceChildren();
    updateWatchCounters();
    setWatchStatus(`connecting to ${id}…`, false);
    let response;
    try {
      response = await fetch(`/dashboard/api/watch?session_id=${encodeURIComponent(id)}`, {
        headers: authHeaders({ Accept: "text/event-stream" }),
        cache: "no-store",
        credentials: "same-origin",
        signal: controller.signal,
      });
    } catch (err) {
      if (isAbort(err) || watchState.controller !== controller) return;
      watchState.controller = null;
      setWatchStatus(`${networkError(err).message}`, true);
      return;
    }
    if (watchState.controller !== controller) return;
    if (!response.ok) {
      const error = await responseError(response);
      watchState.controller = null;
      if (error.unauthorized) {
        expireSession();
        return;
      }
      setWatchStatus(`Cannot watch ${id}: ${error.message} (${statusLine(response)})`, true);
      return;
    }
    setWatchStatus(watchStatusText(), false);
    try {
      await readSse(response.body, (blocks) => {
        if (watchState.controller !== controller) return;
        const frames = [];
        for (const { event } of blocks) {
          if (event.comment || !event.hasData) continue; // ": ping" keepalives, bare retry: fields
          let data;
          try {
            data = JSON.parse(event.data);
          } catch (_err) {
            continue;
          }
          if (event.event === "frame") frames.push(data);
          else if (event.event === "dropped") {
            const n = Number(data && data.dropped);
            if (Number.isFinite(n) && n > 0) watchState.dropped += n;
          }
        }
        if (frames.length) {
          if (watchState.paused) {
            watchState.buffer.push(...frames);
            if (watchState.buffer.length > MAX_WATCH_FRAMES) watchState.buffer.splice(0, watchState.buffer.length - MAX_WATCH_FRAMES);
            setWatchStatus(watchStatusText(), false);
          } else {
            appendWatchFrames(frames);
          }
        }
        updateWatchCounters();
      });
      if (watchState.controller === controller) {
        watchState.controller = null;
        setWatchStatus(`stopped: the server ended the stream of ${id}`, false);
      }
    } catch (err) {
      if (isAbort(err) || watchState.controller !== controller) return;
      watchState.controller = null;
      setWatchStatus(`stopped: the stream of ${id} failed: ${err.message}`, true);
    }
  }

  function stopWatch(status) {
    const controller = watchState.controller;
    watchState.controller = null;
    if (controller) controller.abort();
    if (status) setWatchStatus(status, false);
  }

  function flushWatchBuffer() {
    if (!watchState.buffer.length) return;
    const frames = watchState.buffer;
    watchState.buffer = [];
    appendWatchFrames(frames);
    updateWatchCounters();
  }

  function togglePause() {
    watchState.paused = !watchState.paused;
    ui.watchPause.textContent = watchState.paused ? "Resume" : "Pause";
    ui.watchPause.setAttribute("aria-pressed", watchState.paused ? "true" : "false");
    if (!watchState.paused) flushWatchBuffer();
    if (watchState.controller) setWatchStatus(watchStatusText(), false);
  }

  function frameLabel(frame) {
    const kind = frame.kind;
    const hasId = frame.id !== null && frame.id !== undefined;
    if (kind === "response" || kind === "error") return `${kind}${hasId ? ` #${frame.id}` : ""}`;
    return `${frame.method || kind || "message"}${hasId ? ` #${frame.id}` : ""}`;
  }

  function matchesFilter(method, filter) {
    if (!filter) return true;
    return typeof method === "string" && method.toLowerCase().includes(filter);
  }

  function currentFilter() {
    return ui.watchFilter.value.trim().toLowerCase();
  }

  function makeFrameNode(frame, filter) {
    const dir = frame.dir === "out" ? "out" : "in";
    const method = typeof frame.method === "string" ? frame.method : "";
    const message = frame.message;
    const date = toDate(frame.t);
    const json = pretty(message);
    const pre = el("pre", { class: "json" }, json);
    const details = el("details", null, el("summary", null, "message"), pre);
    const copy = el("button", { type: "button", class: "copy small secondary", title: "Copy the JSON message" }, "copy");
    copy.addEventListener("click", () => copyMessage(copy, message, pre, details));
    const node = el("div", { class: "frame", "data-dir": dir, "data-kind": frame.kind || "", "data-method": method },
      el("div", { class: "frame-head" },
        el("span", { class: "time mono" }, date ? fmtClock(date) : ""),
        el("span", { class: "arrow", title: dir === "in" ? "client → server" : "server → client" }, dir === "in" ? "→" : "←"),
        el("span", { class: "label mono" }, frameLabel(frame)),
        (frame.kind === "response" || frame.kind === "error") && method ? el("span", { class: "method muted mono" }, method) : null,
        typeof frame.elapsed_ms === "number" ? el("span", { class: "elapsed muted" }, `${fmtMs(frame.elapsed_ms)} ms`) : null,
        el("span", { class: "spacer" }),
        copy),
      details);
    node.hidden = !matchesFilter(method, filter);
    return node;
  }

  function appendWatchFrames(frames) {
    const container = ui.watchFrames;
    const atBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 40;
    const filter = currentFilter();
    const fragment = document.createDocumentFragment();
    const start = Math.max(0, frames.length - MAX_WATCH_FRAMES);
    for (let i = start; i < frames.length; i += 1) {
      if (frames[i] && typeof frames[i] === "object") fragment.append(makeFrameNode(frames[i], filter));
    }
    container.append(fragment);
    let excess = container.childElementCount - MAX_WATCH_FRAMES;
    while (excess > 0) {
      container.firstElementChild.remove();
      excess -= 1;
    }
    if (atBottom) container.scrollTop = container.scrollHeight;
    updateWatchCounters();
  }

  function applyWatchFilter() {
    const filter = currentFilter();
    for (const node of ui.watchFrames.children) node.hidden = !matchesFilter(node.dataset.method, filter);
  }

  function flash(button, label) {
    const original = button.dataset.label || button.textContent;
    button.dataset.label = original;
    button.textContent = label;
    button.classList.add("flash");
    clearTimeout(Number(button.dataset.timer || 0));
    button.dataset.timer = String(setTimeout(() => {
      button.textContent = original;
      button.classList.remove("flash");
    }, 1200));
  }

  function selectText(node) {
    const selection = window.getSelection();
    const range = document.createRange();
    range.selectNodeContents(node);
    selection.removeAllRanges();
    selection.addRange(range);
  }

  async function copyMessage(button, message, pre, details) {
    const json = JSON.stringify(message, null, 2);
    if (navigator.clipboard && typeof navigator.clipboard.writeText === "function") {
      try {
        await navigator.clipboard.writeText(json);
        flash(button, "copied");
        return;
      } catch (_err) {
        // permission refused or not a secure context: select the text instead
      }
    }
    details.open = true;
    selectText(pre);
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (_err) {
      copied = false;
    }
    flash(button, copied ? "copied" : "selected: press Ctrl+C");
  }

  // ---------------------------------------------------------------------------------------------------------
  // Wiring

  function init() {
    Object.assign(ui, {
      loading: $("#loading"),
      app: $("#app"),
      account: $("#account"),
      whoami: $("#whoami"),
      signOut: $("#sign-out"),
      serverName: $("#server-name"),
      serverMeta: $("#server-meta"),
      signInForm: $("#sign-in-form"),
      token: $("#token"),
      signInError: $("#sign-in-error"),
      tabButtons: $$("button[data-tab]"),
      sessionsTable: $("#sessions-table"),
      sessionsWarning: $("#sessions-warning"),
      sessionsError: $("#sessions-error"),
      sessionsEmpty: $("#sessions-empty"),
      sessionsCount: $("#sessions-count"),
      catalog: $("#catalog"),
      catalogError: $("#catalog-error"),
      catalogCount: $("#catalog-count"),
      catalogReload: $("#catalog-reload"),
      statsTable: $("#stats-table"),
      statsChart: $("#stats-chart"),
      statsWarning: $("#stats-warning"),
      statsError: $("#stats-error"),
      statsEmpty: $("#stats-empty"),
      auditTable: $("#audit-table"),
      auditWarning: $("#audit-warning"),
      auditError: $("#audit-error"),
      auditEmpty: $("#audit-empty"),
      auditCount: $("#audit-count"),
      auditLimit: $("#audit-limit"),
      tryTool: $("#try-tool"),
      tryDescription: $("#try-description"),
      tryForm: $("#try-form"),
      tryFields: $("#try-fields"),
      tryRun: $("#try-run"),
      tryCancel: $("#try-cancel"),
      tryStatus: $("#try-status"),
      tryResult: $("#try-result"),
      tryFrames: $("#try-frames"),
      watchForm: $("#watch-form"),
      watchSession: $("#watch-session"),
      watchStart: $("#watch-start"),
      watchStop: $("#watch-stop"),
      watchPause: $("#watch-pause"),
      watchFilter: $("#watch-filter"),
      watchClear: $("#watch-clear"),
      watchStatus: $("#watch-status"),
      watchDropped: $("#watch-dropped"),
      watchCount: $("#watch-count"),
      watchFrames: $("#watch-frames"),
    });

    ui.signInForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = ui.token.value.trim();
      ui.token.value = ""; // the token is used once, for this request, and forgotten
      setError(ui.signInError, "");
      ui.signInError.hidden = false;
      signIn(token);
    });
    ui.signOut.addEventListener("click", () => signOut());

    for (const button of ui.tabButtons) {
      button.addEventListener("click", () => selectTab(button.dataset.tab));
      button.addEventListener("keydown", (event) => {
        if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
        const index = TABS.indexOf(button.dataset.tab);
        const next = TABS[(index + (event.key === "ArrowRight" ? 1 : TABS.length - 1)) % TABS.length];
        selectTab(next);
        const target = ui.tabButtons.find((b) => b.dataset.tab === next);
        if (target) target.focus();
      });
    }
    document.addEventListener("visibilitychange", () => restartPolling());

    ui.catalogReload.addEventListener("click", () => loadCatalog());
    ui.auditLimit.addEventListener("change", () => {
      state.lastRendered.audit = null;
      restartPolling();
    });

    ui.tryTool.addEventListener("change", () => buildTryForm());
    ui.tryForm.addEventListener("submit", (event) => runTry(event));
    ui.tryCancel.addEventListener("click", () => cancelTry("cancelled"));

    ui.watchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      startWatch();
    });
    ui.watchStop.addEventListener("click", () => stopWatch("stopped"));
    ui.watchPause.addEventListener("click", () => togglePause());
    ui.watchFilter.addEventListener("input", () => applyWatchFilter());
    ui.watchClear.addEventListener("click", () => {
      ui.watchFrames.replaceChildren();
      watchState.buffer = [];
      updateWatchCounters();
      if (watchState.controller) setWatchStatus(watchStatusText(), false);
    });

    const fromHash = window.location.hash.replace(/^#/, "");
    state.tab = TABS.includes(fromHash) ? fromHash : "sessions";
    selectTab(state.tab, { replaceHash: false });
    boot();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
