/* stockbatch dashboard: plotly.js helpers shared by the chart pages (plotly.js itself
 * is served by the app at /vendor/plotly.min.js from the installed plotly package). */
(function () {
  "use strict";
  var SB = (window.SB = window.SB || {});

  SB.colors = {
    up: "#1a9850", down: "#d73027", ink: "#1b1f24", grid: "#e8edf3", muted: "#5f6b7a",
    sma20: "#f28e2b", sma50: "#4e79a7", sma200: "#7b3294", band: "rgba(120,140,170,0.55)",
    bandFill: "rgba(120,140,170,0.08)", rsi: "#4e79a7", macd: "#1f6feb", signal: "#f28e2b",
    series: ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
      "#ff9da7", "#9c755f", "#bab0ac", "#2f4b7c", "#a05195", "#d45087"],
  };

  SB.plotConfig = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
  };

  SB.isPhone = function () {
    return window.matchMedia("(max-width: 640px)").matches;
  };

  /** A layout with the dashboard's look; `extra` wins. */
  SB.layout = function (extra) {
    var base = {
      font: { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 12, color: SB.colors.ink },
      paper_bgcolor: "#fff",
      plot_bgcolor: "#fff",
      margin: { l: 56, r: 16, t: 28, b: 40 },
      hovermode: "x unified",
      showlegend: true,
      legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom", font: { size: 11 } },
    };
    return Object.assign(base, extra || {});
  };

  /** The x range of a category axis of `n` bars: at least `slots` wide, so one or two
   * runs are drawn as bars of a normal width, not as one block across the chart. */
  SB.categoryRange = function (n, slots) {
    var extra = Math.max(0, (slots || 8) - n) / 2;
    return [-0.5 - extra, n - 0.5 + extra];
  };

  /** Replace a chart's content with a message (loading failed, nothing to draw). */
  SB.chartMessage = function (el, text, isError) {
    if (window.Plotly && el.data) window.Plotly.purge(el);
    el.textContent = "";
    el.appendChild(SB.el("p", { class: isError ? "chart-error" : "loading" }, text));
  };

  /** Record that the page's charts are drawn: <html data-charts-ready> and the time
   * since navigation start (window.SB.readyMs), which the browser test reads. */
  SB.markReady = function (name) {
    SB.readyMs = Math.round(performance.now());
    document.documentElement.setAttribute("data-charts-ready", name || "1");
  };
  SB.markFailed = function (err) {
    document.documentElement.setAttribute("data-charts-error", String(err && err.message || err));
  };
})();
