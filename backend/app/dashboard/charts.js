/*
 * One chart renderer for backtests: the dashboard's backtest page and `backtest.py --html` both draw with it.
 *
 *   BacktestCharts.renderBacktest(element, result, options?) -> { destroy() }
 *
 * `element`: an empty block element (its width is used; the charts resize with the window).
 * `result`: the JSON of GET /api/v1/backtests/{id} (only these fields are read):
 *   candles  [[iso, open, high, low, close], ...]   the bars traded, UTC open times, missing bars missing
 *   equity   [[iso, equity_krw], ...]               one point per bar traded
 *   trades   [{entry_candle, exit_candle, entry_price, exit_price, pnl, pnl_pct, exit_reason, ...}, ...]
 *   metrics  {initial_capital, total_return_pct, buy_and_hold_return_pct, max_drawdown_pct, ...}
 *   request  {strategy, symbol, timeframe, ...}  (optional: shown in the title)
 * `options`: {title?: string, tables?: boolean (metrics and trades tables under the charts; default true),
 *             height?: number (price chart height in px; default 380)}
 *
 * Draws: candles on the real time axis (a data gap is an empty stretch, not two bars side by side), each
 * entry and exit as a marker (the exit says its reason and P&L), equity against buy-and-hold, drawdown. The
 * three charts zoom (wheel, pinch, drag) and scroll together; the crosshair is shared and the legend shows the
 * values under it, and the trades of the bar under it. Needs TradingView Lightweight Charts 4.1 loaded first
 * (global `LightweightCharts`, vendor/lightweight-charts/).
 */
