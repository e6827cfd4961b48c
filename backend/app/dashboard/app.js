// The operator console: a static page that calls the API like any other client (docs/DASHBOARD.md).
// No build step, no CDN. Credentials live in sessionStorage (this tab only); without them the pages read
// what API_PUBLIC_READ allows and the controls answer "log in".
"use strict";

const API = "/api/v1";
const PAGES = ["overview", "market", "trades", "orders", "decisions", "control", "instances", "backtests", "research"];
const MODES = ["paper", "live", "replay"];
const $ = (selector, root = document) => root.querySelector(selector);
const pageEl = () => $("#page");

// ---------------------------------------------------------------- auth and fetch
const auth = {
  get() {
    try { return JSON.parse(sessionStorage.getItem("auth") || "null"); } catch { return null; }
  },
  set(value) { value ? sessionStorage.setItem("auth", JSON.stringify(value)) : sessionStorage.removeItem("auth"); },
  headers() {
    const a = auth.get();
    if (!a) return {};
    return a.kind === "key" ? { "X-API-Key": a.value } : { Authorization: "Bearer " + a.value };
  },
};

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

async function api(path, { method = "GET", body, form } = {}) {
  const headers = { ...auth.headers() };
  let payload;
  if (form) { payload = new URLSearchParams(form); }
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  const response = await fetch(API + path, { method, headers, body: payload });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    if (response.status === 401 && !auth.get()) showBanner("Log in to see this: the API does not allow public reads (API_PUBLIC_READ=false).", true);
    throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : data);
  }
  return data;
}

function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? "?" + new URLSearchParams(entries).toString() : "";
}

function errorText(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  if (Array.isArray(err.detail)) {
    return err.detail.map((d) => `${(d.loc || []).slice(-1)[0] || ""}: ${d.msg}`).join("; ");
  }
  return `${err.status}: ${typeof err.detail === "string" ? err.detail : JSON.stringify(err.detail)}`;
}

// ---------------------------------------------------------------- small helpers
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function num(value, digits = 0) {
  if (value === null || value === undefined || value === "") return "—";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
function pct(value, digits = 2) { return value === null || value === undefined ? "—" : num(Number(value) * 100, digits) + " %"; }
function signClass(value) { const n = Number(value); return n > 0 ? "pos" : n < 0 ? "neg" : ""; }
function when(iso) { return iso ? iso.replace("T", " ").replace(/(\.\d+)?(\+00:00|Z)$/, "") + " UTC" : "—"; }
function utcDay(iso) { return iso.slice(0, 10); }
function card(key, value, cls = "", id) {
  return h("div", { class: "card", "data-card": id || key }, h("div", { class: "k" }, key), h("div", { class: "v " + cls }, value));
}
function showBanner(text, isError = false) {
  const b = $("#banner");
  b.textContent = text;
  b.className = "banner" + (isError ? " error" : "");
  b.hidden = !text;
}

// ---------------------------------------------------------------- state
const state = {
  mode: null,
  status: null,
  lastEventId: Number(sessionStorage.getItem("lastEventId") || 0),
  socket: null,
  socketOpen: false,
  refreshTimer: null,
  reconnectTimer: null,
};

async function resolveMode() {
  const fromUrl = new URLSearchParams(location.search).get("mode");
  const saved = sessionStorage.getItem("mode");
  let mode = MODES.includes(fromUrl) ? fromUrl : MODES.includes(saved) ? saved : null;
  if (!mode) {
    try {
      const config = await fetch("/dashboard/config").then((r) => (r.ok ? r.json() : null));
      if (config && MODES.includes(config.mode)) mode = config.mode;
    } catch { /* the default below */ }
  }
  state.mode = mode || "paper";
  $("#mode").value = state.mode;
}

// ---------------------------------------------------------------- charts (SVG, no library)
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// A time axis over real timestamps (gaps show as gaps). series: [{points: [[ms, value]], color, fill}].
function lineChart(container, panels, { height = 260 } = {}) {
  container.innerHTML = "";
  const width = Math.max(container.clientWidth || pageEl().clientWidth - 30 || 800, 300);
  const pad = { l: 70, r: 12, t: 10, b: 22 };
  const all = panels.flatMap((p) => p.series.flatMap((serie) => serie.points.map((pt) => pt[0])));
  if (!all.length) { container.append(h("p", { class: "muted" }, "no data")); return; }
  const t0 = Math.min(...all), t1 = Math.max(...all) || t0 + 1;
  const totalWeight = panels.reduce((a, p) => a + (p.weight || 1), 0);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, height });
  const tip = h("div", { class: "tip" });
  const x = (t) => pad.l + ((t - t0) / Math.max(t1 - t0, 1)) * (width - pad.l - pad.r);
  let top = pad.t;
  const plotH = height - pad.t - pad.b;
  const scales = [];
  for (const panel of panels) {
    const ph = (plotH * (panel.weight || 1)) / totalWeight;
    const values = panel.series.flatMap((serie) => serie.points.map((pt) => pt[1]));
    let lo = Math.min(...values), hi = Math.max(...values);
    if (panel.zeroTop) hi = 0;
    if (lo === hi) { lo -= 1; hi += 1; }
    const y = (v) => top + 4 + (1 - (v - lo) / (hi - lo)) * (ph - 10);
    scales.push({ panel, y, top, ph });
    svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: top + ph, y2: top + ph, stroke: "#2a3541" }));
    for (const v of [lo, hi]) {
      const label = s("text", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end", fill: "#8b98a6", "font-size": 11 });
      label.textContent = panel.format ? panel.format(v) : num(v);
      svg.append(label);
    }
    const title = s("text", { x: pad.l + 6, y: top + 14, fill: "#8b98a6", "font-size": 11 });
    title.textContent = panel.title || "";
    svg.append(title);
    for (const serie of panel.series) {
      if (!serie.points.length) continue;
      const d = serie.points.map((pt, i) => `${i ? "L" : "M"}${x(pt[0]).toFixed(1)},${y(pt[1]).toFixed(1)}`).join("");
      if (serie.fill) {
        const base = y(panel.zeroTop ? 0 : lo);
        svg.append(s("path", { d: `${d}L${x(serie.points.at(-1)[0])},${base}L${x(serie.points[0][0])},${base}Z`, fill: serie.fill, stroke: "none" }));
      }
      svg.append(s("path", { d, fill: "none", stroke: serie.color, "stroke-width": 1.5, "data-series": serie.name || "" }));
    }
    top += ph;
  }
  for (const t of [t0, (t0 + t1) / 2, t1]) {
    const label = s("text", { x: x(t), y: height - 6, "text-anchor": "middle", fill: "#8b98a6", "font-size": 11 });
    label.textContent = new Date(t).toISOString().slice(0, 16).replace("T", " ");
    svg.append(label);
  }
  const cursor = s("line", { y1: pad.t, y2: height - pad.b, stroke: "#4da3ff55", visibility: "hidden" });
  svg.append(cursor);
  svg.addEventListener("mousemove", (event) => {
    const rect = svg.getBoundingClientRect();
    const px = ((event.clientX - rect.left) / rect.width) * width;
    const t = t0 + ((px - pad.l) / (width - pad.l - pad.r)) * (t1 - t0);
    const lines = [new Date(t).toISOString().slice(0, 16).replace("T", " ")];
    for (const { panel } of scales) {
      for (const serie of panel.series) {
        let best = null;
        for (const pt of serie.points) if (best === null || Math.abs(pt[0] - t) < Math.abs(best[0] - t)) best = pt;
        if (best) lines.push(`${serie.name}: ${panel.format ? panel.format(best[1]) : num(best[1])}`);
      }
    }
    cursor.setAttribute("x1", px); cursor.setAttribute("x2", px); cursor.setAttribute("visibility", "visible");
    tip.textContent = lines.join("\n");
    tip.style.display = "block";
    tip.style.left = Math.min(event.clientX - rect.left + 12, rect.width - 160) + "px";
    tip.style.top = "8px";
  });
  svg.addEventListener("mouseleave", () => { tip.style.display = "none"; cursor.setAttribute("visibility", "hidden"); });
  container.append(svg, tip);
}

