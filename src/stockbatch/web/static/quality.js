/* Data quality: the quarantine rate of every run with its limit, marked runs in red (read
 * from the page's history table: the server decides the marks), and quarantined rows per
 * reason code over the runs that counted them (/api/v1/quality/history), stacked. */
(function () {
  "use strict";
  var SB = window.SB;

  /** The quarantine rate per run (oldest first), the limit as a dashed line. */
  async function drawRate() {
    var el = document.getElementById("quality-rate-chart");
    var rows = Array.prototype.slice.call(document.querySelectorAll("#quality-history tbody tr[data-run]")).reverse();
    if (!el) return;
    if (!rows.length) {
      SB.chartMessage(el, "No run has recorded quality counts yet.");
      return;
    }
    var x = rows.map(function (r) { return r.dataset.run; });
    var ticks = rows.map(function (r) { return (r.dataset.started || r.dataset.run).slice(5, 16).replace("T", " "); });
    var rate = rows.map(function (r) { return 100 * Number(r.dataset.rate); });
    var marks = rows.map(function (r) { return r.dataset.marks || ""; });
    var limit = 100 * Number(rows[0].dataset.limit);
    var bars = {
      type: "bar", name: "quarantine rate", x: x, y: rate, showlegend: false,
      marker: { color: marks.map(function (m) { return m ? SB.colors.down : SB.colors.series[0]; }) },
      text: rate.map(function (v, i) { return v.toFixed(2) + "%" + (marks[i] ? " \u2691" : ""); }),
      textposition: "outside", cliponaxis: false, textfont: { size: 10 },
      customdata: marks.map(function (m) { return m ? "marked: " + m : "within the thresholds"; }),
      hovertemplate: "%{y:.2f}% quarantined<br>%{customdata}<extra></extra>",
    };
    // The limit as a dashed line across the whole chart (a shape: one run has one x).
    var top = Math.max(limit, Math.max.apply(null, rate)) * 1.2 || 1;
    await window.Plotly.newPlot(el, [bars], SB.layout({
      bargap: 0.3,
      hovermode: "closest",
      margin: { l: 56, r: 16, t: 8, b: 40 },
      xaxis: { type: "category", tickvals: x, ticktext: ticks, tickfont: { size: 10 }, range: SB.categoryRange(x.length, 12) },
      yaxis: { title: { text: "% of rows in", font: { size: 11 } }, gridcolor: SB.colors.grid, range: [0, top], ticksuffix: "%" },
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: limit, y1: limit,
        line: { color: SB.colors.muted, dash: "dash", width: 1 } }],
      annotations: [{ xref: "paper", x: 1, xanchor: "right", y: limit, yanchor: "bottom", showarrow: false,
        text: "quarantine limit " + limit.toFixed(2) + "%", font: { size: 10, color: SB.colors.muted } }],
    }), SB.plotConfig);
  }

  async function drawReasons() {
    var el = document.getElementById("quality-chart");
    if (!el) return;
    var hist = await SB.getJSON("/api/v1/quality/history?limit=60");
    var runs = hist.runs || [];
    var codes = {};
    runs.forEach(function (r) {
      Object.keys(r.reasons || {}).forEach(function (k) { if (r.reasons[k]) codes[k] = (codes[k] || 0) + r.reasons[k]; });
    });
    var order = Object.keys(codes).sort(function (a, b) { return codes[b] - codes[a]; });
    if (!runs.length || !order.length) {
      SB.chartMessage(el, runs.length ? "No row was quarantined in the recorded runs." : "No run has recorded quality counts yet.");
      return;
    }
    var x = runs.map(function (r) { return r.run_id; });
    var ticks = runs.map(function (r) { return (r.started_at || r.run_id).slice(5, 16).replace("T", " "); });
    var traces = order.map(function (code, i) {
      return { type: "bar", name: code, x: x, y: runs.map(function (r) { return (r.reasons || {})[code] || 0; }),
        marker: { color: SB.colors.series[i % SB.colors.series.length] },
        hovertemplate: code + ": %{y:,}<extra></extra>" };
    });
    await window.Plotly.newPlot(el, traces, SB.layout({
      barmode: "stack",
      bargap: 0.3,
      margin: { l: 56, r: 16, t: 8, b: 48 },
      xaxis: { type: "category", tickvals: x, ticktext: ticks, tickfont: { size: 10 }, title: { text: "run (UTC start)", font: { size: 11 } },
        range: SB.categoryRange(x.length, 12) },
      yaxis: { title: { text: "rows", font: { size: 11 } }, gridcolor: SB.colors.grid, rangemode: "tozero" },
      legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
    }), SB.plotConfig);
  }

  document.addEventListener("DOMContentLoaded", async function () {
    try {
      await drawRate();
      await drawReasons();
      SB.markReady("quality");
    } catch (err) {
      var el = document.getElementById("quality-chart");
      if (el) SB.chartMessage(el, "Could not load the quality history: " + err.message, true);
      SB.markFailed(err);
    }
  });
})();
