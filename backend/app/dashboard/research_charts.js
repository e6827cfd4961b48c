/*
 * Research report charts (backtest.py optimize | monte-carlo | ai-value --html, and a research run's result
 * from GET /api/v1/research/runs/{id}), drawn with the parts of charts.js (load it, and Lightweight Charts,
 * first).
 *
 *   ResearchCharts.renderResearch(element, report) -> { destroy() }
 *
 * `report` is the sub-command's JSON; each section is drawn when its key is there:
 *   monte_carlo {fan: {"5": [...], "25", "50", "75", "95", observed: [...]}, ...}, percentiles, significance,
 *     deflated_sharpe                        -> fan chart of equity (1.0 = start) by trade, percentile table
 *   variants [{name, label, equity: [[iso, value]], metrics}], differences, regimes, cost, headline
 *                                            -> AI-value comparison: equity of each variant, tables
 *   folds [{train, test, params, test_metrics, train_metrics?}]  -> fold table
 *   stitched_equity [[iso, equity], ...]     -> stitched out-of-sample equity
 *   heatmap {x: {name, values}, y: {name, values}, metric, values: [[...]]}  -> parameter heat map
 */
(function (root) {
  "use strict";

  var FAN = [["5", "#90caf9"], ["25", "#42a5f5"], ["50", "#1565c0"], ["75", "#42a5f5"], ["95", "#90caf9"]];
  var VARIANT_COLORS = ["#283593", "#2e7d32", "#9e9e9e", "#ef6c00", "#6a1b9a"];
  var DAY = 86400;

  function parts() {
    if (!root.BacktestCharts || !root.BacktestCharts.parts) throw new Error("research_charts.js needs charts.js first");
    if (!root.LightweightCharts) throw new Error("research_charts.js needs TradingView Lightweight Charts first");
    return root.BacktestCharts.parts;
  }

  function table(p, head, rows) {
    var node = p.el("table");
    var tr = p.el("tr");
    head.forEach(function (h) { tr.appendChild(p.el("th", {}, h)); });
    node.appendChild(tr);
    rows.forEach(function (row) {
      var line = p.el("tr");
      row.forEach(function (cell) {
        var td = p.el("td", {}, typeof cell === "number" ? p.fmt(cell) : (cell === null || cell === undefined ? "-" : String(cell)));
        line.appendChild(td);
      });
      node.appendChild(line);
    });
    return node;
  }

  function chartIn(p, container, label, height, charts, byTrade) {
    var box = p.el("div", { "class": "bt-pane" });
    box.appendChild(p.el("div", { "class": "bt-label" }, label));
    container.appendChild(box);
    var chart = root.LightweightCharts.createChart(box, p.chartOptions(height, true));
    chart.applyOptions({ width: box.clientWidth || container.clientWidth || 900 });
    if (byTrade) {  // the x axis counts trades: trade k sits at k days after the epoch
      var label2 = function (time) { return "trade " + Math.round(time / DAY - 1); };
      chart.applyOptions({ timeScale: { tickMarkFormatter: label2 }, localization: { timeFormatter: label2 } });
    }
    charts.push({ chart: chart, box: box });
    return chart;
  }

  function monteCarlo(p, container, report, charts) {
    var mc = report.monte_carlo;
    container.appendChild(p.el("h3", {}, "Monte Carlo: " + mc.runs + " runs (" + mc.method + ", seed " + mc.seed +
      "), " + mc.trades + " trades"));
    var chart = chartIn(p, container, "Equity by trade (1.0 = start): percentiles 5, 25, 50, 75, 95 and this backtest",
      320, charts, true);
    FAN.forEach(function (level) {
      var values = (mc.fan || {})[level[0]];
      if (!values) return;
      var series = chart.addLineSeries({ color: level[1], lineWidth: level[0] === "50" ? 2 : 1,
        priceLineVisible: false, lastValueVisible: false, title: "p" + level[0] });
      series.setData(values.map(function (v, k) { return { time: (k + 1) * DAY, value: v }; }));
    });
    if ((mc.fan || {}).observed) {
      var own = chart.addLineSeries({ color: "#c62828", lineWidth: 2, priceLineVisible: false, title: "backtest" });
      own.setData(mc.fan.observed.map(function (v, k) { return { time: (k + 1) * DAY, value: v }; }));
    }
    chart.timeScale().fitContent();
    var labels = { total_return: "Total return %", max_drawdown: "Max drawdown %",
      longest_losing_streak: "Longest losing streak (trades)" };
    var rows = Object.keys(labels).filter(function (k) { return (report.percentiles || {})[k]; }).map(function (k) {
      var q = report.percentiles[k];
      return [labels[k], (mc.observed || {})[k], q["5"], q["50"], q["95"]];
    });
    container.appendChild(table(p, ["", "This backtest", "5th pct", "Median", "95th pct"], rows));
    var sig = report.significance;
    if (sig) {
      container.appendChild(p.el("p", {}, "Against random entries with the same exposure (" + sig.runs +
        " placements): p-value " + p.fmt(sig.p_value, 4) + "; the trades made " + p.fmt(sig.observed_return_pct) +
        "%, random placements " + p.fmt(sig.random_return_pct["5"]) + "% .. " + p.fmt(sig.random_return_pct["95"]) +
        "% (5th..95th pct)."));
    }
    var search = report.search;
    if (search) {
      var over = search.overfitting || {};
      container.appendChild(p.el("p", {}, "Grid search first: " + search.sets + " sets; the best by Sharpe ratio, " +
        JSON.stringify(search.best_params) + ", is the one resampled. Probability of backtest overfitting (CSCV): " +
        (over.pbo === undefined ? "-" : p.fmt(over.pbo, 2)) + "."));
      container.appendChild(table(p, ["Params", "Sharpe", "Return %"], (search.trials || []).map(function (t) {
        return [JSON.stringify(t.params), t.sharpe, t.total_return_pct];
      })));
    }
    var dsr = report.deflated_sharpe;
    if (dsr && dsr.deflated_sharpe !== undefined) {
      container.appendChild(p.el("p", {}, "Deflated Sharpe ratio " + p.fmt(dsr.deflated_sharpe, 4) + " (Sharpe " +
        p.fmt(dsr.sharpe_annualised) + " annualised against " + p.fmt(dsr.expected_max_sharpe_annualised) +
        " expected from " + dsr.trials + " trial(s))."));
    }
  }

  function timeSeries(points) {
    var seen = {};
    var data = [];
    points.forEach(function (pt) {
      var t = Math.floor(Date.parse(pt[0]) / 1000);
      if (pt[1] === null || seen[t]) return;
      seen[t] = true;
      data.push({ time: t, value: pt[1] });
    });
    data.sort(function (a, b) { return a.time - b.time; });
    return data;
  }

  function aiValue(p, container, report, charts) {
    container.appendChild(p.el("h3", {}, "Does the AI add value?"));
    if (report.headline && report.headline.note) container.appendChild(p.el("p", {}, report.headline.note));
    var withEquity = report.variants.filter(function (v) { return v.equity && v.equity.length; });
    if (withEquity.length) {
      var chart = chartIn(p, container, "Equity (KRW): " + withEquity.map(function (v) { return v.label || v.name; })
        .join(", "), 320, charts, false);
      withEquity.forEach(function (variant, i) {
        var series = chart.addLineSeries({ color: VARIANT_COLORS[i % VARIANT_COLORS.length], lineWidth: 2,
          priceLineVisible: false, title: variant.label || variant.name });
        series.setData(timeSeries(variant.equity));
      });
      if (report.cutoff) {
        container.appendChild(p.el("p", { "class": "bt-credit" }, "Model training cut-off " + report.cutoff +
          ": results on candles before it are possibly contaminated (the model may know that history)."));
      }
      chart.timeScale().fitContent();
    }
    var keys = [["total_return_pct", "Return %"], ["max_drawdown_pct", "Max DD %"], ["sharpe", "Sharpe"],
      ["trades", "Trades"], ["win_rate_pct", "Win rate %"]];
    var scopes = report.variants[0] && report.variants[0].scopes ? Object.keys(report.variants[0].scopes) : [];
    scopes.forEach(function (scope) {
      var tainted = report.cutoff && scope !== "after_cutoff";
      container.appendChild(p.el("h4", {}, "Variants: " + scope.replace("_", " ") +
        (tainted ? " (possibly contaminated: before the model's training cut-off)" : "") +
        (report.headline && report.headline.scope === scope ? " (headline)" : "")));
      container.appendChild(table(p, ["Variant"].concat(keys.map(function (k) { return k[1]; })),
        report.variants.map(function (v) {
          var m = (v.scopes[scope] || {});
          return [v.label || v.name].concat(keys.map(function (k) { return m[k[0]]; }));
        })));
    });
    if (report.differences) {
      container.appendChild(p.el("h4", {}, "Differences (bootstrap 95% interval)"));
      container.appendChild(table(p, ["Comparison", "Scope", "Return pts", "Low", "High", "P(better)"],
        report.differences.map(function (d) {
          return [d.label, d.scope, d.difference_pct, d.ci_low_pct, d.ci_high_pct, d.probability_better];
        })));
    }
    if (report.regimes) {
      container.appendChild(p.el("h4", {}, "By market regime (" + (report.regime_rule || "") + ")"));
      container.appendChild(table(p, ["Regime", "Bars", "Rules %", "Rules + AI %", "Buy & hold %"],
        report.regimes.map(function (r) { return [r.regime, r.bars, r.rules_pct, r.rules_ai_pct, r.buy_and_hold_pct]; })));
    }
    if (report.cost) {
      container.appendChild(p.el("p", {}, "AI cost for the period: " + p.fmt(report.cost.usd, 4) + " USD over " +
        report.cost.calls + " model calls (" + (report.cost.source || "") + ")."));
    }
  }

  function folds(p, container, report) {
    container.appendChild(p.el("h3", {}, "Walk-forward folds"));
    function window(w) {
      if (!w) return "-";
      var start = w.start || w[0], end = w.end || w[1];
      return String(start).slice(0, 16).replace("T", " ") + " .. " + String(end).slice(0, 16).replace("T", " ");
    }
    container.appendChild(table(p, ["Fold", "Train", "Test", "Params", "Test return %", "Test Sharpe", "Test trades"],
      report.folds.map(function (f, i) {
        var m = f.test_metrics || {};
        return [i + 1, window(f.train), window(f.test), JSON.stringify(f.params || {}),
          m.total_return_pct, m.sharpe, m.trades];
      })));
  }

  function stitched(p, container, report, charts) {
    container.appendChild(p.el("h3", {}, "Stitched out-of-sample equity"));
    var chart = chartIn(p, container, "Out-of-sample equity, fold after fold", 260, charts, false);
    chart.addLineSeries({ color: "#283593", lineWidth: 2, priceLineVisible: false })
      .setData(timeSeries(report.stitched_equity));
    chart.timeScale().fitContent();
  }

  function heatmap(p, container, map) {
    container.appendChild(p.el("h3", {}, "Parameter heat map: " + map.metric + " by " + map.y.name + " and " + map.x.name));
    var all = [];
    map.values.forEach(function (row) { row.forEach(function (v) { if (v !== null && isFinite(v)) all.push(v); }); });
    var lo = Math.min.apply(null, all.length ? all : [0]), hi = Math.max.apply(null, all.length ? all : [1]);
    var node = p.el("table", { "class": "rs-heat" });
    var head = p.el("tr");
    head.appendChild(p.el("th", {}, map.y.name + " \\ " + map.x.name));
    map.x.values.forEach(function (x) { head.appendChild(p.el("th", {}, p.fmt(x, 4))); });
    node.appendChild(head);
    map.values.forEach(function (row, i) {
      var tr = p.el("tr");
      tr.appendChild(p.el("th", {}, p.fmt(map.y.values[i], 4)));
      row.forEach(function (v) {
        var td = p.el("td", {}, p.fmt(v));
        if (v !== null && isFinite(v)) {
          var share = hi > lo ? (v - lo) / (hi - lo) : 0.5;  // red (worst) .. green (best)
          td.style.background = "hsl(" + Math.round(120 * share) + ",60%,80%)";  // CSSOM: allowed by the CSP
        }
        tr.appendChild(td);
      });
      node.appendChild(tr);
    });
    container.appendChild(node);
  }

  function renderResearch(element, report) {
    var p = parts();
    element.innerHTML = "";
    var container = p.el("div", { "class": "bt-root" });
    element.appendChild(container);
    var charts = [];
    if (report.request) {
      var r = report.request;
      container.appendChild(p.el("div", { "class": "bt-credit" }, [r.strategy, r.symbol || (r.symbols || []).join(", "),
        r.timeframe, r.start ? "from " + r.start : "", r.end ? "to " + r.end : ""].filter(Boolean).join(" ")));
    }
    if (report.monte_carlo) monteCarlo(p, container, report, charts);
    if (report.variants) aiValue(p, container, report, charts);
    if (report.folds) folds(p, container, report);
    if (report.stitched_equity) stitched(p, container, report, charts);
    if (report.heatmap) heatmap(p, container, report.heatmap);
    container.appendChild(p.el("div", { "class": "bt-credit" }, "Charts: TradingView Lightweight Charts™"));
    function resize() { charts.forEach(function (c) { c.chart.applyOptions({ width: c.box.clientWidth }); }); }
    root.addEventListener("resize", resize);
    return {
      charts: charts.map(function (c) { return c.chart; }),
      destroy: function () {
        root.removeEventListener("resize", resize);
        charts.forEach(function (c) { c.chart.remove(); });
        element.innerHTML = "";
      },
    };
  }

  root.ResearchCharts = { renderResearch: renderResearch, version: "1" };
})(typeof window !== "undefined" ? window : this);