// Candles on a real time axis, with markers: [{t, price, side, text}].
function candleChart(container, candles, markers, { height = 380 } = {}) {
  container.innerHTML = "";
  if (!candles.length) { container.append(h("p", { class: "muted" }, "no candles in this range")); return; }
  const width = Math.max(container.clientWidth || pageEl().clientWidth - 30 || 800, 300);
  const pad = { l: 80, r: 12, t: 10, b: 22 };
  const times = candles.map((c) => c.t);
  const t0 = times[0], t1 = times.at(-1);
  const step = candles.length > 1 ? Math.min(...times.slice(1).map((t, i) => t - times[i])) : 3600e3;
  const span = Math.max(t1 - t0 + step, 1);
  const x = (t) => pad.l + ((t - t0) / span) * (width - pad.l - pad.r);
  const lo = Math.min(...candles.map((c) => c.l), ...markers.map((m) => m.price));
  const hi = Math.max(...candles.map((c) => c.h), ...markers.map((m) => m.price));
  const y = (v) => pad.t + (1 - (v - lo) / (hi - lo || 1)) * (height - pad.t - pad.b);
  const bar = Math.max(((width - pad.l - pad.r) / span) * step * 0.7, 1);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, height });
  for (const v of [lo, (lo + hi) / 2, hi]) {
    const label = s("text", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end", fill: "#8b98a6", "font-size": 11 });
    label.textContent = num(v);
    svg.append(label);
  }
  for (const c of candles) {
    const color = c.c >= c.o ? "#26a69a" : "#ef5350";
    const cx = x(c.t) + bar / 2;
    svg.append(s("line", { x1: cx, x2: cx, y1: y(c.h), y2: y(c.l), stroke: color }));
    svg.append(s("rect", { x: x(c.t), y: y(Math.max(c.o, c.c)), width: bar, height: Math.max(Math.abs(y(c.o) - y(c.c)), 1), fill: color }));
  }
  for (const [period, color] of [[20, "#ffd54f"], [50, "#ba68c8"]]) {
    const line = sma(candles, period);
    if (!line.length) continue;
    const d = line.map(([t, v], i) => `${i ? "L" : "M"}${(x(t) + bar / 2).toFixed(1)},${y(v).toFixed(1)}`).join("");
    svg.append(s("path", { d, fill: "none", stroke: color, "stroke-width": 1, "data-series": `sma${period}` }));
    const legend = s("text", { x: pad.l + 6 + (period === 20 ? 0 : 60), y: pad.t + 12, fill: color, "font-size": 11 });
    legend.textContent = `SMA ${period}`;
    svg.append(legend);
  }
  const tip = h("div", { class: "tip" });
  for (const m of markers) {
    const mx = x(m.t) + bar / 2, my = y(m.price);
    const up = m.side === "buy";
    const marker = s("path", {
      d: up ? `M${mx},${my + 2}l-6,12h12z` : `M${mx},${my - 2}l-6,-12h12z`,
      fill: up ? "#4da3ff" : "#ffb74d", class: "marker", "data-side": m.side, "data-text": m.text,
    });
    marker.addEventListener("mouseenter", () => {
      tip.textContent = m.text; tip.style.display = "block";
      tip.style.left = Math.min(mx + 10, width - 220) + "px"; tip.style.top = Math.max(my - 30, 0) + "px";
    });
    marker.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    svg.append(marker);
  }
  for (const t of [t0, (t0 + t1) / 2, t1]) {
    const label = s("text", { x: x(t), y: height - 6, "text-anchor": "middle", fill: "#8b98a6", "font-size": 11 });
    label.textContent = new Date(t).toISOString().slice(0, 16).replace("T", " ");
    svg.append(label);
  }
  container.append(svg, tip);
}