(function (root) {
  "use strict";

  var COLORS = {
    up: "#26a69a", down: "#ef5350", entry: "#1e88e5", win: "#2e7d32", loss: "#c62828",
    equity: "#283593", hold: "#9e9e9e", drawdown: "#c62828", grid: "#f0f0f0", text: "#333",
  };
  var MARKER_LABEL_BARS = 600; // marker texts show when at most this many bars are in view
  var MAX_FILL_PER_GAP = 20000;
  var MAX_SEGMENTS = 300; // more stretches of data than this: one joined line each (fewer series) // whitespace bars drawn for one gap at most (a longer gap is shortened)

  function seconds(iso) { return Math.floor(Date.parse(iso) / 1000); }

  function barStep(times) {
    var steps = [];
    for (var i = 1; i < times.length && steps.length < 1000; i++) steps.push(times[i] - times[i - 1]);
    steps.sort(function (a, b) { return a - b; });
    return steps.length ? steps[Math.floor(steps.length / 2)] : 3600;
  }

  /* The time points of the axis: every bar, and whitespace where bars are missing, so gaps show. */
  function axis(times, step) {
    var points = [];
    for (var i = 0; i < times.length; i++) {
      if (i > 0 && times[i] - times[i - 1] > step * 1.5) {
        var missing = Math.min(Math.round((times[i] - times[i - 1]) / step) - 1, MAX_FILL_PER_GAP);
        for (var k = 1; k <= missing; k++) points.push({ time: times[i - 1] + k * step, gap: true });
      }
      points.push({ time: times[i], gap: false });
    }
    return points;
  }

  function withGaps(points, valuesByTime, make) {
    return points.map(function (point) {
      var value = point.gap ? undefined : valuesByTime[point.time];
      return value === undefined ? { time: point.time } : make(point.time, value);
    });
  }

  /* A line (or area) that breaks where bars are missing: one series per stretch of data (the first one also
   * carries the whole axis as whitespace). Lightweight Charts would otherwise join the two sides of a gap. */
  function addBroken(chart, kind, options, points, valuesByTime) {
    var segments = [[]];
    points.forEach(function (point) {
      var value = point.gap ? undefined : valuesByTime[point.time];
      if (value === undefined) {
        if (segments[segments.length - 1].length) segments.push([]);
      } else {
        segments[segments.length - 1].push({ time: point.time, value: value });
      }
    });
    if (!segments[segments.length - 1].length) segments.pop();
    if (!segments.length || segments.length > MAX_SEGMENTS) segments = [null];
    var add = kind === "area" ? chart.addAreaSeries.bind(chart) : chart.addLineSeries.bind(chart);
    var first = null;
    segments.forEach(function (segment, i) {
      var last = i === segments.length - 1;
      var series = add(Object.assign({}, options, { lastValueVisible: last && options.lastValueVisible !== false,
        priceLineVisible: false }));
      if (first === null) {
        first = series;
        var own = {};
        (segment || []).forEach(function (p) { own[p.time] = p.value; });
        series.setData(withGaps(points, segment ? own : valuesByTime, function (t, v) { return { time: t, value: v }; }));
      } else {
        series.setData(segment);
      }
    });
    return first;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || (typeof value === "number" && !isFinite(value))) return "-";
    if (typeof value !== "number") return String(value);
    return value.toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 2 : digits });
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function iso(time) { return new Date(time * 1000).toISOString().replace(".000Z", "Z"); }

  function chartOptions(height, showTime) {
    return {
      height: height,
      layout: { background: { color: "#ffffff" }, textColor: COLORS.text, fontSize: 11 },
      grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
      rightPriceScale: { borderVisible: false, minimumWidth: 90 },
      timeScale: { borderVisible: false, timeVisible: true, secondsVisible: false, visible: showTime,
        minBarSpacing: 0.0001 },  // "Fit all" fits years of hourly bars
      localization: { priceFormatter: function (price) { return fmt(price, Math.abs(price) >= 1000 ? 0 : 2); } },
      crosshair: { mode: 0 },
      handleScale: { axisPressedMouseMove: { time: true, price: true } },
    };
  }

  var METRICS = [
    ["Total return", "total_return_pct", "%"], ["Buy & hold", "buy_and_hold_return_pct", "%"],
    ["CAGR", "cagr_pct", "%"], ["Max drawdown", "max_drawdown_pct", "%"], ["Sharpe", "sharpe", ""],
    ["Sortino", "sortino", ""], ["Trades", "trades", ""], ["Win rate", "win_rate_pct", "%"],
    ["Profit factor", "profit_factor", ""], ["Exposure", "exposure_pct", "%"],
    ["Final equity (KRW)", "final_equity", ""], ["Fees paid (KRW)", "fees_paid", ""],
  ];
  var TRADE_COLUMNS = [
    ["entry_time", "Entry (UTC)"], ["entry_price", "Entry price"], ["exit_time", "Exit (UTC)"],
    ["exit_price", "Exit price"], ["pnl_pct", "P&L %"], ["pnl", "P&L KRW"], ["exit_reason", "Exit reason"],
  ];

  function metricsTable(metrics) {
    var table = el("table", { "class": "bt-metrics" });
    METRICS.forEach(function (row) {
      if (!(row[1] in metrics)) return;
      var tr = el("tr");
      tr.appendChild(el("th", {}, row[0]));
      tr.appendChild(el("td", {}, fmt(metrics[row[1]]) + (metrics[row[1]] === null ? "" : row[2])));
      table.appendChild(tr);
    });
    return table;
  }

  function tradesTable(trades) {
    var table = el("table", { "class": "bt-trades" });
    var head = el("tr");
    TRADE_COLUMNS.forEach(function (column) { head.appendChild(el("th", {}, column[1])); });
    table.appendChild(head);
    trades.forEach(function (trade) {
      var tr = el("tr", { "class": trade.pnl >= 0 ? "bt-win" : "bt-loss" });
      TRADE_COLUMNS.forEach(function (column) {
        var value = trade[column[0]];
        var text = column[0].indexOf("time") >= 0 ? String(value).slice(0, 16).replace("T", " ") : fmt(value);
        tr.appendChild(el("td", {}, text));
      });
      table.appendChild(tr);
    });
    return table;
  }

  function renderBacktest(element, result, options) {
    var LC = root.LightweightCharts;
    if (!LC) throw new Error("charts.js needs TradingView Lightweight Charts (global LightweightCharts) loaded first");
    options = options || {};
    element.innerHTML = "";
    var container = el("div", { "class": "bt-root" });
    element.appendChild(container);
    var request = result.request || {};
    var metrics = result.metrics || {};
    var candles = result.candles || [];
    var equity = result.equity || [];
    var trades = result.trades || [];
    var title = options.title !== undefined ? options.title : [metrics.strategy || request.strategy, request.symbol, request.timeframe]
      .filter(Boolean).join(" ");
    if (title) container.appendChild(el("div", { "class": "bt-title" }, title));
    if (!candles.length) {
      container.appendChild(el("p", {}, "No candles in this result."));
      return { destroy: function () { element.innerHTML = ""; } };
    }

    var times = candles.map(function (c) { return seconds(c[0]); });
    var points = axis(times, barStep(times));
    var barsByTime = {};
    candles.forEach(function (c, i) { barsByTime[times[i]] = c; });
    var equityByTime = {};
    equity.forEach(function (e) { equityByTime[seconds(e[0])] = e[1]; });
    var capital = metrics.initial_capital || (equity.length ? equity[0][1] : 1);
    var firstClose = candles[0][4];
    var holdByTime = {};
    var drawdownByTime = {};
    var peak = capital;
    times.forEach(function (t) {
      holdByTime[t] = capital * barsByTime[t][4] / firstClose;
      var value = equityByTime[t];
      if (value === undefined) return;
      peak = Math.max(peak, value);
      drawdownByTime[t] = 100 * (value / peak - 1);
    });

    var toolbar = el("div", { "class": "bt-toolbar" });
    var fit = el("button", { type: "button" }, "Fit all");
    toolbar.appendChild(fit);
    toolbar.appendChild(el("span", { "class": "bt-credit" },
      "Wheel or pinch to zoom, drag to pan. Times in UTC; empty stretches are missing data."));
    container.appendChild(toolbar);
    var legend = el("div", { "class": "bt-legend" });
    container.appendChild(legend);

    function pane(label, height, showTime) {
      var box = el("div", { "class": "bt-pane" });
      box.appendChild(el("div", { "class": "bt-label" }, label));
      container.appendChild(box);
      var chart = LC.createChart(box, chartOptions(height, showTime));
      chart.applyOptions({ width: box.clientWidth || element.clientWidth || 900 });
      return { box: box, chart: chart };
    }

    var price = pane("Price: entries ▲ and exits ▼ (reason, P&L)", options.height || 380, false);
    var candleSeries = price.chart.addCandlestickSeries({
      upColor: COLORS.up, downColor: COLORS.down, borderVisible: false,
      wickUpColor: COLORS.up, wickDownColor: COLORS.down,
    });
    candleSeries.setData(withGaps(points, barsByTime, function (t, c) {
      return { time: t, open: c[1], high: c[2], low: c[3], close: c[4] };
    }));

    var tradesByTime = {};
    var markers = [];
    function note(time, text) { (tradesByTime[time] = tradesByTime[time] || []).push(text); }
    trades.forEach(function (trade, n) {
      var entry = seconds(trade.entry_candle || trade.entry_time);
      var exit = seconds(trade.exit_candle || trade.exit_time);
      var won = trade.pnl >= 0;
      markers.push({ time: entry, position: "belowBar", color: COLORS.entry, shape: "arrowUp", text: "buy" });
      markers.push({
        time: exit, position: "aboveBar", color: won ? COLORS.win : COLORS.loss, shape: "arrowDown",
        text: trade.exit_reason + " " + (trade.pnl_pct >= 0 ? "+" : "") + fmt(trade.pnl_pct) + "%",
      });
      note(entry, "#" + (n + 1) + " buy at " + fmt(trade.entry_price));
      note(exit, "#" + (n + 1) + " sell at " + fmt(trade.exit_price) + " (" + trade.exit_reason + "), P&L " +
        fmt(trade.pnl_pct) + "% / " + fmt(trade.pnl, 0) + " KRW");
    });
    markers.sort(function (a, b) { return a.time - b.time; });
    var bare = markers.map(function (m) { return { time: m.time, position: m.position, color: m.color, shape: m.shape }; });
    var labelled = null;
    function labelMarkers(range) {  // reasons and P&L once zoomed in enough to read them; arrows only before
      var wanted = !range || range.to - range.from <= MARKER_LABEL_BARS;
      if (wanted === labelled) return;
      labelled = wanted;
      candleSeries.setMarkers(wanted ? markers : bare);
    }

    var equityPane = pane("Equity (KRW) vs buy-and-hold", 200, false);
    var holdSeries = addBroken(equityPane.chart, "line", { color: COLORS.hold, lineWidth: 1, lineStyle: 2,
      lastValueVisible: false }, points, holdByTime);
    var equitySeries = addBroken(equityPane.chart, "line", { color: COLORS.equity, lineWidth: 2 }, points,
      equityByTime);

    var ddPane = pane("Drawdown (%)", 150, true);
    var ddSeries = addBroken(ddPane.chart, "area", { lineColor: COLORS.drawdown, topColor: "rgba(198,40,40,0.05)",
      bottomColor: "rgba(198,40,40,0.35)", lineWidth: 1 }, points, drawdownByTime);

    var panes = [
      { chart: price.chart, series: candleSeries, box: price.box },
      { chart: equityPane.chart, series: equitySeries, box: equityPane.box },
      { chart: ddPane.chart, series: ddSeries, box: ddPane.box },
    ];

    price.chart.timeScale().subscribeVisibleLogicalRangeChange(labelMarkers);

    // zoom and scroll together
    var syncing = false;
    panes.forEach(function (source) {
      source.chart.timeScale().subscribeVisibleLogicalRangeChange(function (range) {
        if (syncing || !range) return;
        syncing = true;
        panes.forEach(function (target) {
          if (target !== source) target.chart.timeScale().setVisibleLogicalRange(range);
        });
        syncing = false;
      });
    });

    function showLegend(time) {
      var bar = time === undefined ? undefined : barsByTime[time];
      if (!bar) {
        legend.textContent = time === undefined ? "Hover a bar for its values." : iso(time) + "  no data (gap)";
        return;
      }
      var lines = [
        iso(time) + "  O " + fmt(bar[1]) + "  H " + fmt(bar[2]) + "  L " + fmt(bar[3]) + "  C " + fmt(bar[4]) +
          "   equity " + fmt(equityByTime[time], 0) + "  buy & hold " + fmt(holdByTime[time], 0) +
          "  drawdown " + fmt(drawdownByTime[time]) + "%",
      ];
      legend.textContent = lines.concat(tradesByTime[time] || []).join("\n");
    }

    // one crosshair across the three charts, and the legend under it
    var valuesOf = [barsByTime, equityByTime, drawdownByTime];
    panes.forEach(function (source) {
      source.chart.subscribeCrosshairMove(function (param) {
        if (syncing) return;
        syncing = true;
        panes.forEach(function (target, i) {
          if (target === source) return;
          var value = param.time === undefined ? undefined : valuesOf[i][param.time];
          if (value === undefined) target.chart.clearCrosshairPosition();
          else target.chart.setCrosshairPosition(i === 0 ? value[4] : value, param.time, target.series);
        });
        syncing = false;
        showLegend(param.time);
      });
    });

    function fitAll() { panes.forEach(function (p) { p.chart.timeScale().fitContent(); }); }
    fit.addEventListener("click", fitAll);
    fitAll();
    labelMarkers(price.chart.timeScale().getVisibleLogicalRange());
    showLegend(undefined);

    function resize() {
      panes.forEach(function (p) { p.chart.applyOptions({ width: p.box.clientWidth || element.clientWidth }); });
    }
    root.addEventListener("resize", resize);

    if (options.tables !== false) {
      container.appendChild(el("h3", {}, "Metrics"));
      container.appendChild(metricsTable(metrics));
      container.appendChild(el("h3", {}, "Trades (" + trades.length + ")"));
      container.appendChild(tradesTable(trades));
    }
    container.appendChild(el("div", { "class": "bt-credit" }, "Charts: TradingView Lightweight Charts™"));

    return {
      charts: panes.map(function (p) { return p.chart; }),
      destroy: function () {
        root.removeEventListener("resize", resize);
        panes.forEach(function (p) { p.chart.remove(); });
        element.innerHTML = "";
      },
    };
  }

  root.BacktestCharts = { renderBacktest: renderBacktest, version: "1",
    // the building blocks research_charts.js draws with (one look for every chart)
    parts: { el: el, fmt: fmt, seconds: seconds, chartOptions: chartOptions, colors: COLORS } };
})(typeof window !== "undefined" ? window : this);
