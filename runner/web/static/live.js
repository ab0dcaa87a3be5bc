// A job's page while the job runs: one timer (a timeout set again after each answer, so requests
// never overlap) asks /ui/jobs/ID/live for what changed since the last look: the header fields, the
// metric points recorded since (added to the charts), the log's size (the log pane is read again
// only when it grew). The timer stops for good once the job has ended; a hidden tab asks nothing.
// The log follows new lines only while the reader is at its end; the search box shows the lines
// that contain a word.
(function () {
  "use strict";
  var EVERY = 2000;

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("live");
    if (!root) return;
    var job = root.dataset.job, box = document.getElementById("charts"), tools = document.getElementById("chart-tools");
    var tbody = document.querySelector("#best tbody"), logEl = document.getElementById("log");
    var charts = new window.RunnerCharts.Multiples(box), after = null, logSize = -1, query = "";

    function loadCharts() {
      return fetch(box.dataset.src).then(function (r) { return r.json(); }).then(function (d) {
        after = d.last_id;
        if (!d.groups.length) return;
        tools.hidden = false;
        charts.load(d);
        if (tbody) charts.table(tbody);
        else { // the first metrics of a job whose page showed none: a table above the charts
          var t = document.createElement("table"); t.className = "best"; t.id = "best";
          t.innerHTML = "<thead><tr><th>metric</th><th>latest</th><th>best</th><th>points</th></tr></thead><tbody></tbody>";
          root.insertBefore(t, root.children[1]); tbody = t.querySelector("tbody"); charts.table(tbody);
        }
      });
    }

    function atEnd(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 8; }
    function showLog(text) {
      var follow = atEnd(logEl);
      logEl.textContent = text;
      if (follow) logEl.scrollTop = logEl.scrollHeight;
    }
    function readLog() {
      var url = logEl.dataset.src + (query ? "?q=" + encodeURIComponent(query) : "");
      return fetch(url).then(function (r) { return r.text(); }).then(showLog);
    }

    function head(h) {
      Object.keys(h).forEach(function (k) {
        document.querySelectorAll('[data-live="' + k + '"]').forEach(function (el) {
          var text = k === "reason" ? (h[k] ? " — " + h[k] : "") : h[k];
          if (el.textContent !== text) el.textContent = text;
          if (k === "state") el.className = el.classList.contains("state") ? "state " + h[k] : el.className;
        });
      });
    }

    function tick() {
      if (document.hidden || after === null) { setTimeout(tick, EVERY); return; }
      fetch("/ui/jobs/" + job + "/live?after=" + after).then(function (r) { return r.json(); }).then(function (d) {
        head(d.head);
        var done = Promise.resolve();
        if (d.reload || !charts.append(d.points)) done = loadCharts();
        else { after = d.last_id; if (tbody && Object.keys(d.points).length) charts.table(tbody); }
        if (logEl && d.log_size !== undefined && d.log_size !== logSize) { logSize = d.log_size; done = done.then(readLog); }
        return done.then(function () {
          if (d.active) setTimeout(tick, EVERY);
          else root.dataset.ended = "1";  // the last look: the timer is not set again
        });
      }).catch(function () { setTimeout(tick, EVERY * 5); });  // the daemon restarting: ask again later
    }

    ["log-scale", "smooth"].forEach(function (id) {
      var el = document.getElementById(id);
      if (el) el.addEventListener("change", function () {
        charts.opts[id === "log-scale" ? "log" : "smooth"] = el.checked;
        if (charts.groups) charts.redraw();
      });
    });
    var search = document.getElementById("log-search");
    if (search && logEl) search.addEventListener("submit", function (e) {
      e.preventDefault();
      query = document.getElementById("log-q").value.trim();
      readLog().then(function () { logEl.scrollTop = logEl.scrollHeight; });
      document.getElementById("log-note").textContent = query ? "the lines that contain “" + query + "” (of the last 20,000)" : "the last 500 lines";
    });
    if (logEl) logEl.scrollTop = logEl.scrollHeight;
    loadCharts().then(function () { if (root.dataset.active) setTimeout(tick, EVERY); });
  });
})();