// Simple moving average of the closes: [[t, value]] from the period-th candle on.
function sma(candles, period) {
  const out = [];
  let sum = 0;
  candles.forEach((c, i) => {
    sum += c.c;
    if (i >= period) sum -= candles[i - period].c;
    if (i >= period - 1) out.push([c.t, sum / period]);
  });
  return out;
}

function drawdown(points) {
  let peak = -Infinity;
  return points.map(([t, v]) => { peak = Math.max(peak, v); return [t, peak > 0 ? (v / peak - 1) * 100 : 0]; });
}

// ---------------------------------------------------------------- data
async function allPages(path, params, maxRows = 20000) {
  const rows = [];
  let cursor;
  do {
    const page = await api(path + query({ ...params, limit: 500, cursor }));
    rows.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && rows.length < maxRows);
  return rows;
}

async function loadStatus() {
  try { state.status = await api("/bot/status"); } catch (err) { state.status = { error: errorText(err) }; }
  return state.status;
}

// ---------------------------------------------------------------- pages
const render = {};

render.overview = async (root) => {
  root.append(h("h2", {}, `Overview — ${state.mode}`));
  const status = await loadStatus();
  const cards = h("div", { class: "cards", id: "status-cards" });
  root.append(cards);
  if (status.error) cards.append(card("bot status", status.error, "error"));
  else {
    cards.append(
      card("instance", status.instance),
      card("state (applied)", status.state + (status.stale ? " (stale)" : ""), status.stale ? "notice" : "", "state"),
      card("desired state (requested)", status.desired_state, "", "desired_state"),
      card("scheduler mode", status.mode || "—"),
      card("heartbeat age", status.heartbeat_age_seconds === null ? (status.message || "never seen") : num(status.heartbeat_age_seconds, 0) + " s"),
      card("safe mode", status.safe_mode ? `ON — ${status.safe_mode_reason || "no reason recorded"}` : "off", status.safe_mode ? "neg" : "", "safe_mode"),
    );
  }
  const equityBox = h("div", { class: "chart", id: "equity-chart" });
  root.append(h("h3", {}, "Equity and drawdown"), equityBox);
  let snapshots = [];
  try {
    snapshots = (await allPages("/portfolio/history", { mode: state.mode })).reverse();
  } catch (err) { equityBox.append(h("p", { class: "error" }, errorText(err))); }
  const points = snapshots.map((row) => [Date.parse(row.created_at), Number(row.total_value_krw)]);
  if (points.length) {
    lineChart(equityBox, [
      { title: "equity (KRW)", weight: 2, series: [{ name: "equity", points, color: "#4da3ff" }] },
      { title: "drawdown (%)", weight: 1, zeroTop: true, format: (v) => num(v, 2) + " %", series: [{ name: "drawdown", points: drawdown(points), color: "#ef5350", fill: "#ef535033" }] },
    ]);
  } else if (!equityBox.childNodes.length) equityBox.append(h("p", { class: "muted" }, `no portfolio snapshots in ${state.mode} mode yet`));

  const latest = snapshots.at(-1);
  const today = latest && state.mode === "replay" ? utcDay(latest.created_at) : new Date().toISOString().slice(0, 10);
  const money = h("div", { class: "cards", id: "money-cards" });
  root.append(h("h3", {}, state.mode === "replay" ? `Last simulated day ${today}` : `Today ${today} (UTC)`), money);
  if (latest) {
    money.append(
      card("equity", num(latest.total_value_krw) + " KRW", "", "equity"),
      card("cash", num(latest.cash_krw) + " KRW"),
      card("return", pct(latest.profit_rate), signClass(latest.profit_rate), "return"),
    );
  }
  const from = today + "T00:00:00Z";
  const toDate = new Date(Date.parse(from) + 86400e3).toISOString().replace(".000Z", "Z");
  try {
    const stats = await api("/trades/statistics/summary" + query({ mode: state.mode, from_date: from, to_date: toDate }));
    money.append(
      card("trades today", num(stats.overall.trade_count), "", "trades_today"),
      card("realised P&L today", num(stats.overall.realized_pnl_krw) + " KRW", signClass(stats.overall.realized_pnl_krw)),
    );
  } catch (err) { money.append(card("trades today", errorText(err), "error")); }
  try {
    const usage = await api("/ai/usage" + query({ day: today }));
    money.append(
      card("AI cost today", `$${num(usage.day_cost_usd, 4)} of $${num(usage.daily_budget_usd, 2)}`, Number(usage.day_cost_usd) >= Number(usage.daily_budget_usd) && Number(usage.daily_budget_usd) > 0 ? "neg" : "", "ai_day"),
      card("AI cost this month", `$${num(usage.month_cost_usd, 4)} of $${num(usage.monthly_budget_usd, 2)}`),
    );
  } catch (err) { money.append(card("AI cost", errorText(err), "error")); }

  root.append(h("h3", {}, "Open positions"));
  const positions = latest ? Object.entries(latest.positions || {}) : [];
  root.append(positions.length ? table(
    ["symbol", "amount", "avg buy", "price", "value (KRW)", "unrealised P&L (KRW)", "unrealised %"],
    positions.map(([symbol, p]) => {
      const pnl = p.avg_buy_price && p.price && p.amount ? (Number(p.price) - Number(p.avg_buy_price)) * Number(p.amount) : null;
      return [symbol, num(p.amount, 8), num(p.avg_buy_price), num(p.price), num(p.value),
        { text: num(pnl), cls: signClass(pnl) }, { text: pct(p.profit_rate), cls: signClass(p.profit_rate) }];
    }), "positions") : h("p", { class: "muted" }, "no open positions"));

  root.append(h("h3", {}, "Today's trades"));
  try {
    const trades = await api("/trades" + query({ mode: state.mode, from_date: from, to_date: toDate, limit: 100 }));
    root.append(trades.items.length ? tradesTable(trades.items, "today-trades") : h("p", { class: "muted" }, "no trades today"));
  } catch (err) { root.append(h("p", { class: "error" }, errorText(err))); }
};

