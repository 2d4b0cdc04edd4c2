/* Data quality: quarantined rows per reason code over the runs that counted them
 * (/api/v1/quality/history), stacked. */
(function () {
  "use strict";
  var SB = window.SB;
  document.addEventListener("DOMContentLoaded", async function () {
    var el = document.getElementById("quality-chart");
    if (!el) return;
    try {
      var hist = await SB.getJSON("/api/v1/quality/history?limit=60");
      var runs = hist.runs || [];
      var codes = {};
      runs.forEach(function (r) {
        Object.keys(r.reasons || {}).forEach(function (k) { if (r.reasons[k]) codes[k] = (codes[k] || 0) + r.reasons[k]; });
      });
      var order = Object.keys(codes).sort(function (a, b) { return codes[b] - codes[a]; });
      if (!runs.length || !order.length) {
        SB.chartMessage(el, runs.length ? "No row was quarantined in the recorded runs." : "No run has recorded quality counts yet.");
        SB.markReady("quality");
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
      SB.markReady("quality");
    } catch (err) {
      SB.chartMessage(el, "Could not load the quality history: " + err.message, true);
      SB.markFailed(err);
    }
  });
})();
