/* Search page: the results follow the typing (/api/v1/instruments?q=); Enter or a click
 * opens the symbol page. An empty box lists instruments by symbol. */
(function () {
  "use strict";
  var SB = window.SB;
  document.addEventListener("DOMContentLoaded", function () {
    var input = document.getElementById("search-input");
    var list = document.getElementById("search-results");
    var status = document.getElementById("search-status");
    var search = SB.instrumentSearch(input, list, {
      limit: 50,
      meta: true,
      listAll: true,
      delay: 80,
      onResults: function (found, q) {
        var shown = found.length + (found.length === 50 ? "+" : "");
        status.textContent = q
          ? shown + " instrument" + (found.length === 1 ? "" : "s") + " for “" + q + "”. Enter opens " +
            (found.length ? found[0].symbol : "nothing") + "; ↑ ↓ choose."
          : "Instruments by symbol (" + shown + "). Type a symbol prefix or part of a name.";
        var url = q ? "/search?q=" + encodeURIComponent(q) : "/search";
        window.history.replaceState(null, "", url);
      },
    });
    document.getElementById("search-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var first = list.querySelector("li[data-symbol]");
      if (first) window.location.assign(SB.symbolUrl(first.getAttribute("data-symbol")));
    });
    search.lookup();
  });
})();
