/* Quarterly explorer: one quarter of the ML table across symbols (/api/v1/quarterly,
 * JSON pages), sorted and filtered in the browser, and the histogram of a feature over
 * the rows shown. The download links hold the same rows, every column. */
(function () {
  "use strict";
  var SB = window.SB;
  var MAX_ROWS_SHOWN = 2000;
  var rows = [];
  var keys = [];
  var sort = { key: "symbol", asc: true };
  var table, countEl, filterEl, completeEl, histEl, featureEl, noteEl;

  function shown() {
    var q = filterEl.value.trim().toUpperCase();
    var completeOnly = completeEl.checked;
    var out = rows.filter(function (r) {
      if (completeOnly && !r.q_complete) return false;
      return !q || r.symbol.indexOf(q) !== -1;
    });
    out.sort(function (a, b) { return SB.compare(a[sort.key], b[sort.key], sort.asc); });
    return out;
  }

  function renderTable(list) {
    var body = table.tBodies[0];
    var frag = document.createDocumentFragment();
    list.slice(0, MAX_ROWS_SHOWN).forEach(function (r) {
      var tr = document.createElement("tr");
      keys.forEach(function (k) {
        var td = document.createElement("td");
        var v = r[k];
        if (k === "symbol") {
          var a = SB.el("a", { href: SB.symbolUrl(v) }, v);
          td.appendChild(a);
        } else {
          if (typeof v === "number") td.className = "num";
          if (v === null || v === undefined) {
            td.appendChild(SB.el("span", { class: "muted" }, "–"));
          } else {
            td.textContent = SB.fmt(v);
            if (typeof v === "number") td.title = String(v);
          }
          if (k === "q_complete" && v === false) td.className = "warn";
        }
        tr.appendChild(td);
      });
      frag.appendChild(tr);
    });
    body.textContent = "";
    if (!list.length) {
      var tr = document.createElement("tr");
      tr.appendChild(SB.el("td", { colspan: String(keys.length), class: "muted" }, "No row matches the filter."));
      frag.appendChild(tr);
    }
    body.appendChild(frag);
    countEl.textContent = list.length.toLocaleString("en-US") + " of " + rows.length.toLocaleString("en-US") +
      " symbols" + (list.length > MAX_ROWS_SHOWN ? " (first " + MAX_ROWS_SHOWN + " listed; the download has all)" : "");
    table.querySelectorAll("th[data-key]").forEach(function (th) {
      if (th.getAttribute("data-key") === sort.key) th.setAttribute("aria-sort", sort.asc ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }

  async function renderHist(list) {
    var feature = featureEl.value;
    var values = list.map(function (r) { return r[feature]; }).filter(function (v) {
      return typeof v === "number" && isFinite(v);
    });
    var missing = list.length - values.length;
    noteEl.textContent = values.length.toLocaleString("en-US") + " values" +
      (missing ? ", " + missing + " null (not drawn)" : "") + " · " +
      (featureEl.selectedOptions[0] ? featureEl.selectedOptions[0].title : "");
    var trace = { type: "histogram", x: values, name: feature, marker: { color: "#4e79a7", line: { color: "#fff", width: 1 } },
      nbinsx: Math.min(40, Math.max(8, Math.round(Math.sqrt(values.length) * 2))),
      hovertemplate: "%{x}<br>%{y} symbols<extra></extra>" };
    await window.Plotly.react(histEl, [trace], SB.layout({
      showlegend: false,
      margin: { l: 44, r: 12, t: 8, b: 44 },
      bargap: 0.04,
      xaxis: { title: { text: feature, font: { size: 11 } }, gridcolor: SB.colors.grid, zeroline: true, zerolinecolor: "#c5cfda" },
      yaxis: { title: { text: "symbols", font: { size: 11 } }, gridcolor: SB.colors.grid },
    }), SB.plotConfig);
  }

  async function update() {
    var list = shown();
    renderTable(list);
    await renderHist(list);
  }

  document.addEventListener("DOMContentLoaded", async function () {
    table = document.getElementById("quarter-table");
    if (!table) return;
    countEl = document.getElementById("table-count");
    filterEl = document.getElementById("table-filter");
    completeEl = document.getElementById("complete-only");
    histEl = document.getElementById("hist-chart");
    featureEl = document.getElementById("hist-feature");
    noteEl = document.getElementById("hist-note");
    keys = Array.prototype.map.call(table.querySelectorAll("th[data-key]"), function (th) {
      return th.getAttribute("data-key");
    });
    var quarter = table.getAttribute("data-quarter");
    document.getElementById("quarter-select").addEventListener("change", function (ev) {
      window.location.assign("/quarterly?quarter=" + encodeURIComponent(ev.target.value));
    });
    table.querySelectorAll("th[data-key]").forEach(function (th) {
      th.addEventListener("click", function () {
        var k = th.getAttribute("data-key");
        sort = { key: k, asc: sort.key === k ? !sort.asc : k === "symbol" };
        renderTable(shown());
      });
    });
    var timer = null;
    filterEl.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(update, 100);
    });
    completeEl.addEventListener("change", update);
    featureEl.addEventListener("change", function () { renderHist(shown()); });
    try {
      rows = await SB.getAllPages("/api/v1/quarterly?from=" + quarter + "&to=" + quarter + "&limit=50000", 20);
      await update();
      SB.markReady("quarterly");
    } catch (err) {
      table.tBodies[0].textContent = "";
      var tr = document.createElement("tr");
      tr.appendChild(SB.el("td", { colspan: String(keys.length), class: "error" }, "Could not load " + quarter + ": " + err.message));
      table.tBodies[0].appendChild(tr);
      SB.chartMessage(histEl, err.message, true);
      SB.markFailed(err);
    }
  });
})();