function table(headers, rows, id) {
  return h("table", { id },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell) =>
      cell && typeof cell === "object" && !(cell instanceof Node) ? h("td", { class: cell.cls || "" }, cell.text) : h("td", {}, cell))))));
}

function tradesTable(items, id) {
  return table(["time", "symbol", "side", "price", "amount", "total", "fee", "realised P&L", "exit reason", "mode"],
    items.map((t) => [when(t.created_at), t.symbol, t.side, num(t.price), num(t.amount, 8), num(t.total), num(t.fee),
      { text: num(t.realized_pnl), cls: signClass(t.realized_pnl) }, t.exit_reason || "", t.mode]), id);
}

render.market = async (root) => {
  root.append(h("h2", {}, `Market — ${state.mode}`));
  const symbols = (state.status && state.status.symbols && state.status.symbols.length) ? state.status.symbols : ["KRW-BTC", "KRW-ETH"];
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const symbolSel = h("select", { id: "market-symbol" }, symbols.map((x) => h("option", { value: x }, x)));
  const tfSel = h("select", { id: "market-timeframe" }, ["1h", "4h", "1d", "15m", "5m", "1m"].map((x) => h("option", { value: x }, x)));
  symbolSel.value = params.get("symbol") || symbols[0];
  tfSel.value = params.get("timeframe") || "1h";
  const go = () => { location.hash = `#/market?symbol=${symbolSel.value}&timeframe=${tfSel.value}`; };
  symbolSel.addEventListener("change", go); tfSel.addEventListener("change", go);
  const info = h("p", { class: "muted", id: "market-info" });
  const box = h("div", { class: "chart", id: "market-chart" });
  root.append(h("div", { class: "filters" }, h("label", {}, "Symbol", symbolSel), h("label", {}, "Timeframe", tfSel)), info, box);
  const symbol = symbolSel.value, timeframe = tfSel.value;
  let trades = [];
  try { trades = await allPages("/trades", { mode: state.mode, symbol }, 5000); } catch (err) { info.append(h("span", { class: "error" }, errorText(err) + " ")); }
  const orders = new Map();
  try { for (const o of await allPages("/orders", { symbol }, 5000)) orders.set(o.id, o); } catch { /* reasons stay the trade's own */ }
  const range = {};
  if (trades.length) {
    const times = trades.map((t) => Date.parse(t.created_at));
    const margin = 3 * 86400e3;
    range.from_date = new Date(Math.min(...times) - margin).toISOString().replace(/\.\d+Z$/, "Z");
    range.to_date = new Date(Math.max(...times) + margin).toISOString().replace(/\.\d+Z$/, "Z");
  }
  try {
    const data = await api("/market/candles" + query({ symbol, timeframe, mode: state.mode, limit: 2000, ...range }));
    info.append(`${data.candles.length} candles from ${data.source === "bundled" ? "the bundled history (BACKTEST_DATA_DIR)" : "Upbit"}; ${trades.length} trades of ${symbol} in ${state.mode} mode. Hover a marker for its reason.`);
    const candles = data.candles.map(([t, o, hi, l, c]) => ({ t: Date.parse(t), o, h: hi, l, c }));
    const markers = trades.map((t) => {
      const order = orders.get(t.order_id);
      const why = t.exit_reason ? `exit: ${t.exit_reason}` : order && order.reason ? order.reason : "entry";
      return { t: Date.parse(t.created_at), price: Number(t.price), side: t.side, text: `${t.side} ${num(t.amount, 8)} @ ${num(t.price)}\n${when(t.created_at)}\n${why}` };
    });
    candleChart(box, candles, markers);
  } catch (err) { box.append(h("p", { class: "error" }, "candles unavailable: " + errorText(err))); }
  root.append(h("h3", {}, "Entries and exits"), trades.length ? tradesTable(trades.slice(0, 200), "market-trades") : h("p", { class: "muted" }, "no trades for this symbol"));
};

// A filterable, keyset-paged list with CSV export.
function listPage({ title, path, filters, columns, fixed = {}, id }) {
  return async (root) => {
    root.append(h("h2", {}, title));
    const inputs = {};
    const bar = h("form", { class: "filters", id: id + "-filters" });
    for (const f of filters) {
      const input = f.options
        ? h("select", { name: f.name }, h("option", { value: "" }, "any"), f.options.map((o) => h("option", { value: o }, o)))
        : h("input", { name: f.name, placeholder: f.placeholder || "", size: f.size || 14 });
      inputs[f.name] = input;
      bar.append(h("label", {}, f.label, input));
    }
    const apply = h("button", { type: "submit" }, "Apply");
    const csv = h("button", { type: "button", id: id + "-csv" }, "Export CSV");
    bar.append(apply, csv);
    const holder = h("div", { id: id + "-table" });
    const more = h("button", { type: "button", id: id + "-more", hidden: true }, "Next page");
    const message = h("p", { class: "muted" });
    root.append(bar, message, holder, more);
    let cursor = null, rows = [];
    const params = () => {
      const p = { ...fixed };
      for (const [name, input] of Object.entries(inputs)) if (input.value) p[name] = input.value.trim();
      return p;
    };
    const draw = () => {
      holder.innerHTML = "";
      holder.append(rows.length ? table(columns.map((c) => c[0]), rows.map((r) => columns.map((c) => c[1](r))), id) : h("p", { class: "muted" }, "nothing matches"));
      more.hidden = !cursor;
    };
    const load = async (next) => {
      message.textContent = "";
      try {
        const page = await api(path + query({ ...params(), limit: 50, cursor: next || undefined }));
        rows = next ? rows.concat(page.items) : page.items;
        cursor = page.next_cursor;
        draw();
      } catch (err) { message.textContent = errorText(err); message.className = "error"; }
    };
    bar.addEventListener("submit", (event) => { event.preventDefault(); load(null); });
    more.addEventListener("click", () => load(cursor));
    csv.addEventListener("click", async () => {
      try {
        const all = await allPages(path, params(), 50000);
        const keys = all.length ? Object.keys(all[0]) : [];
        const cell = (v) => { const text = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v); return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text; };
        const body = [keys.join(","), ...all.map((r) => keys.map((k) => cell(r[k])).join(","))].join("\n") + "\n";
        const link = h("a", { href: URL.createObjectURL(new Blob([body], { type: "text/csv" })), download: `${id}-${state.mode}.csv` });
        document.body.append(link); link.click(); link.remove();
      } catch (err) { message.textContent = errorText(err); message.className = "error"; }
    });
    await load(null);
  };
}

