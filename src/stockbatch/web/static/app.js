/* stockbatch dashboard: what every page uses. The API is called with the session
 * cookie (same origin); no inline script anywhere, so a Content-Security-Policy of
 * script-src 'self' fits. Exposes window.SB. */
(function () {
  "use strict";
  var SB = (window.SB = window.SB || {});

  /** GET a JSON document of the API; throws Error(message of the API's error). */
  SB.getJSON = async function (url, signal) {
    var res = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      signal: signal,
    });
    if (!res.ok) {
      var msg = res.status + " " + res.statusText;
      try {
        var body = await res.json();
        if (body && body.error) msg = body.error;
      } catch (e) {
        /* not JSON: keep the status line */
      }
      if (res.status === 401) msg = "your session ended: log in again";
      throw new Error(msg);
    }
    return res.json();
  };

  /** Every row of a paged API list (follows next_cursor). */
  SB.getAllPages = async function (url, most) {
    var rows = [];
    var cursor = null;
    for (var i = 0; i < (most || 50); i++) {
      var page = await SB.getJSON(url + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
      rows = rows.concat(page.items || []);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    return rows;
  };

  /** A number for a table cell: grouped thousands, short fractions; "" for null. */
  SB.fmt = function (v) {
    if (v === null || v === undefined || v === "") return "";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v !== "number") return String(v);
    if (!isFinite(v)) return String(v);
    var a = Math.abs(v);
    if (Number.isInteger(v) || a >= 100000) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
    if (a >= 1) return v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    if (a === 0) return "0";
    return v.toPrecision(3);
  };

  SB.el = function (tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  };

  SB.symbolUrl = function (symbol) {
    return "/symbols/" + encodeURIComponent(symbol);
  };

  /** Instrument search as you type: `input` drives the list `list` (ul); a pick (click,
   * or Enter on the highlighted / first result) opens the symbol page. */
  SB.instrumentSearch = function (input, list, options) {
    var opts = options || {};
    var limit = opts.limit || 8;
    var seq = 0;
    var active = -1;
    var items = [];
    var timer = null;

    function highlight(i) {
      var lis = list.querySelectorAll("li[data-symbol]");
      lis.forEach(function (li, j) {
        li.classList.toggle("active", j === i);
        li.setAttribute("aria-selected", j === i ? "true" : "false");
      });
      active = i;
    }

    function render(found, q) {
      list.textContent = "";
      items = found;
      active = -1;
      found.forEach(function (it) {
        var li = SB.el("li", { role: "option", "data-symbol": it.symbol });
        var a = SB.el("a", { href: SB.symbolUrl(it.symbol) });
        a.appendChild(SB.el("b", null, it.symbol));
        a.appendChild(SB.el("span", { class: "name" }, it.name || ""));
        var meta = [it.exchange, it.is_etf ? "ETF" : null, it.source].filter(Boolean).join(" · ");
        if (opts.meta) a.appendChild(SB.el("span", { class: "meta" }, meta));
        li.appendChild(a);
        list.appendChild(li);
      });
      if (!found.length && q && opts.showEmpty !== false) {
        list.appendChild(SB.el("li", { class: "empty" }, "No instrument matches “" + q + "”."));
      }
      list.hidden = !list.children.length;
      if (opts.onResults) opts.onResults(found, q);
    }

    async function lookup() {
      var q = input.value.trim();
      var mine = ++seq;
      if (!q && !opts.listAll) {
        render([], q);
        return;
      }
      var url = "/api/v1/instruments?limit=" + limit + (q ? "&q=" + encodeURIComponent(q) : "");
      try {
        var page = await SB.getJSON(url);
        if (mine === seq) render(page.items || [], q);
      } catch (err) {
        if (mine !== seq) return;
        list.textContent = "";
        list.appendChild(SB.el("li", { class: "empty" }, "Search failed: " + err.message));
        list.hidden = false;
      }
    }

    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(lookup, opts.delay === undefined ? 120 : opts.delay);
    });
    input.addEventListener("keydown", function (ev) {
      var n = items.length;
      if (ev.key === "ArrowDown" && n) {
        ev.preventDefault();
        highlight((active + 1) % n);
      } else if (ev.key === "ArrowUp" && n) {
        ev.preventDefault();
        highlight((active - 1 + n) % n);
      } else if (ev.key === "Enter") {
        var q = input.value.trim().toUpperCase();
        var exact = items.filter(function (it) { return it.symbol === q; })[0];
        var pick = active >= 0 ? items[active] : exact || items[0];
        if (pick) {
          ev.preventDefault();
          window.location.assign(SB.symbolUrl(pick.symbol));
        }
      } else if (ev.key === "Escape") {
        list.hidden = true;
      }
    });
    if (opts.hideOnBlur) {
      input.addEventListener("blur", function () {
        setTimeout(function () { list.hidden = true; }, 150);
      });
      input.addEventListener("focus", function () {
        if (list.children.length) list.hidden = false;
      });
    }
    return { lookup: lookup };
  };

  /** Sort a server-rendered table by clicking its headers (numbers as numbers). */
  SB.sortableTable = function (table) {
    var heads = table.querySelectorAll("thead th");
    function key(td) {
      var t = (td ? td.textContent : "").trim();
      if (t === "" || t === "–") return null;
      var n = Number(t.replace(/,/g, ""));
      return isNaN(n) ? t : n;
    }
    heads.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) { return SB.compare(key(a.cells[col]), key(b.cells[col]), asc); });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  };

  /** Order of two cell values; nulls always last. */
  SB.compare = function (x, y, asc) {
    if (x === null || x === undefined) return y === null || y === undefined ? 0 : 1;
    if (y === null || y === undefined) return -1;
    var c;
    if (typeof x === "number" && typeof y === "number") c = x - y;
    else c = String(x).localeCompare(String(y));
    return asc ? c : -c;
  };

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.querySelector(".quick-search input[data-autocomplete]");
    if (box) {
      SB.instrumentSearch(box, box.parentNode.querySelector(".suggestions"), {
        limit: 8,
        hideOnBlur: true,
      });
    }
    document.querySelectorAll("table[data-sortable]").forEach(SB.sortableTable);
  });
})();
