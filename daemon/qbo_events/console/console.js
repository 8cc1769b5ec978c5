// The qbo-events console: reads /status and the admin API every few seconds and draws them;
// actions POST to the admin API with the admin token as a bearer header. Text from the daemon is
// only ever set with textContent (never parsed as HTML), and nothing is fetched from elsewhere.
"use strict";

(() => {
  const API = "/api/v1";
  const TICK_MS = 3000;
  const HOURS = 6;
  const TOKEN_KEY = "qbo-events.admin-token";
  const EXPIRING_DAYS = 30;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MODES = { webhook: "webhooks", polling: "polling", hybrid: "hybrid" };
  const ACTIVE_RESYNC = ["queued", "running", "draining", "cancelling"];

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  // -- building DOM without HTML strings -------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  function button(label, onclick, extra = {}) {
    return el("button", { type: "button", onclick, ...extra }, label);
  }

  // -- formatting --------------------------------------------------------------------------------

  function isoTime(unix) {
    if (unix === null || unix === undefined) return "—";
    return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function parseTime(text) {
    if (!text) return null;
    const ms = Date.parse(text);
    return Number.isNaN(ms) ? null : ms / 1000;
  }

  function span(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} d`;
  }

  const now = () => Date.now() / 1000;

  // -- messages --------------------------------------------------------------------------------

  function say(text, error = false) {
    const node = $("#message");
    node.textContent = text;
    node.classList.toggle("error", error);
  }

  // -- the API ---------------------------------------------------------------------------------

  async function getJson(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  let token = sessionStorage.getItem(TOKEN_KEY) || "";

  function setToken(value) {
    token = value;
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("#forget-token").hidden = !value;
  }

  function askToken() {
    const dialog = $("#token-dialog");
    const input = $("#token-input");
    input.value = "";
    return new Promise((resolve) => {
      const done = () => {
        dialog.removeEventListener("close", done);
        const given = dialog.returnValue === "ok" ? input.value.trim() : "";
        input.value = "";
        resolve(given || null);
      };
      dialog.returnValue = "";
      dialog.addEventListener("close", done);
      dialog.showModal();
      input.focus();
    });
  }

  function askConfirm(text) {
    const dialog = $("#confirm-dialog");
    $("#confirm-text").textContent = text;
    return new Promise((resolve) => {
      const done = () => {
        dialog.removeEventListener("close", done);
        resolve(dialog.returnValue === "ok");
      };
      dialog.returnValue = "";
      dialog.addEventListener("close", done);
      dialog.showModal();
      $("#confirm-ok").focus();
    });
  }

  class Refused extends Error {}

  async function send(path, body, given) {
    const response = await fetch(path, {
      method: "POST",
      headers: {
        Accept: "application/json",
        "Content-Type": "application/json",
        Authorization: `Bearer ${given}`,
      },
      body: body === null ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    const answer = await response.json().catch(() => ({}));
    if (response.status === 401) {
      setToken("");
      throw new Refused("the admin token was refused");
    }
    if (!response.ok) throw new Refused(answer.error || `HTTP ${response.status}`);
    return answer;
  }

  // An action: the token (asked once), then a confirmation if `confirm` gives one (it may count
  // first, with the token), then the POST. Returns the answer, or null when nothing was done.
  async function act(what, path, body, confirm = null) {
    const given = token || (await askToken());
    if (!given) {
      say(`${what}: refused without the admin token; nothing was changed.`, true);
      return null;
    }
    try {
      if (confirm) {
        const question = await confirm(given);
        if (question === false) return null;
        if (question && !(await askConfirm(question))) {
          say(`${what}: cancelled; nothing was changed.`);
          return null;
        }
      }
      const answer = await send(path, body, given);
      if (given !== token) setToken(given);
      refreshSoon();
      return answer;
    } catch (error) {
      say(`${what}: ${error.message}; nothing was changed.`, true);
      return null;
    }
  }

  // -- state -----------------------------------------------------------------------------------

  let status = null;
  let activity = null;
  const cards = new Map();
  const charts = new Map();

  // -- the banner ------------------------------------------------------------------------------

  function drawBanner() {
    const problems = [];
    const reload = status.last_reload || {};
    if (reload.ok === false) {
      const why = Array.isArray(reload.error) ? reload.error.join("; ") : reload.error || "no reason given";
      problems.push(`The last reload was rejected: ${why}. The previous configuration is still in use.`);
    }
    const outbox = status.outbox || {};
    if (outbox.writable === false) problems.push("Storage cannot be written: new events are refused until it can.");
    if (outbox.slow_storage) problems.push("Storage is slow: commits take long enough to run on a helper thread.");
    if (outbox.counts_error) problems.push(`The outbox cannot be counted: ${outbox.counts_error}`);
    if (status.ready === false) problems.push(`Not ready: ${(status.reasons || []).join("; ")}`);
    const banner = $("#banner");
    banner.replaceChildren(...problems.map((text) => el("p", { text })));
    banner.hidden = problems.length === 0;
  }

  // -- overview cards (built once per instance, then updated in place to keep focus) -----------

  function field(dl, label) {
    const dd = el("dd");
    dl.append(el("dt", { text: label }), dd);
    return dd;
  }

  function makeCard(name) {
    const dl = el("dl");
    const fields = {
      connection: field(dl, "Connection"),
      token: field(dl, "Refresh token"),
      mode: field(dl, "Mode"),
      endpoint: field(dl, "Endpoint"),
      queue: field(dl, "Undelivered / dead"),
      calls: field(dl, "API calls this month"),
      resync: field(dl, "Resync"),
    };
    const link = el("div", { class: "link", hidden: true });
    const since = el("input", { name: "resync-since", value: "full", size: 8, autocomplete: "off" });
    const buttons = {
      connect: button("Make connect link", () => makeLink(name, link)),
      resume: button("Resume endpoint", () => resume(name), { class: "quiet" }),
      retry: button("Retry dead letters", () => retryDead(name), { class: "quiet" }),
      resync: button("Start resync", () => startResync(name, since.value), { class: "quiet" }),
      cancel: button("Cancel resync", () => cancelResync(name), { class: "quiet" }),
    };
    const root = el(
      "article",
      { class: "card", "data-instance": name, "aria-label": `Instance ${name}` },
      el("h3", { text: name }),
      dl,
      el("div", { class: "buttons" }, ...Object.values(buttons)),
      el("p", { class: "fields" }, el("label", {}, "Resync since (a span like 2d, or full)", since)),
      link,
    );
    return { root, fields, buttons };
  }

  function setText(node, text, tone = "") {
    node.textContent = text;
    node.className = tone;
  }

  function drawCards() {
    const instances = status.instances || {};
    const names = Object.keys(instances);
    const box = $("#cards");
    for (const [name, card] of cards) {
      if (!names.includes(name)) {
        card.root.remove();
        cards.delete(name);
      }
    }
    for (const name of names) {
      let card = cards.get(name);
      if (!card) {
        card = makeCard(name);
        cards.set(name, card);
      }
      if (box.children[names.indexOf(name)] !== card.root) box.append(card.root);
      updateCard(card, instances[name], (activity && activity.instances[name]) || null);
    }
  }

  function updateCard(card, inst, counts) {
    const f = card.fields;
    const connection = inst.connection || {};
    const state = connection.state || inst.state || "?";
    const days = inst.tokens ? inst.tokens.refresh_token_days_left : null;
    const expiring = typeof days === "number" && days <= EXPIRING_DAYS;
    const needsConnect = state === "needs re-authorization" || state === "waiting for connect";
    let shown = state;
    if (connection.company_name) shown += ` (${connection.company_name})`;
    if (expiring && !needsConnect) shown += ", expiring";
    setText(f.connection, shown, needsConnect ? "bad" : expiring ? "warn" : "good");
    setText(f.token, typeof days === "number" ? `${Math.floor(days)} days left` : "—", expiring ? "warn" : "");
    setText(f.mode, MODES[inst.vendor_type] || inst.vendor_type || "?");
    const endpoint = inst.endpoint || {};
    let health = endpoint.state || "?";
    if (endpoint.consecutive_failures) health += `, ${endpoint.consecutive_failures} failures in a row`;
    if (endpoint.paused_until_probe) health += `, next probe ${endpoint.paused_until_probe}`;
    setText(f.endpoint, health, endpoint.state === "healthy" ? "good" : endpoint.state === "paused" ? "bad" : "warn");
    const dead = counts ? counts.dead : null;
    setText(f.queue, counts ? `${counts.undelivered} / ${counts.dead}` : "—", dead ? "bad" : "");
    const calls = inst.api_calls || {};
    setText(f.calls, calls.total === undefined ? "—" : `${calls.total} (${calls.month})`);
    const resync = inst.resync;
    const running = resync && ACTIVE_RESYNC.includes(resync.state);
    setText(
      f.resync,
      resync
        ? `${resync.state}: ${resync.resources_done} of ${resync.resources_total} resources, ${resync.objects} objects` +
            (resync.last_error ? ` (${resync.last_error})` : "")
        : "none",
      resync && resync.last_error ? "warn" : "",
    );
    const b = card.buttons;
    b.connect.className = needsConnect ? "" : "quiet";
    b.resume.disabled = endpoint.state === "healthy";
    b.retry.disabled = !dead;
    b.retry.textContent = dead ? `Retry ${dead} dead letters` : "Retry dead letters";
    b.resync.disabled = Boolean(running);
    b.cancel.disabled = !running;
    card.root.dataset.state = state;
    card.root.dataset.mode = MODES[inst.vendor_type] || inst.vendor_type || "";
    card.root.dataset.endpoint = endpoint.state || "";
    card.root.dataset.undelivered = counts ? counts.undelivered : "";
    card.root.dataset.dead = counts ? counts.dead : "";
    card.root.dataset.attention =
      needsConnect || dead || endpoint.state === "paused" ? "bad" : expiring || endpoint.state === "failing" ? "warn" : "";
  }

  // -- card actions ----------------------------------------------------------------------------

  async function makeLink(name, box) {
    const answer = await act(`Connect link for ${name}`, `${API}/instances/${encodeURIComponent(name)}/connect-links`, {});
    if (!answer) return;
    const input = el("input", { readonly: true, value: answer.url, "aria-label": `Connect link for ${name}` });
    box.replaceChildren(
      el("p", { text: `Single-use link, valid until ${isoTime(answer.expires_at)}: open it to connect a QuickBooks company.` }),
      input,
    );
    box.hidden = false;
    input.focus();
    input.select();
    say(`A connect link for ${name} is shown on its card.`);
  }

  async function resume(name) {
    const answer = await act(`Resume ${name}`, `${API}/instances/${encodeURIComponent(name)}/resume`, null);
    if (answer) say(answer.resumed ? `The endpoint of ${name} is resumed.` : `The endpoint of ${name} was healthy already.`);
  }

  async function retryDead(name) {
    const count = activity && activity.instances[name] ? activity.instances[name].dead : 0;
    const answer = await act(`Retry dead letters of ${name}`, `${API}/retries`, { instance: name }, async () =>
      `Queue ${count} dead ${count === 1 ? "letter" : "letters"} of ${name} for delivery again?`,
    );
    if (answer) say(`${answer.requeued} dead letters of ${name} are queued again.`);
  }

  async function startResync(name, since) {
    const text = (since || "full").trim();
    const body = text === "full" || text === "" ? { full: true } : { since: text };
    const scope = body.full ? "every object" : `every object changed since ${text}`;
    const answer = await act(`Resync ${name}`, `${API}/instances/${encodeURIComponent(name)}/resyncs`, body, async () =>
      `Start a resync of ${name}? It reads ${scope} from QuickBooks again and delivers each as an event.`,
    );
    if (answer) say(`Resync ${answer.resync.id} of ${name} is ${answer.resync.state}.`);
  }

  async function cancelResync(name) {
    const answer = await act(`Cancel the resync of ${name}`, `${API}/instances/${encodeURIComponent(name)}/resync-cancel`, null, async () =>
      `Cancel the resync of ${name} under way?`,
    );
    if (answer) say(`Resync ${answer.resync.id} of ${name} is ${answer.resync.state}.`);
  }

  // -- the activity chart (hand-drawn SVG, with the numbers in a table behind it) --------------

  function makeChart(name) {
    const activitySvg = svg("svg", { viewBox: `0 0 ${HOURS * 60} 100`, preserveAspectRatio: "none", class: "activity", role: "img" });
    const latencySvg = svg("svg", { viewBox: `0 0 ${HOURS * 60} 60`, preserveAspectRatio: "none", class: "latency", role: "img" });
    const peak = el("span");
    const latencyPeak = el("span");
    const rows = el("tbody");
    const root = el(
      "figure",
      { class: "chart", "data-instance": name },
      el("h3", { text: name }),
      activitySvg,
      el("div", { class: "axis" }, el("span", { text: `${HOURS} h ago` }), peak, el("span", { text: "now" })),
      latencySvg,
      el("div", { class: "axis" }, el("span", { text: "latency" }), latencyPeak, el("span", { text: "now" })),
      el(
        "details",
        {},
        el("summary", { text: `The minutes as a table` }),
        el(
          "div",
          { class: "scroll" },
          el(
            "table",
            {},
            el("thead", {}, el("tr", {}, ...["Minute", "Accepted", "Delivered", "Failed", "p50 ms", "p99 ms"].map((h) => el("th", { scope: "col", text: h })))),
            rows,
          ),
        ),
      ),
    );
    return { root, activitySvg, latencySvg, peak, latencyPeak, rows };
  }

  function drawCharts() {
    if (!activity) return;
    const box = $("#charts");
    const names = Object.keys(activity.instances);
    for (const [name, chart] of charts) {
      if (!names.includes(name)) {
        chart.root.remove();
        charts.delete(name);
      }
    }
    for (const name of names) {
      let chart = charts.get(name);
      if (!chart) {
        chart = makeChart(name);
        charts.set(name, chart);
      }
      if (box.children[names.indexOf(name)] !== chart.root) box.append(chart.root);
      drawChart(chart, name, activity.instances[name].minutes);
    }
  }

  function drawChart(chart, name, minutes) {
    const width = HOURS * 60;
    const slot = (m) => Math.floor((m.t - activity.since) / activity.minute);
    const top = Math.max(1, ...minutes.map((m) => Math.max(m.accepted, m.delivered)));
    const y = (v) => 100 - (v / top) * 92;
    const delivered = new Array(width).fill(0);
    const marks = [];
    let accepted = 0;
    let deliveredSum = 0;
    let failed = 0;
    for (const m of minutes) {
      const x = slot(m);
      if (x < 0 || x >= width) continue;
      accepted += m.accepted;
      deliveredSum += m.delivered;
      failed += m.failed;
      delivered[x] = m.delivered;
      if (m.accepted) marks.push(svg("rect", { class: "bar", x, y: y(m.accepted), width: 0.8, height: 100 - y(m.accepted) }));
      if (m.failed) marks.push(svg("rect", { class: "fail", x: x - 0.5, y: 0, width: 2, height: 7 }));
    }
    const line = svg("polyline", {
      class: "line-delivered",
      "vector-effect": "non-scaling-stroke",
      points: delivered.map((v, x) => `${x + 0.4},${y(v).toFixed(2)}`).join(" "),
    });
    chart.activitySvg.replaceChildren(...marks, line);
    chart.activitySvg.setAttribute(
      "aria-label",
      `${name}: ${accepted} accepted, ${deliveredSum} delivered, ${failed} failed attempts in the last ${HOURS} hours`,
    );
    chart.peak.textContent = `peak ${top}/min`;

    const timed = minutes.filter((m) => m.p99_ms !== null && m.p99_ms !== undefined);
    const slowest = Math.max(1, ...timed.map((m) => m.p99_ms));
    const ly = (v) => 58 - (v / slowest) * 54;
    const path = (key) => timed.map((m) => `${slot(m) + 0.4},${ly(m[key]).toFixed(2)}`).join(" ");
    chart.latencySvg.replaceChildren(
      svg("polyline", { class: "line-p99", "vector-effect": "non-scaling-stroke", points: path("p99_ms") }),
      svg("polyline", { class: "line-p50", "vector-effect": "non-scaling-stroke", points: path("p50_ms") }),
    );
    chart.latencySvg.setAttribute("aria-label", `${name}: delivery latency, p99 at most ${timed.length ? slowest : 0} ms`);
    chart.latencyPeak.textContent = timed.length ? `p99 up to ${slowest} ms` : "no deliveries";

    chart.root.dataset.accepted = accepted;
    chart.root.dataset.delivered = deliveredSum;
    chart.root.dataset.failed = failed;
    chart.rows.replaceChildren(
      ...minutes
        .slice()
        .reverse()
        .map((m) =>
          el(
            "tr",
            {},
            ...[isoTime(m.t), m.accepted, m.delivered, m.failed, m.p50_ms ?? "—", m.p99_ms ?? "—"].map((v) => el("td", { text: v })),
          ),
        ),
    );
  }

  // -- polling ---------------------------------------------------------------------------------

  let pollingKey = "";

  function drawPolling() {
    const rows = [];
    const t = now();
    for (const [name, inst] of Object.entries(status.instances || {})) {
      for (const [resource, r] of Object.entries(inst.resources || {})) {
        const polled = parseTime(r.last_poll_at);
        // The lag is how far behind now the resource's changes are read: from its cursor.
        const upTo = parseTime(r.cursor) ?? parseTime(r.last_success_at);
        rows.push([name, resource, polled === null ? "never" : `${span(t - polled)} ago`, upTo === null ? "—" : span(t - upTo), r.last_error || ""]);
      }
    }
    const key = JSON.stringify(rows);
    if (key === pollingKey) return;
    pollingKey = key;
    const body = $("#polling-rows");
    if (!rows.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 5, text: "No instance polls: every one takes webhooks only." })));
      return;
    }
    body.replaceChildren(
      ...rows.map((cells) => el("tr", {}, ...cells.map((v, i) => el("td", { text: v, class: i === 4 && v ? "bad" : undefined })))),
    );
  }

  // -- deliveries ------------------------------------------------------------------------------

  const SHOWN = 200;
  let deliveriesKey = "";

  function filterQuery() {
    const form = $("#filter");
    const params = new URLSearchParams({ limit: "1000" });
    for (const name of ["instance", "object", "state", "since", "until"]) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    return params;
  }

  // Re-rendering a table moves focus off its buttons: put it back on the same one.
  function keepingFocus(container, draw) {
    const active = document.activeElement;
    const key = active && container.contains(active) ? active.dataset.focusKey : null;
    draw();
    if (key) {
      const again = $$("[data-focus-key]", container).find((node) => node.dataset.focusKey === key);
      if (again) again.focus();
    }
  }

  async function loadDeliveries() {
    let found;
    try {
      found = (await getJson(`${API}/deliveries?${filterQuery()}`)).deliveries;
    } catch (error) {
      $("#delivery-count").textContent = `The deliveries cannot be listed: ${error.message}`;
      deliveriesKey = "";
      return;
    }
    const key = JSON.stringify(found);
    if (key === deliveriesKey) return;
    deliveriesKey = key;
    const newest = found.slice(-SHOWN).reverse();
    const body = $("#delivery-rows");
    keepingFocus(body, () => body.replaceChildren(...newest.map(deliveryRow)));
    const more = found.length >= 1000 ? "1000 or more" : String(found.length);
    $("#delivery-count").textContent =
      found.length > SHOWN ? `The newest ${SHOWN} of ${more} shown: narrow the filter to see the rest.` : `${found.length} shown.`;
  }

  function deliveryRow(item) {
    const at = item.delivered_at ?? item.accepted_at;
    const id = item.event_id;
    const actions = [button("Show", () => showDelivery(id), { "data-focus-key": `show:${item.seq}`, "aria-label": `Show ${id}` })];
    if (item.state === "dead") {
      actions.push(button("Retry", () => retryOne(item), { class: "danger", "data-focus-key": `retry:${item.seq}`, "aria-label": `Retry ${id}` }));
    }
    if (item.state === "delivered") {
      actions.push(button("Replay", () => replayOne(item), { class: "quiet", "data-focus-key": `replay:${item.seq}`, "aria-label": `Replay ${id}` }));
    }
    const state = item.last_error ? `${item.state}: ${item.last_error}` : item.state;
    return el(
      "tr",
      { "data-event-id": id, "data-state": item.state },
      el("td", { text: isoTime(at) }),
      el("td", { text: item.instance }),
      el("td", { text: `${item.object_type}/${item.object_id}` }),
      el("td", { text: item.event_type }),
      el("td", { text: state, class: item.state === "dead" ? "bad" : undefined }),
      el("td", { text: item.attempts }),
      el("td", { class: "actions" }, ...actions),
    );
  }

  async function showDelivery(eventId) {
    const box = $("#delivery-detail");
    let copies;
    try {
      copies = (await getJson(`${API}/deliveries/${encodeURIComponent(eventId)}`)).copies;
    } catch (error) {
      say(`Delivery ${eventId}: ${error.message}`, true);
      return;
    }
    const parts = [el("h3", { text: `Event ${eventId}` })];
    copies.forEach((copy, i) => {
      const item = copy.item;
      parts.push(
        el("h4", { text: `Copy ${i + 1} of ${copies.length}: ${item.state}, ${item.instance}, ${item.object_type}/${item.object_id}, ${item.event_type}` }),
        el("p", { text: `Accepted ${isoTime(item.accepted_at)}` + (item.delivered_at ? `, delivered ${isoTime(item.delivered_at)}` : "") }),
      );
      if (copy.attempts.length) {
        parts.push(
          el(
            "div",
            { class: "scroll" },
            el(
              "table",
              { class: "attempts" },
              el("thead", {}, el("tr", {}, ...["At", "Endpoint", "Status", "Error", "Latency", "Response"].map((h) => el("th", { scope: "col", text: h })))),
              el(
                "tbody",
                {},
                ...copy.attempts.map((a) =>
                  el(
                    "tr",
                    {},
                    ...[isoTime(a.at), a.endpoint, a.status ?? "no answer", a.error || "", `${a.latency_ms} ms`, a.response].map((v) => el("td", { text: v })),
                  ),
                ),
              ),
            ),
          ),
        );
      } else {
        parts.push(el("p", { class: "note", text: "No attempt yet." }));
      }
      const text = typeof copy.body === "string" ? copy.body : JSON.stringify(copy.body, null, 2);
      parts.push(el("pre", { class: "body", text, "aria-label": "The body" }));
    });
    box.replaceChildren(...parts);
    box.hidden = false;
    box.focus();
  }

  async function retryOne(item) {
    const answer = await act(`Retry ${item.event_id}`, `${API}/retries`, { instance: item.instance, event_id: item.event_id });
    if (answer) say(`${answer.requeued} dead ${answer.requeued === 1 ? "letter" : "letters"} queued again.`);
  }

  function countReplay(body) {
    return async (given) => {
      const dry = await send(`${API}/replays`, { ...body, dry_run: true }, given);
      if (!dry.queued) {
        say("Nothing to replay: no delivered event matches.");
        return false;
      }
      return `Send ${dry.queued} delivered ${dry.queued === 1 ? "event" : "events"} of ${body.instance} again?`;
    };
  }

  async function replay(body) {
    const answer = await act(`Replay for ${body.instance}`, `${API}/replays`, body, countReplay(body));
    if (answer) say(`${answer.queued} ${answer.queued === 1 ? "event is" : "events are"} queued to be delivered again.`);
  }

  function replayOne(item) {
    return replay({ instance: item.instance, event_ids: [item.event_id] });
  }

  function replayRange(event) {
    event.preventDefault();
    const form = event.target;
    const body = { instance: form.elements.instance.value, since: form.elements.since.value.trim() };
    const until = form.elements.until.value.trim();
    const object = form.elements.object.value.trim();
    if (until) body.until = until;
    if (object) body.object = object;
    return replay(body);
  }

  // -- quarantine ------------------------------------------------------------------------------

  let quarantineKey = "";
  let quarantineTotal = 0;

  async function loadQuarantine() {
    const found = await getJson(`${API}/quarantine?limit=100`);
    quarantineTotal = found.total;
    $("#quarantine-retry-all").disabled = !found.total;
    const key = JSON.stringify(found);
    if (key === quarantineKey) return;
    quarantineKey = key;
    const body = $("#quarantine-rows");
    keepingFocus(body, () => {
      if (!found.quarantined.length) {
        body.replaceChildren(el("tr", {}, el("td", { colspan: 5, text: "Nothing is quarantined." })));
        return;
      }
      body.replaceChildren(
        ...found.quarantined.map((q) =>
          el(
            "tr",
            { "data-quarantine-id": q.id },
            el("td", { text: q.id }),
            el("td", { text: isoTime(q.received_at) }),
            el("td", { text: q.reason }),
            el("td", { text: `${q.size} bytes` }),
            el(
              "td",
              { class: "actions" },
              button("Show", () => showQuarantined(q.id), { "data-focus-key": `qshow:${q.id}`, "aria-label": `Show quarantined body ${q.id}` }),
              button("Retry", () => retryQuarantined(q.id), { class: "quiet", "data-focus-key": `qretry:${q.id}`, "aria-label": `Retry quarantined body ${q.id}` }),
            ),
          ),
        ),
      );
    });
  }

  async function showQuarantined(id) {
    const box = $("#quarantine-body");
    try {
      const shown = await getJson(`${API}/quarantine/${id}`);
      box.textContent = shown.body;
    } catch (error) {
      say(`Quarantined body ${id}: ${error.message}`, true);
      return;
    }
    box.hidden = false;
    box.focus();
  }

  function describeRetried(done) {
    const failing = done.failing.length ? `, ${done.failing.length} still failing (${done.failing.map((f) => f.reason).join("; ")})` : "";
    return `Tried ${done.tried}: ${done.parsed.length} parsed into ${done.events} events (${done.new} new)${failing}.`;
  }

  async function retryQuarantined(id) {
    const answer = await act(`Retry quarantined body ${id}`, `${API}/quarantine-retries`, { id });
    if (answer) say(describeRetried(answer));
  }

  async function retryAllQuarantined() {
    const total = quarantineTotal;
    const answer = await act("Retry the quarantine", `${API}/quarantine-retries`, {}, async () =>
      `Parse all ${total} quarantined ${total === 1 ? "body" : "bodies"} again?`,
    );
    if (answer) say(describeRetried(answer));
  }

  // -- instance choices ------------------------------------------------------------------------

  function fillChoices() {
    const names = Object.keys(status.instances || {});
    for (const select of $$(".instance-choice")) {
      const have = $$("option", select).map((o) => o.value).filter(Boolean);
      if (JSON.stringify(have) === JSON.stringify(names)) continue;
      const chosen = select.value;
      const keep = $$("option", select).filter((o) => !o.value);
      select.replaceChildren(...keep, ...names.map((n) => el("option", { value: n, text: n })));
      if (names.includes(chosen)) select.value = chosen;
    }
  }

  // -- the loop --------------------------------------------------------------------------------

  let timer = null;
  let running = false;

  async function refresh() {
    if (running) return;
    running = true;
    try {
      [status, activity] = await Promise.all([getJson("/status"), getJson(`${API}/activity?hours=${HOURS}`)]);
      drawBanner();
      fillChoices();
      drawCards();
      drawCharts();
      drawPolling();
      await Promise.all([loadDeliveries(), loadQuarantine()]);
      $("#updated").textContent = `updated ${isoTime(now())}`;
      document.body.dataset.loaded = "true";
    } catch (error) {
      $("#updated").textContent = `cannot reach the daemon: ${error.message}`;
    } finally {
      running = false;
    }
  }

  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(loop, 200);
  }

  async function loop() {
    clearTimeout(timer);
    await refresh();
    timer = setTimeout(loop, TICK_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    setToken(token);
    $("#forget-token").addEventListener("click", () => {
      setToken("");
      say("The admin token is forgotten.");
    });
    $("#token-cancel").addEventListener("click", () => $("#token-dialog").close("cancel"));
    $("#filter").addEventListener("submit", (event) => {
      event.preventDefault();
      deliveriesKey = "";
      loadDeliveries();
    });
    $("#replay").addEventListener("submit", replayRange);
    $("#quarantine-retry-all").addEventListener("click", retryAllQuarantined);
    loop();
  });
})();