render.trades = (root) => listPage({
  title: `Trades — ${state.mode}`, path: "/trades", id: "trades", fixed: { mode: state.mode },
  filters: [
    { name: "symbol", label: "Symbol", placeholder: "KRW-BTC" }, { name: "side", label: "Side", options: ["buy", "sell"] },
    { name: "from_date", label: "From (RFC 3339)", placeholder: "2024-01-01T00:00:00Z", size: 20 },
    { name: "to_date", label: "To (RFC 3339)", placeholder: "2024-02-01T00:00:00Z", size: 20 },
  ],
  columns: [["time", (t) => when(t.created_at)], ["symbol", (t) => t.symbol], ["side", (t) => t.side], ["price", (t) => num(t.price)],
    ["amount", (t) => num(t.amount, 8)], ["total", (t) => num(t.total)], ["fee", (t) => num(t.fee)],
    ["realised P&L", (t) => ({ text: num(t.realized_pnl), cls: signClass(t.realized_pnl) })], ["exit reason", (t) => t.exit_reason || ""]],
})(root);

render.orders = (root) => listPage({
  title: "Orders", path: "/orders", id: "orders",
  filters: [
    { name: "symbol", label: "Symbol", placeholder: "KRW-BTC" },
    { name: "state", label: "Status", options: ["pending", "submitted", "partially_filled", "filled", "cancelled", "failed", "unknown"] },
    { name: "from_date", label: "From (RFC 3339)", size: 20 }, { name: "to_date", label: "To (RFC 3339)", size: 20 },
  ],
  columns: [["time", (o) => when(o.created_at)], ["symbol", (o) => o.symbol], ["side", (o) => o.side], ["type", (o) => o.order_type],
    ["status", (o) => o.status], ["filled", (o) => num(o.filled_amount, 8)], ["avg price", (o) => num(o.avg_fill_price)],
    ["funds", (o) => num(o.executed_funds)], ["reason", (o) => o.reason || o.error_message || ""], ["exit", (o) => o.exit_reason || ""], ["mode", (o) => o.mode]],
})(root);

render.decisions = (root) => listPage({
  title: "AI decisions", path: "/ai/decisions", id: "decisions",
  filters: [
    { name: "symbol", label: "Symbol", placeholder: "KRW-BTC" },
    { name: "final_decision", label: "Final decision", options: ["buy", "sell", "hold"] },
    { name: "overridden", label: "Overridden", options: ["true", "false"] },
    { name: "purpose", label: "Purpose", options: ["decision", "filter"] },
    { name: "from_date", label: "From (RFC 3339)", size: 20 }, { name: "to_date", label: "To (RFC 3339)", size: 20 },
  ],
  columns: [["time", (d) => when(d.created_at)], ["symbol", (d) => d.symbol], ["adviser", (d) => d.decision], ["final", (d) => d.final_decision],
    ["confidence", (d) => num(d.confidence)], ["reason", (d) => d.reason || ""],
    ["validator overrides", (d) => (d.overridden ? (d.override_reasons || []).join("; ") || "overridden" : "")],
    ["source", (d) => d.source + (d.model ? ` (${d.model})` : "")], ["cost (USD)", (d) => num(d.cost_usd, 6)]],
})(root);

render.control = async (root) => {
  root.append(h("h2", {}, "Control"));
  if (!auth.get()) root.append(h("p", { class: "notice", id: "control-readonly" }, "Read-only: log in (API key or user) to change anything. Every change is audited with who and why."));
  const status = await loadStatus();
  const result = h("p", { id: "control-result", role: "status" });
  const reason = h("input", { id: "control-reason", placeholder: "why (recorded in the audit log)", size: 40 });
  const stateLine = h("div", { class: "cards", id: "control-state" },
    card("desired state (requested)", status.desired_state || "—", "", "desired_state"),
    card("state (applied by the scheduler)", status.state ? status.state + (status.stale ? " (stale)" : "") : status.error || "—", "", "state"),
    card("safe mode", status.safe_mode ? `ON — ${status.safe_mode_reason || ""}` : "off", status.safe_mode ? "neg" : "", "safe_mode"));
  const act = async (label, call) => {
    if (!confirm(`${label}?\nReason: ${reason.value || "(none)"}`)) return;
    try {
      const out = await call();
      result.className = "pos";
      result.textContent = out.message || "done";
      await updateControlState();
    } catch (err) { result.className = "error"; result.textContent = errorText(err); }
  };
  const actions = h("div", { class: "filters" }, h("label", {}, "Reason", reason),
    ["start", "pause", "resume", "stop"].map((action) => h("button", {
      type: "button", id: "action-" + action, class: action === "stop" ? "danger" : "",
      onclick: () => act(`${action} the bot`, () => api("/bot/control", { method: "POST", body: { action, reason: reason.value } })),
    }, action)),
    h("button", { type: "button", id: "action-safe-mode-reset", class: "danger",
      onclick: () => act("end safe mode", () => api("/bot/safe-mode/reset", { method: "POST", body: { reason: reason.value } })) }, "reset safe mode"));
  root.append(stateLine, actions, result, h("h3", {}, "Run-time settings"));
  const form = h("form", { id: "settings-form", class: "settings" });
  const formResult = h("p", { id: "settings-result", role: "status" });
  root.append(form, formResult);
  let config;
  try { config = await api("/bot/config"); } catch (err) { form.append(h("p", { class: "error" }, errorText(err))); return; }
  const inputs = {};
  const shown = (v) => (v === null || v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v));
  form.append(table(["key", "value (requested)", "applied", "status", "rule"], config.entries.map((e) => {
    const input = h("input", { name: e.key, value: shown(e.requested), "data-original": shown(e.requested) });
    inputs[e.key] = input;
    return [h("span", { title: e.description }, e.key), input, shown(e.applied) || "—", e.status + (e.message ? ` — ${e.message}` : ""), e.rule];
  }), "settings-table"));
  const settingsReason = h("input", { id: "settings-reason", placeholder: "why (recorded in the audit log)", size: 40 });
  form.append(h("div", { class: "filters" }, h("label", {}, "Reason", settingsReason), h("button", { type: "submit", id: "settings-save" }, "Save changed settings")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = {};
    for (const [key, input] of Object.entries(inputs)) {
      if (input.value === input.dataset.original) continue;
      let value = input.value.trim();
      try { value = JSON.parse(value); } catch { /* a plain string */ }
      values[key] = value;
    }
    if (!Object.keys(values).length) { formResult.className = "notice"; formResult.textContent = "nothing changed"; return; }
    if (!confirm(`Change ${Object.entries(values).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join(", ")}?`)) return;
    try {
      await api("/bot/config", { method: "PUT", body: { values, reason: settingsReason.value } });
      formResult.className = "pos";
      formResult.textContent = "saved; the scheduler applies it on its next poll (see the status column)";
      await refresh();
      $("#settings-result").className = "pos";
      $("#settings-result").textContent = "saved; the scheduler applies it on its next poll (see the status column)";
    } catch (err) { formResult.className = "error"; formResult.textContent = "rejected: " + errorText(err); }
  });
};

