// medvlbench pages: sortable tables, a filter box and tabs. Plain JavaScript, no dependencies, works from
// file:// and any static host. Data is only read through textContent and attributes, never written as
// HTML, so model output shown in the tables stays text.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) return null;
    var raw = cell.getAttribute("data-value");
    if (raw === null) return cell.textContent.trim().toLowerCase();
    if (raw === "") return null;
    var x = parseFloat(raw);
    return isNaN(x) ? raw.toLowerCase() : x;
  }

  function compare(a, b) {
    if (a === b) return 0;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b));
  }

  // Click a header: best first (respecting data-direction), a second click reverses. Empty cells stay last.
  function sortTable(th) {
    var table = th.closest("table");
    var body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var direction = th.getAttribute("data-direction"); // "higher", "lower" or null (text)
    var current = th.getAttribute("aria-sort");
    var ascending;
    if (current === "ascending") ascending = false;
    else if (current === "descending") ascending = true;
    else ascending = direction !== "higher";
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row, i) { return { row: row, key: cellValue(row, index), i: i }; });
    keyed.sort(function (x, y) {
      if (x.key === null && y.key === null) return x.i - y.i;
      if (x.key === null) return 1;
      if (y.key === null) return -1;
      var c = compare(x.key, y.key);
      return (ascending ? c : -c) || x.i - y.i;
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
    Array.prototype.forEach.call(th.parentNode.children, function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  function applyFilter(input) {
    var query = input.value.trim().toLowerCase();
    var scope = document.querySelectorAll(input.getAttribute("data-filter") || "table.sortable");
    Array.prototype.forEach.call(scope, function (table) {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.hidden = query !== "" && row.textContent.toLowerCase().indexOf(query) === -1;
      });
    });
  }

  function showTab(name) {
    var found = false;
    Array.prototype.forEach.call(document.querySelectorAll("[data-tab-panel]"), function (panel) {
      var on = panel.getAttribute("data-tab-panel") === name;
      panel.hidden = !on;
      found = found || on;
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-tab]"), function (tab) {
      tab.setAttribute("aria-selected", tab.getAttribute("data-tab") === name ? "true" : "false");
    });
    return found;
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable thead th"), function (th) {
      th.addEventListener("click", function () { sortTable(th); });
      th.tabIndex = 0;
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortTable(th); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("input[data-filter]"), function (input) {
      input.addEventListener("input", function () { applyFilter(input); });
    });
    var tabs = document.querySelectorAll("[data-tab]");
    Array.prototype.forEach.call(tabs, function (tab) {
      tab.addEventListener("click", function (e) {
        e.preventDefault();
        showTab(tab.getAttribute("data-tab"));
        history.replaceState(null, "", "#tab-" + tab.getAttribute("data-tab"));
      });
    });
    if (tabs.length) {
      var wanted = location.hash.indexOf("#tab-") === 0 ? decodeURIComponent(location.hash.slice(5)) : null;
      if (!wanted || !showTab(wanted)) showTab(tabs[0].getAttribute("data-tab"));
    }
  });
})();
