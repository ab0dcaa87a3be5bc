// Charts for the job and compare pages: each reads GET /jobs/{id}/series (downsampled on the
// server) and draws it with uPlot. After drawing, the chart element carries data-points (points
// drawn) and data-ms (fetch to drawn), which the browser tests read.
(function () {
  "use strict";
  function size(el) { return { width: Math.max(320, el.clientWidth || 640), height: 300 }; }
  function note(text) { var n = document.getElementById("chart-note"); if (n) n.textContent = text; }

  function draw(el, x, ys, labels, axis) {
    el.innerHTML = "";
    var series = [{ label: axis }].concat(labels.map(function (l, i) {
      var colours = ["#1f6feb", "#d92d20", "#079455", "#dc6803", "#7a5af8", "#0e9384", "#c11574", "#475467", "#b54708", "#175cd3"];
      return { label: l, stroke: colours[i % colours.length], width: 1.5, spanGaps: true };
    }));
    var opts = Object.assign(size(el), { series: series, scales: { x: { time: false } }, axes: [{ label: axis }, {}] });
    return new uPlot(opts, [x].concat(ys), el);
  }

  function single(el, name) {
    var t0 = performance.now();
    fetch(el.dataset.series + encodeURIComponent(name) + "&points=4000").then(function (r) { return r.json(); }).then(function (s) {
      draw(el, s.x, [s.y], [s.name], s.axis);
      el.dataset.points = s.points; el.dataset.total = s.total; el.dataset.ms = Math.round(performance.now() - t0);
      note(s.total + " points stored" + (s.downsampled ? ", " + s.points + " drawn (min and max per bucket)" : "") + ", by " + s.axis + ".");
    });
  }

  function compare(el) {
    var ids = el.dataset.compare.split(","), metric = el.dataset.metric, t0 = performance.now();
    Promise.all(ids.map(function (id) {
      return fetch("/jobs/" + id + "/series?name=" + encodeURIComponent(metric) + "&points=2000").then(function (r) { return r.json(); });
    })).then(function (all) {
      // one x axis: the union of every job's x values; a job without a point there draws a gap
      var xs = Array.from(new Set([].concat.apply([], all.map(function (s) { return s.x; })))).sort(function (a, b) { return a - b; });
      var ys = all.map(function (s) {
        var at = new Map(); s.x.forEach(function (x, i) { at.set(x, s.y[i]); });
        return xs.map(function (x) { return at.has(x) ? at.get(x) : null; });
      });
      draw(el, xs, ys, ids, all.length ? all[0].axis : "x");
      all.forEach(function (s) {
        var cell = document.querySelector('td.latest[data-job="' + s.job + '"]');
        if (cell && s.y.length) cell.textContent = s.y[s.y.length - 1];
      });
      el.dataset.points = all.map(function (s) { return s.points; }).join(",");
      el.dataset.ms = Math.round(performance.now() - t0);
      note(metric + " of " + ids.length + " jobs.");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("chart"), pick = document.getElementById("metric");
    if (el && pick) {
      single(el, pick.value);
      pick.addEventListener("change", function () { single(el, pick.value); });
    }
    var cmp = document.getElementById("compare-chart");
    if (cmp) compare(cmp);
  });
})();
