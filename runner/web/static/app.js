// The dashboard's own behaviour, kept in a file (the pages' Content-Security-Policy runs no inline
// script and htmx runs no hx-on code):
// - a form with data-confirm (cancel, retry) asks before it is sent;
// - the runs table's boxes stay ticked when its rows are refreshed every 3 s, and "compare" is
//   offered once two are ticked (the boxes are a plain GET form: without JavaScript it still works).
(function () {
  "use strict";
  var picked = new Set();

  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (f && f.dataset && f.dataset.confirm && !window.confirm(f.dataset.confirm)) e.preventDefault();
  }, true);

  function sync() {
    document.querySelectorAll("input.pick").forEach(function (b) { b.checked = picked.has(b.value); });
    var n = document.getElementById("picked");
    if (n) n.textContent = picked.size ? picked.size + " ticked" : "";
    var go = document.getElementById("compare-picked");
    if (go) go.disabled = picked.size < 1;
  }
  document.addEventListener("change", function (e) {
    var b = e.target;
    if (!b.classList || !b.classList.contains("pick")) return;
    if (b.checked) picked.add(b.value); else picked.delete(b.value);
    sync();
  });
  document.addEventListener("htmx:afterSwap", sync);
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input.pick:checked").forEach(function (b) { picked.add(b.value); });
    sync();
  });
})();
