// The catalog page: a filter over datasets (name, owner, description, column names) and
// opening a dataset's details when a link (or the address) points at it.
(function () {
  "use strict";
  const input = document.getElementById("catalog-filter");
  const shown = document.getElementById("catalog-shown");
  const rows = Array.from(document.querySelectorAll(".catalog-table tr.ds-row"));
  const details = Array.from(document.querySelectorAll("details.catalog-dataset"));

  function filter() {
    const words = (input.value || "").toLowerCase().split(/\s+/).filter(Boolean);
    const match = (el) => {
      const text = (el.dataset.search || "").toLowerCase();
      return words.every((w) => text.includes(w));
    };
    let n = 0;
    rows.forEach((tr) => {
      const ok = match(tr);
      tr.hidden = !ok;
      if (ok) n += 1;
    });
    details.forEach((d) => { d.hidden = !match(d); });
    document.querySelectorAll(".catalog-group").forEach((section) => {
      section.hidden = !section.querySelector("tr.ds-row:not([hidden])");
    });
    shown.textContent = words.length ? `${n} of ${rows.length} datasets` : "";
  }

  function openTarget() {
    const id = decodeURIComponent(location.hash.slice(1));
    const target = id && document.getElementById(id);
    if (target && target.tagName === "DETAILS") {
      target.hidden = false;
      target.open = true;
      target.scrollIntoView({ block: "start" });
    }
  }

  if (input) input.addEventListener("input", filter);
  window.addEventListener("hashchange", openTarget);
  openTarget();
})();