render.instances = async (root) => {
  const mode = state.mode === "replay" ? "replay" : "paper";
  root.append(h("h2", {}, `Instances (A/B) — ${mode}`));
  const data = await api("/instances" + query({ mode }));
  if (data.error) root.append(h("p", { class: "error" }, data.error));
  if (!data.file) { root.append(h("p", { class: "muted" }, "No INSTANCES_FILE configured: one instance runs (A/B: docs/SCHEDULER_GUIDE.md).")); return; }
  root.append(h("p", { class: "muted" }, "File: " + data.file));
  // One column per instance, one row per measure: the strategies side by side.
  const rows = [
    ["strategy", (i) => i.strategy], ["params", (i) => JSON.stringify(i.params)], ["symbols", (i) => i.symbols.join(", ")],
    ["available", (i) => (i.available ? "yes" : `no — ${i.reason || ""}`)],
    ["starting (KRW)", (i) => num(i.starting_krw)], ["equity (KRW)", (i) => num(i.equity_krw)],
    ["return", (i) => ({ text: i.return_pct === null ? "—" : num(i.return_pct, 2) + " %", cls: signClass(i.return_pct) })],
    ["max drawdown", (i) => (i.max_drawdown_pct === null ? "—" : num(i.max_drawdown_pct, 2) + " %")],
    ["trades (buys / sells)", (i) => `${i.trades} (${i.buys} / ${i.sells})`],
    ["realised P&L (KRW)", (i) => ({ text: num(i.realized_pnl_krw), cls: signClass(i.realized_pnl_krw) })],
    ["fees (KRW)", (i) => num(i.fees_krw)], ["open positions", (i) => i.open_positions.join(", ") || "none"],
    ["state", (i) => i.state || "no heartbeat"], ["last heartbeat", (i) => when(i.last_heartbeat)],
  ];
  root.append(table(["", ...data.instances.map((i) => i.name)], rows.map(([label, cell]) => [label, ...data.instances.map(cell)]), "instances"));
};

render.backtests = async (root) => {
  root.append(h("h2", {}, "Backtests"));
  const msg = h("p", { id: "backtest-message", role: "status" });
  let list;
  try { list = await api("/backtests" + query({ limit: 20 })); } catch (err) {
    if (err.status === 404 || err.status === 405) {
      root.append(h("p", { class: "notice", id: "backtests-unavailable" }, "Backtests through the API are not available on this server (no /api/v1/backtests)."));
      return;
    }
    root.append(h("p", { class: "error" }, errorText(err)));
    return;
  }
  const field = (name, label, value, attrs = {}) => h("label", {}, label, h("input", { name, value, ...attrs }));
  const form = h("form", { id: "backtest-form", class: "filters" },
    field("strategy", "Strategy", "rule_breakout"), field("symbol", "Symbol", "KRW-BTC"), field("timeframe", "Timeframe", "1h", { size: 4 }),
    field("start", "Start", "2023-10-01T00:00:00Z", { size: 20 }), field("end", "End", "2023-12-01T00:00:00Z", { size: 20 }),
    field("params", "Params (JSON)", "{}", { size: 16 }), h("button", { type: "submit", id: "backtest-start" }, "Start backtest"));
  const view = h("div", { id: "backtest-view" });
  root.append(form, msg, view, h("h3", {}, "Runs"));
  const rows = list.items || [];
  root.append(table(["id", "status", "strategy", "symbol", "created"], rows.map((r) => [
    h("a", { href: `#/backtests?id=${r.id}` }, String(r.id)), r.status, (r.request || {}).strategy || r.strategy || "", (r.request || {}).symbol || r.symbol || "", when(r.created_at)]), "backtests-table"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    try { data.params = JSON.parse(data.params || "{}"); } catch { msg.className = "error"; msg.textContent = "params: not JSON"; return; }
    try {
      const out = await api("/backtests", { method: "POST", body: data });
      location.hash = `#/backtests?id=${out.id}`;
    } catch (err) { msg.className = "error"; msg.textContent = errorText(err); }
  });
  const id = new URLSearchParams(location.hash.split("?")[1] || "").get("id");
  if (id) await watchBacktest(id, view, msg);
};

