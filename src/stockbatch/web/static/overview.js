/* Overview: rows in and quarantined per run (from /api/v1/runs). */
(function () {
  "use strict";
  var SB = window.SB;
  document.addEventListener("DOMContentLoaded", async function () {
    var el = document.getElementById("runs-chart");
    if (!el) return;
    try {
      var page = await SB.getJSON("/api/v1/runs?limit=30");
      var runs = (page.items || []).filter(function (r) { return r.rows_in !== null; }).reverse();
      if (!runs.length) {
        SB.chartMessage(el, "No run has counted rows yet.");
        SB.markReady("overview");
        return;
      }
      var x = runs.map(function (r) { return r.run_id; });
      var label = runs.map(function (r) { return (r.started_at || r.run_id).slice(5, 16).replace("T", " "); });
      var traces = [
        { type: "bar", name: "rows in", x: x, y: runs.map(function (r) { return r.rows_in; }),
          marker: { color: "#9db7d5" }, hovertemplate: "%{y:,} rows in<extra></extra>" },
        { type: "scatter", mode: "lines+markers", name: "quarantined", x: x, yaxis: "y2",
          y: runs.map(function (r) { return r.rows_quarantined; }), line: { color: SB.colors.down },
          hovertemplate: "%{y:,} quarantined<extra></extra>" },
      ];
      await window.Plotly.newPlot(el, traces, SB.layout({
        margin: { l: 56, r: 56, t: 8, b: 44 },
        bargap: 0.3,
        xaxis: { type: "category", tickvals: x, ticktext: label, tickfont: { size: 10 }, showgrid: false,
          range: SB.categoryRange(x.length, 8) },
        yaxis: { title: { text: "rows in" }, gridcolor: SB.colors.grid, rangemode: "tozero" },
        yaxis2: { title: { text: "quarantined" }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false,
          tickmode: "auto", tickformat: "~s" },
        legend: { orientation: "h", x: 0, y: -0.25 },
      }), SB.plotConfig);
      SB.markReady("overview");
    } catch (err) {
      SB.chartMessage(el, "Could not load the runs: " + err.message, true);
      SB.markFailed(err);
    }
  });
})();
