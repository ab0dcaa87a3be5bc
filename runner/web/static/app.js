// The dashboard's own behaviour, kept in a file (the pages' Content-Security-Policy runs no inline
// script and htmx runs no hx-on code): a log pane stays scrolled to its end as lines arrive.
(function () {
  "use strict";
  document.addEventListener("htmx:afterSwap", function (e) {
    var el = e.detail && e.detail.target;
    if (el && el.id === "log") el.scrollTop = el.scrollHeight;
  });
})();
