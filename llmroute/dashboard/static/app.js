// llmroute dashboard: fills the page from /dashboard/api/* and refreshes it by polling.
// Every figure comes from the API as computed by the server (the same code as `llmroute report` and
// `llmroute quality`); this file only formats. Data reaches the page through textContent, never innerHTML.
"use strict";
(() => {
  const VIEWS = ["overview", "quality", "providers", "budgets", "requests"];
  const MAX_ROWS = 500;
  const state = {
    view: "overview", since: "30d", refreshS: 5, timer: null, lastOk: null, busy: false, again: false,
    qBy: "strategy", qGroup: "", budget: "", filters: {}, rows: [], seen: null, nextBefore: null, charts: {},
  };
  const $ = (id) => document.getElementById(id);

  // -- building DOM: strings only ever become text nodes -------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === "") continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function setText(id, text, raw) {
    const node = $(id);
    node.textContent = text;
    if (raw !== undefined) node.dataset.value = raw === null ? "" : String(raw);
  }
  function fill(tbodyParent, rows, empty) {
    const body = tbodyParent.tBodies[0];
    body.replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", {colspan: tbodyParent.tHead.rows[0].cells.length, class: "muted"}, empty))]));
  }
  const td = (value, cls, raw) => el("td", {class: cls, data: raw === undefined ? null : {value: raw}}, value);
  const num = (value, raw) => td(value, "num", raw);
  const badge = (text, cls) => el("span", {class: "badge " + (cls || text)}, text);

  // -- formatting (display only) -------------------------------------------------------------------------
  const missing = (x) => x === null || x === undefined || Number.isNaN(x);
  function usd(x) {  // $1,234.50 · $0.0123 · $0.000012 (two significant digits below a cent)
    if (missing(x)) return "–";
    const size = Math.abs(x);
    const body = size >= 1 ? size.toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2})
      : size >= 0.01 ? size.toFixed(4) : size === 0 ? "0.00"
      : size.toFixed(Math.min(10, 1 - Math.floor(Math.log10(size))));
    return (x < 0 ? "-$" : "$") + body;
  }
  const count = (x) => (missing(x) ? "–" : Number(x).toLocaleString("en-US"));
  const pct = (x) => (missing(x) ? "–" : x.toFixed(1) + "%");
  const share = (x) => (missing(x) ? "–" : (x * 100).toFixed(1) + "%");
  const ms = (x) => (missing(x) ? "–" : Math.round(x).toLocaleString("en-US") + " ms");
  const secs = (x) => (missing(x) ? "–" : x < 90 ? Math.round(x) + " s" : x < 5400 ? Math.round(x / 60) + " min"
    : (x / 3600).toFixed(1) + " h");
  const utc = (ts) => (missing(ts) ? "–" : new Date(ts * 1000).toISOString().slice(0, 19).replace("T", " "));
  const clock = (ts) => new Date(ts).toTimeString().slice(0, 8);

  // -- talking to the API ----------------------------------------------------------------------------------
  class Refused extends Error {}
  class Answered extends Error {}  // the API answered, with an error (a bad filter, the ledger down)
  async function api(view, params) {
    const query = new URLSearchParams(Object.entries(params || {}).filter(([, v]) => v !== "" && v != null));
    const response = await fetch(`/dashboard/api/${view}?${query}`, {
      credentials: "same-origin", cache: "no-store", headers: {Accept: "application/json"},
    });
    if (response.status === 401 || response.status === 403) throw new Refused("refused");
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
      throw new Answered(message);
    }
    return response.json();
  }
  function chart(id, name, params, version) {
    const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
    query.set("t", String(version));
    const url = `/dashboard/chart/${name}.svg?${query}`;
    if (state.charts[id] !== url) { state.charts[id] = url; $(id).src = url; }
  }

  // -- the ten-second answer (always shown) ----------------------------------------------------------------
  function renderAnswer(overview, quality, providers) {
    // Without a ledger (ledger.enabled: false) a view answers only a note, and live providers and budgets.
    const note = overview.note || quality.note || providers.note || "";
    $("note").hidden = !note;
    setText("note", note);
    const p = overview.period || {}, today = overview.today || {};
    setText("k-savings", usd(p.savings_usd), p.savings_usd);
    setText("k-savings-sub", `${pct(p.savings_pct)} less than sending everything to ${overview.baseline || "the baseline"}`
      + ` (${usd(p.baseline_usd)})`);
    setText("k-spend", usd(p.cost_usd), p.cost_usd);
    setText("k-spend-sub", `today ${usd(today.cost_usd)} · ${count(p.requests)} requests`);
    const total = quality.measured && quality.report ? quality.report.total : null;
    if (total && !missing(total.retained)) {
      setText("k-retained", share(total.retained), total.retained);
      setText("k-retained-sub", `95% interval ${share(total.ci_low)}–${share(total.ci_high)}`
        + ` over ${count(total.pairs)} graded pairs`);
    } else {
      setText("k-retained", "not measured", null);
      $("k-retained-sub").replaceChildren(el("a", {href: "#quality"}, "how to start measuring"));
    }
    const open = (providers.providers || []).filter((x) => x.breaker && x.breaker.state !== "closed");
    setText("k-failing", count(p.failed), p.failed);
    setText("k-failing-sub", (open.length ? `breaker open: ${open.map((x) => x.provider).join(", ")} · ` : "")
      + `${count(p.fallbacks)} fallbacks, ${count(p.reroutes)} reroutes`);
    $("k-failing").className = "figure " + (p.failed || open.length ? "bad" : "good");
  }

  // -- views -----------------------------------------------------------------------------------------------
  function renderOverview(o) {
    const p = o.period || {}, today = o.today || {};
    setText("o-today", usd(today.cost_usd), today.cost_usd);
    setText("o-today-sub", `${count(today.requests)} requests, saved ${usd(today.savings_usd)}`);
    setText("o-spend", usd(p.cost_usd), p.cost_usd);
    setText("o-baseline", `all on ${o.baseline || "baseline"}: ${usd(p.baseline_usd)}`);
    setText("o-savings", usd(p.savings_usd), p.savings_usd);
    setText("o-savings-pct", pct(p.savings_pct) + " saved", p.savings_pct);
    setText("o-blended", usd(p.blended_per_m), p.blended_per_m);
    setText("o-tokens", `${count(p.tokens)} tokens`);
    setText("o-requests", count(p.requests), p.requests);
    setText("o-errors", `${count(p.failed)} errors · ${count(p.fallbacks)} fallbacks · ${count(p.reroutes)} reroutes`);
    setText("o-latency", `${ms(p.p50_ms)} / ${ms(p.p95_ms)}`);
    setText("o-ttft", `first token ${ms(p.ttft_p50_ms)} / ${ms(p.ttft_p95_ms)}`);
    fill($("o-split"), (o.by_provider || []).map((g) => el("tr", {data: {provider: g.group}},
      td(g.group), num(count(g.requests), g.requests), num(share(g.request_share), g.request_share),
      num(usd(g.cost_usd), g.cost_usd), num(share(g.cost_share), g.cost_share), num(usd(g.blended_per_m)),
      num(`${ms(g.p50_ms)} / ${ms(g.p95_ms)}`), num(count(g.failed)), num(count(g.fallbacks)))),
    "no requests in this period");
    const m = o.measurement || {};
    setText("o-measurement", m.pairs ? `Measuring quality cost ${usd(m.total_usd)} for ${count(m.pairs)} graded pairs`
      + " (not included in the spend above)." : "");
    chart("c-spend", "spend", {since: state.since}, o.generated_ts);
    chart("c-savings", "savings", {since: state.since}, o.generated_ts);
  }

  function options(select, values, current) {
    const have = Array.from(select.options, (o) => o.value);
    if (have.join("\n") !== values.join("\n")) select.replaceChildren(...values.map((v) => el("option", {value: v}, v)));
    if (values.includes(current)) select.value = current;
    return select.value;
  }

  function renderQuality(q, overview) {
    const measured = Boolean(q.measured && q.report);
    $("q-empty").hidden = measured;
    $("q-body").hidden = !measured;
    if (!measured) { setText("q-how", q.how_to_start || q.note || ""); return; }
    const r = q.report, t = r.total;
    setText("q-retained", share(t.retained), t.retained);
    setText("q-ci", `95% interval ${share(t.ci_low)}–${share(t.ci_high)}`);
    const op = q.operating_point;
    setText("q-share", op ? share(op.reference_share) + " strong" : "–");
    setText("q-share-sub", op && !missing(op.retained) ? `keeps ${share(op.retained)} of the strong tier's quality` : "");
    const d = q.drift || {};
    const alarm = d.enabled === false ? "off" : d.alarm === true ? "alarm" : d.alarm === false ? "ok" : "not set";
    $("q-drift").replaceChildren(badge(alarm, d.alarm === true ? "alarm" : d.alarm === false ? "ok" : "cold"));
    setText("q-drift-sub", d.enabled === false ? "shadow evaluation is off: set shadow.rate to measure live traffic"
      : (d.live ? "live shadow evaluation" : "from the ledger")
      + (missing(d.alert_below) ? "; set shadow.alert_below to arm it" : `; alarm below ${share(d.alert_below)}`)
      + (missing(d.retained) ? "" : `; latest ${share(d.retained)} over ${count(d.pairs)} pairs`));
    const m = overview.measurement || {};
    setText("q-cost", usd(m.total_usd));
    setText("q-pairs", `${count(t.pairs)} graded pairs in this period`);
    const groups = [...new Set((q.over_time || []).map((row) => String(row.group)))].sort();
    state.qGroup = options($("q-group"), groups, state.qGroup);
    chart("c-retained", "retained", {since: state.since, by: state.qBy, group: state.qGroup}, q.generated_ts);
    chart("c-curve", "curve", {since: state.since, by: state.qBy}, q.generated_ts);
    fill($("q-groups"), (r.groups || []).map((g) => el("tr", {},
      td(g.group), num(count(g.pairs)), num(share(g.retained), g.retained),
      num(`${share(g.ci_low)}–${share(g.ci_high)}`), num(share(g.served_mean)), num(share(g.reference_mean)),
      num(usd((g.shadow_cost_usd || 0) + (g.judge_cost_usd || 0))))), "no graded pairs");
    $("q-warnings").replaceChildren(...(r.warnings || []).map((w) => el("li", {}, w)));
  }

  function renderProviders(data) {
    setText("p-source", data.live ? "Live state of this gateway, and the ledger's history for the period."
      : "From the ledger alone: breaker, measured latency, rate limits and warmth are only known to a running gateway.");
    const failures = [];
    fill($("p-table"), (data.providers || []).map((p) => {
      const b = p.breaker, rl = p.rate_limit, price = p.price || {};
      for (const f of p.recent_failures || []) failures.push({...f, provider: p.provider});
      const skips = (p.breaker_history || []).reduce((sum, h) => sum + (h.circuit_open_skips || 0), 0);
      return el("tr", {data: {provider: p.provider}},
        td([el("strong", {}, p.provider), el("div", {class: "muted"}, p.model || "")]),
        td(b ? [badge(b.state), el("div", {class: "muted"}, `for ${secs(b.since_s)}`
          + (b.retry_in_s ? `, probe in ${secs(b.retry_in_s)}` : "") + `; opened ${count(b.opened)}×`),
        b.reason ? el("div", {class: "muted"}, b.reason) : null,
        (b.transitions || []).length ? el("ol", {class: "transitions muted", title: "latest changes of state (UTC)"},
          b.transitions.slice(-3).reverse().map((t) =>
            el("li", {}, `${utc(t.ts).slice(11)} ${t.state.replace("_", "-")}: ${t.reason}`))) : null]
          : el("span", {class: "muted"}, "not live"), null),
        td([el("div", {}, `${ms(p.latency_ms)} now`), el("div", {class: "muted"},
          `p50 ${ms(p.latency_p50_ms)} · p95 ${ms(p.latency_p95_ms)}`),
        skips ? el("div", {class: "warn"}, `${count(skips)} skipped while open`) : null]),
        td(rl ? [el("div", {}, `tokens ${count(rl.tokens_remaining)}`
          + (missing(rl.tokens_resets_in_s) ? "" : ` (resets ${secs(rl.tokens_resets_in_s)})`)),
        el("div", {}, `requests ${count(rl.requests_remaining)}`)] : el("span", {class: "muted"}, "–")),
        td(missing(p.cold) ? el("span", {class: "muted"}, "–")
          : [badge(p.cold ? "cold" : "warm"), el("div", {class: "muted"}, `${count(p.cold_starts)} cold starts`)]),
        td([el("div", {}, price.configured || "–"), el("div", {class: "muted"},
          `effective ${usd(price.effective_per_m)} / 1M` + (missing(price.busy_s) ? "" : ` · ${secs(price.busy_s)} busy`))]),
        num([el("div", {}, count(p.requests)), el("div", {class: p.failed ? "bad" : "muted"},
          `${count(p.failed)} failed (${share(p.error_rate)})`)], p.requests),
        td([...Object.entries(p.failures_by_kind || {}).map(([k, n]) => el("div", {}, `${k}: ${count(n)}`)),
          ...Object.entries(p.live_failures_by_kind || {}).map(([k, n]) =>
            el("div", {class: "muted"}, `${k}: ${count(n)} since start`))]));
    }), "no provider");
    failures.sort((a, b) => b.ts - a.ts);
    fill($("p-failures"), failures.slice(0, 20).map((f) => el("tr", {},
      td(utc(f.ts)), td(f.provider), td(f.kind), td(missing(f.status) ? "–" : f.status), td(f.request_id || ""),
      td(f.error || "", "err"))),
    "no failures in this period");
  }

  function renderBudgets(data) {
    setText("b-share", share(data.strong_share), data.strong_share);
    const budgets = data.budgets || [];
    fill($("b-table"), budgets.map((b) => {
      const pace = b.pacing;
      return el("tr", {},
        td(b.name), td(`${b.period || ""}, ends ${utc(b.period_end_ts)}`),
        num(`${usd(b.spent_usd)} / ${usd(b.usd)}`, b.spent_usd),
        td([el("progress", {max: 1, value: Math.min(1, Math.max(0, b.used_share || 0))}), " " + share(b.used_share)]),
        num(pace ? usd(pace.target_usd) : "–"), num(pace ? usd(pace.projected_end_usd) : "–"),
        num(pace ? share(pace.share) : "–"), td(b.on_exhausted || ""));
    }), "no budget configured");
    state.budget = options($("b-pick"), budgets.map((b) => b.name), state.budget);
    $("b-pick").parentElement.hidden = budgets.length < 2;
    chart("c-budget", "budget", {since: state.since, budget: state.budget}, data.generated_ts);
    const spendRows = (rows, name) => rows.map((r) => el("tr", {}, td(r[name]), num(count(r.requests)),
      num(usd(r.cost_usd), r.cost_usd), num(usd(r.today_cost_usd))));
    fill($("b-keys"), spendRows(data.keys || [], "key"), "no key spent in this period");
    fill($("b-tags"), spendRows(data.tags || [], "tag"), "no tagged spend in this period");
  }

  function requestRow(r, fresh) {
    const tokens = missing(r.prompt_tokens) ? "–" : `${count(r.prompt_tokens)} + ${count(r.completion_tokens)}`;
    const attempts = el("ul", {class: "attempts"}, (r.attempts || []).map((a) => el("li", {},
      `${a.provider} · ${missing(a.status) ? "–" : a.status} · ${a.kind || (a.ok ? "ok" : "")} · ${ms(a.latency_ms)}`
      + ` · ${usd(a.cost_usd)}`, a.error ? el("div", {class: "err"}, a.error) : null)));
    return el("tr", {class: fresh ? "fresh" : null, data: {id: r.id, requestId: r.request_id || ""}},
      td(utc(r.ts)), td([el("div", {}, r.key || "–"), r.user ? el("div", {class: "muted"}, r.user) : null]),
      td((r.tags || []).map((t) => el("span", {class: "tag"}, t))), td(r.strategy || "–"),
      td([el("div", {}, r.provider || "–"), el("div", {class: "muted"}, r.model || "")]),
      td([badge(r.status, r.status), r.fallback ? el("div", {class: "muted"}, "fell back") : null,
        r.error ? el("div", {class: "err bad"}, r.error) : null]),
      num(tokens), num(usd(r.cost_usd), r.cost_usd),
      num(`${ms(r.latency_ms)}` + (missing(r.ttft_ms) ? "" : ` (first ${ms(r.ttft_ms)})`)), td(attempts));
  }

  function renderRequests(data, older) {
    const byId = new Map(state.rows.map((r) => [r.id, r]));
    for (const r of data.requests || []) byId.set(r.id, r);
    state.rows = [...byId.values()].sort((a, b) => b.id - a.id).slice(0, MAX_ROWS);
    const next = data.next_before !== undefined ? data.next_before : data.next_before_id;
    if (older || state.nextBefore === null) state.nextBefore = next === undefined ? null : next;
    const seen = state.seen;
    fill($("r-table"), state.rows.map((r) => requestRow(r, seen !== null && !seen.has(r.id))),
      "no request matches");
    state.seen = new Set(state.rows.map((r) => r.id));
    $("r-more").hidden = missing(state.nextBefore);
  }

  // -- the refresh loop ------------------------------------------------------------------------------------
  const period = () => ({since: state.since});
  async function refresh() {
    if (state.busy) { state.again = true; return; }  // asked again while fetching: once more right after
    clearTimeout(state.timer);
    if (document.hidden) {  // nobody is looking: no load on the gateway until the tab is shown again
      state.timer = setTimeout(refresh, state.refreshS * 1000);
      return;
    }
    state.busy = true;
    const view = state.view;
    const status = $("status");
    try {
      const [overview, quality, providers] = await Promise.all([
        api("overview", period()), api("quality", {...period(), by: state.qBy}), api("providers", period())]);
      renderAnswer(overview, quality, providers);
      if (view === "overview") renderOverview(overview);
      else if (view === "quality") renderQuality(quality, overview);
      else if (view === "providers") renderProviders(providers);
      else if (view === "budgets") renderBudgets(await api("budgets", period()));
      else renderRequests(await api("requests", {...period(), ...state.filters}), false);
      state.lastOk = Date.now();
      status.textContent = `updated ${clock(state.lastOk)}`;
      status.className = "status";
      status.dataset.state = "ok";
      status.dataset.view = view;
    } catch (error) {
      status.className = "status stale";
      const since = `showing data from ${state.lastOk ? clock(state.lastOk) : "never"}`;
      if (error instanceof Refused) {
        status.dataset.state = "refused";
        status.textContent = "key refused: reload the page to sign in again";
      } else if (error instanceof Answered) {
        status.dataset.state = "error";
        status.textContent = `the API answered: ${error.message}; ${since}`;
      } else {
        status.dataset.state = "unreachable";
        status.textContent = `API unreachable, retrying; ${since}`;
      }
    } finally {
      state.busy = false;
      const again = state.again || view !== state.view;
      state.again = false;
      state.timer = setTimeout(refresh, again ? 0 : state.refreshS * 1000);
    }
  }

  function show(view) {
    state.view = VIEWS.includes(view) ? view : "overview";
    for (const section of document.querySelectorAll("section.view")) section.hidden = section.dataset.view !== state.view;
    for (const tab of document.querySelectorAll(".tabs a")) {
      tab.setAttribute("aria-selected", String(tab.dataset.view === state.view));
    }
    refresh();
  }

  async function start() {
    $("period").addEventListener("change", (e) => { state.since = e.target.value; resetRequests(); refresh(); });
    $("q-by").addEventListener("change", (e) => { state.qBy = e.target.value; state.qGroup = ""; refresh(); });
    $("q-group").addEventListener("change", (e) => { state.qGroup = e.target.value; refresh(); });
    $("b-pick").addEventListener("change", (e) => { state.budget = e.target.value; refresh(); });
    const form = $("r-filters");
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      state.filters = Object.fromEntries(Array.from(new FormData(form)).filter(([, v]) => v !== ""));
      resetRequests();
      refresh();
    });
    form.addEventListener("reset", () => { state.filters = {}; resetRequests(); setTimeout(refresh, 0); });
    $("r-more").addEventListener("click", async () => {
      try {
        renderRequests(await api("requests", {...period(), ...state.filters, before: state.nextBefore}), true);
      } catch (error) { $("status").textContent = `could not load older requests: ${error.message}`; }
    });
    window.addEventListener("hashchange", () => show(location.hash.slice(1)));
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
    try {
      const meta = await api("meta");
      state.refreshS = Math.min(60, Math.max(1, Number(meta.refresh_s) || 5));
      const ledger = String(meta.ledger || "").split(/[\\/]/).pop();  // the file's name; the whole in the tooltip
      setText("footer", `llmroute ${meta.version || ""} · ${meta.source === "gateway" ? "served by the gateway"
        : "read from the ledger alone"} · ledger ${ledger || "off"} · refreshed every ${state.refreshS} s`);
      $("footer").title = meta.ledger || "";
    } catch (_) { /* the refresh loop reports it */ }
    show(location.hash.slice(1));
  }
  function resetRequests() { state.rows = []; state.seen = null; state.nextBefore = null; }

  document.addEventListener("DOMContentLoaded", start);
})();