// The shared chart module (charts.js, also inlined by `backtest.py --html`) and the Lightweight Charts library it
// draws with (vendor/), loaded on first use. Resolves to its renderBacktest, or null when the server has neither.
const CHART_SCRIPTS = ["vendor/lightweight-charts/lightweight-charts.standalone.production.js", "charts.js"];
function chartRenderer() {
  if (window.BacktestCharts && typeof window.BacktestCharts.renderBacktest === "function") return window.BacktestCharts.renderBacktest;
  return typeof window.renderBacktest === "function" ? window.renderBacktest : null;
}
async function loadChartModule() {
  for (const src of CHART_SCRIPTS) {
    if (chartRenderer()) break;
    if (document.querySelector(`script[src="${src}"]`)) continue;
    const loaded = await new Promise((resolve) => {
      const script = h("script", { src });
      script.addEventListener("load", () => resolve(true));
      script.addEventListener("error", () => resolve(false));
      document.head.append(script);
    });
    if (!loaded) break;
  }
  return chartRenderer();
}

async function watchBacktest(id, view, msg) {
  for (;;) {
    let run;
    try { run = await api(`/backtests/${encodeURIComponent(id)}`); } catch (err) { msg.className = "error"; msg.textContent = errorText(err); return; }
    msg.className = run.status === "failed" ? "error" : "muted";
    msg.textContent = `backtest ${id}: ${run.status}` + (run.status === "running" ? ` (${Math.round((run.progress || 0) * 100)} %)` : "") + (run.error ? ` — ${run.error}` : "");
    if (["done", "failed", "cancelled"].includes(run.status)) {
      if (run.status === "done") {
        const renderBacktest = await loadChartModule();
        if (renderBacktest) {
          const el = h("div", { id: "backtest-chart", class: "chart bt-host" });
          view.append(el);
          renderBacktest(el, run);
        } else {
          view.append(h("p", { class: "notice" }, "The chart module (charts.js) is not available on this server; metrics only."));
          view.append(table(["metric", "value"], Object.entries(run.metrics || {}).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]), "backtest-metrics"));
        }
      }
      return;
    }
    if (!location.hash.includes(`id=${id}`)) return;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---------------------------------------------------------------- research runs
// The runs of `backtest.py optimize | monte-carlo | ai-value` (GET /research/runs), one drawn by research_charts.js
// (the report `--html` writes), and "Apply" (POST /research/runs/{id}/apply with confirm: true) after a confirmation.
function researchHeadline(summary) {
  return Object.entries(summary || {})
    .filter(([, v]) => typeof v === "number")
    .slice(0, 4).map(([k, v]) => `${k} ${num(v, 4)}`).join(", ");
}

render.research = async (root) => {
  root.append(h("h2", {}, "Research runs"));
  const msg = h("p", { id: "research-message", role: "status" });
  let list;
  try { list = await api("/research/runs" + query({ limit: 50 })); } catch (err) {
    if (err.status === 404 || err.status === 405) {
      root.append(h("p", { class: "notice", id: "research-unavailable" }, "Research runs are not served by this API (no /api/v1/research/runs)."));
      return;
    }
    root.append(h("p", { class: "error" }, errorText(err)));
    return;
  }
  const rows = list.items || [];
  const view = h("div", { id: "research-view" });
  root.append(h("p", { class: "muted" }, "Runs of python backtest.py optimize | monte-carlo | ai-value (docs/RESEARCH.md)."),
    table(["id", "kind", "status", "strategy", "headline", "created", "applied"], rows.map((r) => [
      h("a", { href: `#/research?id=${r.id}` }, String(r.id)), r.kind, r.status, (r.params || {}).strategy || "",
      researchHeadline(r.summary), when(r.created_at), r.applied_at ? `${when(r.applied_at)} by ${r.applied_by}` : ""]), "research-table"),
    msg, view);
  const id = new URLSearchParams(location.hash.split("?")[1] || "").get("id");
  if (id) await showResearchRun(id, view, msg);
};

async function showResearchRun(id, view, msg) {
  let run;
  try { run = await api(`/research/runs/${encodeURIComponent(id)}`); } catch (err) { msg.className = "error"; msg.textContent = errorText(err); return; }
  msg.className = run.status === "failed" ? "error" : "muted";
  msg.textContent = `research run ${id}: ${run.kind}, ${run.status}` + (run.error ? ` — ${run.error}` : "");
  if (run.chosen && run.status === "done") {
    const chosen = `${run.chosen.strategy} ${JSON.stringify(run.chosen.params)}`;
    const apply = h("button", { type: "button", id: "research-apply" }, `Apply ${chosen} to the bot`);
    apply.addEventListener("click", async () => {
      if (!confirm(`Make the bot trade ${chosen}?\nRun-time settings strategy.name and strategy.params; the scheduler takes them before its next job.`)) return;
      try {
        const out = await api(`/research/runs/${encodeURIComponent(id)}/apply`, { method: "POST", body: { confirm: true, reason: `research run ${id}, applied from the dashboard` } });
        msg.className = "muted";
        msg.textContent = `applied research run ${id}: ${JSON.stringify(out.values)}`;
      } catch (err) { msg.className = "error"; msg.textContent = errorText(err); }
    });
    view.append(apply);
  }
  if (!run.result) return;
  const renderResearch = await loadResearchModule();
  if (!renderResearch) {
    view.append(h("p", { class: "notice" }, "The chart module (research_charts.js) is not available on this server."));
    return;
  }
  const el = h("div", { id: "research-chart", class: "chart bt-host" });
  view.append(el);
  renderResearch(el, run.result);
}

async function loadResearchModule() {
  if (!(await loadChartModule())) return null;
  if (!window.ResearchCharts && !document.querySelector('script[src="research_charts.js"]')) {
    await new Promise((resolve) => {
      const script = h("script", { src: "research_charts.js" });
      script.addEventListener("load", resolve);
      script.addEventListener("error", resolve);
      document.head.append(script);
    });
  }
  return window.ResearchCharts ? window.ResearchCharts.renderResearch : null;
}

