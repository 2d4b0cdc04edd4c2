/* Symbol page: candlestick + volume, SMA 20/50/200 and Bollinger overlays, RSI and MACD
 * panels in one plotly figure sharing the date axis. Data: /api/v1/daily (JSON pages);
 * the date range and the raw/adjusted toggle re-slice it in the browser.
 *
 * The features are computed on adjusted prices (docs/data.md: factor = adj_close/close
 * when the source has an adjusted close, else 1). Adjusted view: candles x factor,
 * volume / factor, overlays as stored. Raw view: candles as recorded, overlays / factor
 * (the same lines in raw units). */
(function () {
  "use strict";
  var SB = window.SB;
  var MAX_DAILY_CANDLES = 2600; // above this, the visible range is drawn as weekly candles
  var PANEL = {
    price: [0.47, 1],
    volume: [0.34, 0.44],
    rsi: [0.18, 0.31],
    macd: [0, 0.15],
  };

  var el, data, state;

  function parse(rows) {
    var cols = ["open", "high", "low", "close", "adj_close", "volume", "sma_20", "sma_50", "sma_200",
      "bb_upper_20", "bb_lower_20", "rsi_14", "macd", "macd_signal", "macd_hist"];
    var out = { date: new Array(rows.length), factor: new Array(rows.length), hasAdjusted: false };
    cols.forEach(function (c) { out[c] = new Array(rows.length); });
    rows.forEach(function (r, i) {
      out.date[i] = r.trade_date;
      cols.forEach(function (c) { out[c][i] = r[c]; });
      var f = 1;
      if (r.adj_close !== null && r.adj_close !== undefined && r.close > 0) {
        f = r.adj_close / r.close;
        out.hasAdjusted = true;
      }
      out.factor[i] = f;
    });
    return out;
  }

  function addMonths(iso, months) {
    var d = new Date(iso + "T00:00:00Z");
    d.setUTCMonth(d.getUTCMonth() + months);
    return d.toISOString().slice(0, 10);
  }

  function lowerBound(arr, value) {
    var lo = 0, hi = arr.length;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (arr[mid] < value) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  function scale(v, f) {
    return v === null || v === undefined ? null : v * f;
  }

  /** Rows [i0, i1) of the data as the view asks (adjusted or raw). */
  function slice(i0, i1) {
    var adjusted = state.prices === "adjusted";
    var s = { date: [], open: [], high: [], low: [], close: [], volume: [], sma_20: [], sma_50: [],
      sma_200: [], bb_upper_20: [], bb_lower_20: [], rsi_14: [], macd: [], macd_signal: [], macd_hist: [] };
    for (var i = i0; i < i1; i++) {
      var f = data.factor[i];
      var px = adjusted ? f : 1; // candles
      var ov = adjusted ? 1 : 1 / f; // overlays (stored adjusted)
      s.date.push(data.date[i]);
      s.open.push(scale(data.open[i], px));
      s.high.push(scale(data.high[i], px));
      s.low.push(scale(data.low[i], px));
      s.close.push(scale(data.close[i], px));
      s.volume.push(data.volume[i] === null ? null : adjusted ? data.volume[i] / f : data.volume[i]);
      ["sma_20", "sma_50", "sma_200", "bb_upper_20", "bb_lower_20"].forEach(function (c) {
        s[c].push(scale(data[c][i], ov));
      });
      s.rsi_14.push(data.rsi_14[i]);
      s.macd.push(data.macd[i]);
      s.macd_signal.push(data.macd_signal[i]);
      s.macd_hist.push(data.macd_hist[i]);
    }
    return s;
  }

  function weekKey(iso) {
    // The Monday of the ISO date's week, as YYYY-MM-DD.
    var d = new Date(iso + "T00:00:00Z");
    var back = (d.getUTCDay() + 6) % 7;
    d.setUTCDate(d.getUTCDate() - back);
    return d.toISOString().slice(0, 10);
  }

  /** Daily rows -> weekly candles (open first, high max, low min, close last, volume sum;
   * indicators as of the week's last day), dated by the week's last trading day. */
  function weekly(s) {
    var w = {};
    Object.keys(s).forEach(function (k) { w[k] = []; });
    var cur = null;
    for (var i = 0; i < s.date.length; i++) {
      var key = weekKey(s.date[i]);
      if (cur !== key) {
        cur = key;
        Object.keys(s).forEach(function (k) { w[k].push(s[k][i]); });
        continue;
      }
      var j = w.date.length - 1;
      if (w.open[j] === null) w.open[j] = s.open[i];
      if (s.high[i] !== null) w.high[j] = w.high[j] === null ? s.high[i] : Math.max(w.high[j], s.high[i]);
      if (s.low[i] !== null) w.low[j] = w.low[j] === null ? s.low[i] : Math.min(w.low[j], s.low[i]);
      w.volume[j] = (w.volume[j] || 0) + (s.volume[i] || 0);
      ["date", "close", "sma_20", "sma_50", "sma_200", "bb_upper_20", "bb_lower_20", "rsi_14", "macd",
        "macd_signal", "macd_hist"].forEach(function (k) { w[k][j] = s[k][i]; });
    }
    return w;
  }

  /** A few days only: a padded range in whole days (plotly would zoom into a fraction of
   * a millisecond around a single bar) and date ticks. */
  function shortRange(dates) {
    if (dates.length > 15) return {};
    var pad = 4;
    return { range: [addDays(dates[0], -pad), addDays(dates[dates.length - 1], pad)],
      rangebreaks: [], tickformat: "%b %d, %Y" };
  }

  function addDays(iso, days) {
    var d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + days);
    return d.toISOString().slice(0, 10);
  }

  function figure(s) {
    var c = SB.colors;
    var up = s.close.map(function (v, i) { return s.open[i] === null || v >= s.open[i]; });
    var traces = [
      { type: "candlestick", name: "OHLC", x: s.date, open: s.open, high: s.high, low: s.low, close: s.close,
        increasing: { line: { color: c.up, width: 1 }, fillcolor: c.up },
        decreasing: { line: { color: c.down, width: 1 }, fillcolor: c.down },
        yaxis: "y", showlegend: false },
      { type: "scatter", mode: "lines", name: "BB upper 20", x: s.date, y: s.bb_upper_20, yaxis: "y",
        line: { color: c.band, width: 1, dash: "dot" }, hoverinfo: "skip", legendgroup: "bb", showlegend: false },
      { type: "scatter", mode: "lines", name: "Bollinger 20", x: s.date, y: s.bb_lower_20, yaxis: "y",
        line: { color: c.band, width: 1, dash: "dot" }, fill: "tonexty", fillcolor: c.bandFill,
        hoverinfo: "skip", legendgroup: "bb" },
      { type: "scatter", mode: "lines", name: "SMA 20", x: s.date, y: s.sma_20, yaxis: "y",
        line: { color: c.sma20, width: 1.3 } },
      { type: "scatter", mode: "lines", name: "SMA 50", x: s.date, y: s.sma_50, yaxis: "y",
        line: { color: c.sma50, width: 1.3 } },
      { type: "scatter", mode: "lines", name: "SMA 200", x: s.date, y: s.sma_200, yaxis: "y",
        line: { color: c.sma200, width: 1.5 } },
      { type: "bar", name: "Volume", x: s.date, y: s.volume, yaxis: "y2", showlegend: false,
        marker: { color: up.map(function (u) { return u ? "rgba(26,152,80,0.55)" : "rgba(215,48,39,0.55)"; }) },
        hovertemplate: "vol %{y:,.0f}<extra></extra>" },
      { type: "scatter", mode: "lines", name: "RSI 14", x: s.date, y: s.rsi_14, yaxis: "y3",
        line: { color: c.rsi, width: 1.3 }, showlegend: false, hovertemplate: "RSI %{y:.1f}<extra></extra>" },
      { type: "bar", name: "MACD hist", x: s.date, y: s.macd_hist, yaxis: "y4", showlegend: false,
        marker: { color: s.macd_hist.map(function (v) { return v >= 0 ? "rgba(26,152,80,0.6)" : "rgba(215,48,39,0.6)"; }) },
        hovertemplate: "hist %{y:.3f}<extra></extra>" },
      { type: "scatter", mode: "lines", name: "MACD", x: s.date, y: s.macd, yaxis: "y4",
        line: { color: c.macd, width: 1.2 }, showlegend: false, hovertemplate: "MACD %{y:.3f}<extra></extra>" },
      { type: "scatter", mode: "lines", name: "Signal", x: s.date, y: s.macd_signal, yaxis: "y4",
        line: { color: c.signal, width: 1.2 }, showlegend: false, hovertemplate: "signal %{y:.3f}<extra></extra>" },
    ];
    // Days whose source recorded no open (health flag open_missing) have no candle:
    // their close is drawn as a marker so the day does not vanish from the chart.
    var closeOnly = s.close.map(function (v, i) { return s.open[i] === null ? v : null; });
    if (closeOnly.some(function (v) { return v !== null; })) {
      traces.push({ type: "scatter", mode: "markers", name: "close (no open)", x: s.date, y: closeOnly,
        yaxis: "y", marker: { color: c.ink, size: 5, symbol: "diamond" },
        hovertemplate: "close %{y:.4g} (no open recorded)<extra></extra>" });
    }
    if (s.date.length <= 15) {
      // Few bars: plotly cannot infer a bar width from a single date; 0.7 day each.
      traces.forEach(function (t) { if (t.type === "bar") t.width = 0.7 * 86400000; });
    }
    var phone = SB.isPhone();
    var axis = { gridcolor: c.grid, zeroline: false, fixedrange: false, tickfont: { size: 10 } };
    function label(text, domain) {
      return { text: text, xref: "paper", yref: "paper", x: 0, y: domain[1], xanchor: "left", yanchor: "bottom",
        showarrow: false, font: { size: 11, color: c.muted } };
    }
    var layout = SB.layout({
      margin: { l: phone ? 44 : 60, r: 12, t: 8, b: 30 },
      hovermode: "x",
      dragmode: "zoom",
      bargap: 0.1,
      legend: { orientation: "h", x: 0, y: 1, yanchor: "bottom", font: { size: phone ? 10 : 11 } },
      xaxis: Object.assign({ type: "date", anchor: "y4", rangeslider: { visible: false }, gridcolor: c.grid,
        rangebreaks: state.weekly ? [] : [{ bounds: ["sat", "mon"] }], tickfont: { size: 10 } }, shortRange(s.date)),
      yaxis: Object.assign({ domain: PANEL.price, title: { text: phone ? "" : "price", font: { size: 11 } } }, axis),
      yaxis2: Object.assign({}, axis, { domain: PANEL.volume, rangemode: "tozero", tickformat: "~s", nticks: phone ? 3 : 5 }),
      yaxis3: Object.assign({}, axis, { domain: PANEL.rsi, range: [0, 100], tickvals: [30, 50, 70] }),
      yaxis4: Object.assign({}, axis, { domain: PANEL.macd, zeroline: true, zerolinecolor: "#c5cfda" }),
      annotations: [
        label("Volume", PANEL.volume), label("RSI 14", PANEL.rsi), label("MACD 12/26/9", PANEL.macd),
      ],
      shapes: [30, 70].map(function (v) {
        return { type: "line", xref: "paper", x0: 0, x1: 1, yref: "y3", y0: v, y1: v,
          line: { color: "#c5cfda", width: 1, dash: "dash" } };
      }),
    });
    return { traces: traces, layout: layout };
  }

  function pressed(selector, value, attr) {
    document.querySelectorAll(selector).forEach(function (b) {
      b.setAttribute("aria-pressed", b.getAttribute(attr) === value ? "true" : "false");
    });
  }

  async function draw() {
    var n = data.date.length;
    var start = state.start || data.date[0];
    var end = state.end || data.date[n - 1];
    var i0 = lowerBound(data.date, start);
    var i1 = lowerBound(data.date, end + "~"); // "~" sorts after any date: end inclusive
    var s = slice(i0, i1);
    state.weekly = s.date.length > MAX_DAILY_CANDLES;
    if (state.weekly) s = weekly(s);
    document.getElementById("range-start").value = start;
    document.getElementById("range-end").value = end;
    var note = (i1 - i0).toLocaleString("en-US") + (i1 - i0 === 1 ? " trading day" : " trading days");
    if (state.weekly) note += ", drawn as " + s.date.length.toLocaleString("en-US") + " weekly candles";
    note += data.hasAdjusted
      ? state.prices === "adjusted"
        ? " · adjusted prices (x adj_close/close), as the features use them"
        : " · raw prices as recorded; overlays converted to raw units"
      : " · this source records no adjusted close: raw = adjusted";
    document.getElementById("chart-note").textContent = note;
    if (!s.date.length) {
      SB.chartMessage(el, "No trading day in this range.");
      return;
    }
    var f = figure(s);
    if (!el.data) el.textContent = "";
    await window.Plotly.react(el, f.traces, f.layout, SB.plotConfig);
  }

  function setRange(range) {
    var last = data.date[data.date.length - 1];
    var months = { "6M": 6, "1Y": 12, "5Y": 60 }[range];
    state.range = range;
    state.start = months ? addMonths(last, -months) : data.date[0];
    if (state.start < data.date[0]) state.start = data.date[0];
    state.end = last;
    pressed("[data-range]", range, "data-range");
  }

  function wire() {
    document.querySelectorAll("[data-range]").forEach(function (b) {
      b.addEventListener("click", function () {
        setRange(b.getAttribute("data-range"));
        draw();
      });
    });
    ["range-start", "range-end"].forEach(function (id) {
      document.getElementById(id).addEventListener("change", function (ev) {
        var v = ev.target.value;
        if (!v) return;
        if (id === "range-start") state.start = v;
        else state.end = v;
        if (state.start > state.end) {
          var t = state.start;
          state.start = state.end;
          state.end = t;
        }
        pressed("[data-range]", "", "data-range");
        draw();
      });
    });
    document.querySelectorAll("[data-prices]").forEach(function (b) {
      if (!data.hasAdjusted) b.disabled = b.getAttribute("data-prices") === "raw";
      b.addEventListener("click", function () {
        state.prices = b.getAttribute("data-prices");
        pressed("[data-prices]", state.prices, "data-prices");
        draw();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", async function () {
    el = document.getElementById("symbol-chart");
    if (!el) return;
    var symbol = el.getAttribute("data-symbol");
    var url = "/api/v1/daily?symbols=" + encodeURIComponent(symbol) + "&columns=" +
      encodeURIComponent(el.getAttribute("data-columns")) + "&limit=50000";
    try {
      var rows = await SB.getAllPages(url, 20);
      if (!rows.length) {
        SB.chartMessage(el, "No daily rows for " + symbol + ".");
        SB.markReady("symbol");
        return;
      }
      data = parse(rows);
      state = { prices: "adjusted", start: null, end: null, range: "1Y", weekly: false };
      setRange("1Y");
      wire();
      await draw();
      SB.markReady("symbol");
    } catch (err) {
      SB.chartMessage(el, "Could not load the chart: " + err.message, true);
      SB.markFailed(err);
    }
  });
})();