// ---------------------------------------------------------------- routing
function currentPage() {
  const name = (location.hash.replace(/^#\//, "").split("?")[0] || "overview");
  return PAGES.includes(name) ? name : "overview";
}

let rendering = null;
async function refresh() {
  const name = currentPage();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  const root = h("div", { "data-page": name });
  const run = (async () => {
    try { await render[name](root); } catch (err) { root.append(h("p", { class: "error" }, errorText(err))); }
  })();
  rendering = run;
  await run;
  if (rendering !== run) return;
  const el = pageEl();
  el.replaceChildren(root);
  el.dataset.loaded = name;
}

// ---------------------------------------------------------------- live events
function setLive(on, text) {
  const badge = $("#live");
  badge.className = "badge " + (on ? "on" : "off");
  badge.textContent = text;
}

let reconnectDelay = 1000;
function connectEvents() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const a = auth.get();
  // Where to resume goes in the query (event ids are not secret); a credential only in a first message, never in
  // the address. With public reads the server may not wait for that message: the query still resumes.
  // A first connection (no id seen yet) takes live events only, not the whole history of the outbox.
  const resume = state.lastEventId > 0 ? `?after=${state.lastEventId}` : "";
  const address = `${scheme}://${location.host}${API}/ws/events${resume}`;
  let socket;
  try { socket = new WebSocket(address); } catch { setLive(false, "live events unavailable"); return; }
  state.socket = socket;
  socket.addEventListener("open", () => {
    if (a) {
      const hello = { type: "auth" };
      if (state.lastEventId > 0) hello.after = state.lastEventId;
      if (a.kind === "key") hello.api_key = a.value;
      else hello.token = a.value;
      socket.send(JSON.stringify(hello));
    }
    state.socketOpen = true;
    reconnectDelay = 1000;
    setLive(true, "live events: on");
  });
  socket.addEventListener("message", (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    if (typeof event.id !== "number") return; // pings and protocol messages
    if (event.id <= state.lastEventId) return;
    state.lastEventId = event.id;
    sessionStorage.setItem("lastEventId", String(event.id));
    const list = $("#events");
    const symbol = event.symbol ? ` ${event.symbol}` : "";
    const data = event.data || {};
    const detail = data.desired ? `${data.previous || "unset"} → ${data.desired}${data.by ? " by " + data.by : ""}`
      : data.state || data.final_decision || data.reason || data.side || "";
    list.prepend(h("li", { "data-type": event.type }, h("b", {}, event.type), symbol, " ", detail ? String(detail) : "", h("div", { class: "muted" }, `#${event.id} ${when(event.at)} ${event.mode || ""}`)));
    while (list.childElementCount > 200) list.lastElementChild.remove();
    scheduleRefresh();
  });
  socket.addEventListener("close", (event) => {
    state.socketOpen = false;
    const why = event.code === 1008 || event.code === 4401 ? " (not authorised: log in)" : "";
    setLive(false, `live events unavailable${why}; retrying`);
    if (state.socket !== socket) return; // replaced already
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connectEvents, reconnectDelay);
    reconnectDelay = Math.min(Math.max(reconnectDelay * 2, 1000), 30000);
  });
}

function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    const page = currentPage();
    // the pages with forms are not redrawn under the operator's hands; their status cards are
    if (page === "overview") refresh();
    else if (page === "control") updateControlState();
  }, 1500); // a burst of events (a replay at full speed) redraws at most this often
}

async function updateControlState() {
  const status = await loadStatus();
  const set = (key, text) => { const el = document.querySelector(`#control-state [data-card="${key}"] .v`); if (el) el.textContent = text; };
  set("desired_state", status.desired_state || "—");
  set("state", status.state ? status.state + (status.stale ? " (stale)" : "") : status.error || "—");
  set("safe_mode", status.safe_mode ? `ON — ${status.safe_mode_reason || ""}` : "off");
}

// Without the event stream the status is polled, and the page says so (badge).
setInterval(() => { if (!state.socketOpen && currentPage() === "control") updateControlState(); }, 5000);

// ---------------------------------------------------------------- log-in
function showWho() {
  const a = auth.get();
  $("#who").textContent = a ? (a.kind === "key" ? "API key" : `user ${a.user}`) : "read-only (not logged in)";
  $("#login-open").hidden = !!a;
  $("#logout").hidden = !a;
}

function setupLogin() {
  const dialog = $("#login");
  $("#login-open").addEventListener("click", () => { $("#login-error").textContent = ""; dialog.showModal(); });
  $("#login-cancel").addEventListener("click", () => dialog.close());
  $("#logout").addEventListener("click", () => { auth.set(null); showWho(); reconnect({ force: true }); refresh(); });
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#login-key").value.trim(), user = $("#login-user").value.trim(), password = $("#login-password").value;
    try {
      if (key) {
        auth.set({ kind: "key", value: key });
        await api("/bot/config"); // 401 when the key is wrong
      } else {
        auth.set(null);
        const token = await api("/auth/token", { method: "POST", form: { username: user, password } });
        auth.set({ kind: "jwt", value: token.access_token, user });
      }
    } catch (err) {
      auth.set(null);
      $("#login-error").textContent = "log-in failed: " + errorText(err);
      return;
    }
    $("#login-key").value = ""; $("#login-password").value = "";
    dialog.close();
    showBanner("");
    showWho();
    reconnect();
    refresh();
  });
}

// After log-in a stream that is already open (public read) is kept: reconnecting before any event was seen would
// have no id to resume from. A refused or closed stream is retried at once with the new credential; after log-out
// the stream is reopened without it.
function reconnect({ force = false } = {}) {
  if (!force && state.socketOpen) return;
  reconnectDelay = 0;
  if (state.socket && state.socket.readyState <= WebSocket.OPEN) { state.socket.close(); return; } // onclose retries
  clearTimeout(state.reconnectTimer);
  connectEvents();
}

async function main() {
  setupLogin();
  showWho();
  await resolveMode();
  $("#mode").addEventListener("change", (event) => {
    state.mode = event.target.value;
    sessionStorage.setItem("mode", state.mode);
    refresh();
  });
  window.addEventListener("hashchange", refresh);
  connectEvents();
  await refresh();
}

main();
