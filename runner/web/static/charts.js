// Charts for the job and compare pages, drawn with uPlot (vendored).
//
// Job page: every metric as small multiples, one chart per quantity with its splits overlaid
// (train_loss and val_loss on one chart), read in one request (/ui/jobs/ID/charts, downsampled on
// the server) and extended by live.js with the points recorded since. Each series keeps at most
// 2 x MAX points in the page: past that it is downsampled again (min and max per bucket, as the
// server does), so a page left open for hours holds no more than at its start. A drag over a chart
// zooms it; where its series are reduced, the range's own points come from the server (every one
// where they are few: GET /jobs/ID/series?lo=&hi=); a double click shows the whole again.
// Compare page: one metric of up to ten jobs on a large chart (the metric box picks it), then every
// metric they share as small multiples; legends by job name; log scale for all.
// Each drawn chart carries data-points (points drawn) and data-total (points stored), which the
// browser tests read; #charts carries data-updates (live updates applied).
(function () {
  "use strict";
  var COLOURS = ["#1f6feb", "#d92d20", "#079455", "#dc6803", "#7a5af8", "#0e9384", "#c11574", "#475467", "#b54708", "#175cd3"];
  var INTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7];
  var MAX = 1000;

  function downsample(x, y, points) {
    var n = x.length;
    if (n <= points) return [x, y];
    var buckets = Math.floor((points - 2) / 2), size = (n - 2) / buckets, ox = [x[0]], oy = [y[0]];
    for (var b = 0; b < buckets; b++) {
      var lo = 1 + Math.floor(b * size), hi = 1 + Math.floor((b + 1) * size), iMin = -1, iMax = -1;
      for (var i = lo; i < hi; i++) {
        if (y[i] === null) continue;
        if (iMin < 0 || y[i] < y[iMin]) iMin = i;
        if (iMax < 0 || y[i] > y[iMax]) iMax = i;
      }
      if (iMin < 0) continue;
      var first = Math.min(iMin, iMax), second = Math.max(iMin, iMax);
      ox.push(x[first]); oy.push(y[first]);
      if (second !== first) { ox.push(x[second]); oy.push(y[second]); }
    }
    ox.push(x[n - 1]); oy.push(y[n - 1]);
    return [ox, oy];
  }

  function smooth(y, weight) {  // exponential moving average, as TensorBoard's slider does
    var out = new Array(y.length), last = null;
    for (var i = 0; i < y.length; i++) {
      if (y[i] === null) { out[i] = null; continue; }
      last = last === null ? y[i] : last * weight + y[i] * (1 - weight);
      out[i] = last;
    }
    return out;
  }

  // one x axis for several series: the union of their x values; a series without a point there draws a gap
  function align(list) {
    var seen = new Set(), xs = [];
    list.forEach(function (s) { s.x.forEach(function (v) { if (!seen.has(v)) { seen.add(v); xs.push(v); } }); });
    xs.sort(function (a, b) { return a - b; });
    if (list.length === 1) return [xs, list[0].x.length === xs.length ? list[0].y.slice() : fill(list[0], xs)];
    return [xs].concat(list.map(function (s) { return fill(s, xs); }));
  }
  function fill(s, xs) {
    var at = new Map();
    s.x.forEach(function (v, i) { at.set(v, s.y[i]); });
    return xs.map(function (v) { return at.has(v) ? at.get(v) : null; });
  }

  function transform(data, opts) {
    return data.map(function (col, i) {
      if (i === 0) return col;
      var y = opts.smooth ? smooth(col, 0.6) : col;
      return opts.log ? y.map(function (v) { return v !== null && v > 0 ? v : null; }) : y;
    });
  }

  // onZoom(lo, hi): called when the reader drags a range of the x axis (uPlot zooms what it holds
  // at once; the caller may then read that range's points from the server)
  function plot(el, title, axis, labels, data, opts, height, onZoom) {
    var series = [{ label: axis }].concat(labels.map(function (l, i) {
      return { label: l, stroke: COLOURS[i % COLOURS.length], width: 1.5, spanGaps: true };
    }));
    var o = { width: Math.max(280, el.clientWidth || 420), height: height || 220, title: title, series: series,
              scales: { x: { time: false }, y: { distr: opts.log ? 3 : 1 } },
              axes: [{ label: axis, incrs: INTS, values: function (u, v) { return v.map(String); } }, {}] };
    if (onZoom) o.hooks = { setScale: [function (u, key) {
      var xs = u.data[0], min = u.scales.x.min, max = u.scales.x.max;
      // a zoom narrows the axis inside the data; setData and a double click set it to the data's ends
      if (key === "x" && xs.length && min !== null && (min > xs[0] || max < xs[xs.length - 1])) onZoom(min, max);
    }] };
    return new uPlot(o, transform(data, opts), el);
  }

  // -- the job page's small multiples ---------------------------------------------------------------
  function Multiples(root) {
    this.root = root;
    this.opts = { log: false, smooth: false };
    this.series = {};  // name -> {axis, x, y, total, lower}
    this.charts = [];  // {el, names, axis, u}
    this.updates = 0;
  }
  Multiples.prototype.load = function (data) {
    var self = this;
    this.job = data.job;
    this.series = {};
    Object.keys(data.series).forEach(function (n) { var s = data.series[n]; self.series[n] = { axis: s.axis, x: s.x, y: s.y, total: s.total, lower: s.lower }; });
    this.groups = data.groups;
    this.build();
  };
  Multiples.prototype.build = function () {
    var self = this;
    this.charts.forEach(function (c) { c.u.destroy(); });
    this.charts = [];
    this.root.textContent = "";
    this.groups.forEach(function (g) {
      var byAxis = {};  // a quantity's splits share a chart when they share an x axis (step, epoch)
      g.names.forEach(function (n) { var a = self.series[n].axis; (byAxis[a] = byAxis[a] || []).push(n); });
      var axes = Object.keys(byAxis);
      axes.forEach(function (a) {
        var el = document.createElement("div");
        el.className = "chart small";
        el.dataset.names = byAxis[a].join(",");
        self.root.appendChild(el);
        var c = { el: el, names: byAxis[a], axis: a, title: axes.length > 1 ? g.title + " (by " + a + ")" : g.title };
        c.u = plot(el, c.title, a, c.names, self.data(c), self.opts, null, function (lo, hi) { self.zoom(c, lo, hi); });
        el.addEventListener("dblclick", function () { if (c.zoom) self.unzoom(c); });
        self.mark(c);
        self.charts.push(c);
      });
    });
    this.root.dataset.charts = this.charts.length;
  };
  Multiples.prototype.data = function (c) {
    var src = c.zoom ? c.zoom.series : this.series;
    return align(c.names.map(function (n) { return src[n]; }));
  };
  // A zoomed chart of reduced series: the range's points from the server (every one where they are
  // few, reduced again where many: GET /jobs/ID/series?lo=&hi=); a double click shows the whole again.
  // A zoomed chart keeps its range while live points arrive (they show when it is unzoomed).
  Multiples.prototype.zoom = function (c, lo, hi) {
    var self = this;
    if (c.names.every(function (n) { return self.series[n].x.length >= self.series[n].total; })) return;  // it holds every point
    var want = c.zoomWant = lo + "," + hi;
    Promise.all(c.names.map(function (n) {
      return fetch("/jobs/" + encodeURIComponent(self.job) + "/series?name=" + encodeURIComponent(n) + "&points=" + MAX + "&lo=" + lo + "&hi=" + hi)
        .then(function (r) { return r.json(); });
    })).then(function (got) {
      if (c.zoomWant !== want || self.charts.indexOf(c) < 0) return;  // zoomed again, or redrawn, meanwhile
      c.zoom = { series: {} };
      got.forEach(function (s, i) { c.zoom.series[c.names[i]] = { x: s.x, y: s.y }; });
      c.u.setData(transform(self.data(c), self.opts));
      c.el.dataset.zoom = want;
      c.el.dataset.zoomPoints = got.map(function (s) { return s.x.length; }).join(",");
    });
  };
  Multiples.prototype.unzoom = function (c) {
    c.zoom = null; c.zoomWant = null;
    delete c.el.dataset.zoom; delete c.el.dataset.zoomPoints;
    c.u.setData(transform(this.data(c), this.opts));
    this.mark(c);
  };
  Multiples.prototype.mark = function (c) {
    var self = this;
    c.el.dataset.points = c.names.map(function (n) { return self.series[n].x.length; }).join(",");
    c.el.dataset.total = c.names.map(function (n) { return self.series[n].total; }).join(",");
  };
  Multiples.prototype.redraw = function () { this.build(); };
  // New points from a live refresh: {name: {step, epoch, y}}. False when the page must read its charts
  // whole (a new metric, or points that do not continue the series' x axis).
  Multiples.prototype.append = function (points) {
    var self = this, touched = new Set();
    var names = Object.keys(points);
    for (var k = 0; k < names.length; k++) {
      var n = names[k], s = this.series[n], p = points[n];
      if (!s) return false;
      var xs = s.axis === "step" ? p.step : s.axis === "epoch" ? p.epoch : p.y.map(function (_, i) { return s.total + i; });
      var last = s.x.length ? s.x[s.x.length - 1] : -Infinity;
      for (var i = 0; i < xs.length; i++) {
        if (xs[i] === null || xs[i] === undefined || (s.axis === "step" && xs[i] <= last)) return false;
        last = xs[i];
      }
    }
    names.forEach(function (n) {
      var s = self.series[n], p = points[n];
      var xs = s.axis === "step" ? p.step : s.axis === "epoch" ? p.epoch : p.y.map(function (_, i) { return s.total + i; });
      s.x = s.x.concat(xs); s.y = s.y.concat(p.y); s.total += p.y.length;
      if (s.x.length > 2 * MAX) { var d = downsample(s.x, s.y, MAX); s.x = d[0]; s.y = d[1]; }
      touched.add(n);
    });
    this.charts.forEach(function (c) {
      if (c.names.some(function (n) { return touched.has(n); })) { if (!c.zoom) c.u.setData(transform(self.data(c), self.opts)); self.mark(c); }
    });
    this.updates += 1;
    this.root.dataset.updates = this.updates;
    return true;
  };
  // the best/latest table at the top of the page, from the series held (min and max per bucket keep the extremes)
  Multiples.prototype.table = function (tbody) {
    var self = this;
    Object.keys(this.series).forEach(function (n) {
      var s = self.series[n], best = null, latest = null;
      s.y.forEach(function (v) { if (v !== null) { latest = v; if (best === null || (s.lower ? v < best : v > best)) best = v; } });
      var row = tbody.querySelector('tr[data-metric="' + CSS.escape(n) + '"]');
      if (!row) {
        row = document.createElement("tr"); row.dataset.metric = n;
        ["th", "td", "td", "td"].forEach(function (t, i) { var c = document.createElement(t); c.className = ["", "latest", "best", "n"][i]; row.appendChild(c); });
        row.firstChild.textContent = n;
        tbody.appendChild(row);
      }
      row.querySelector(".latest").textContent = latest === null ? "" : fmt(latest);
      row.querySelector(".best").textContent = best === null ? "" : fmt(best);
      row.querySelector(".n").textContent = s.total;
    });
  };
  function fmt(v) { return Number(v.toPrecision(6)).toString(); }

  // -- compare ------------------------------------------------------------------------------------
  function compare(el) {
    var ids = el.dataset.compare.split(","), labels = JSON.parse(el.dataset.labels), metric = el.dataset.metric, t0 = performance.now();
    var opts = { log: false, smooth: false }, u = null, all = null;
    var logBox = document.getElementById("log-scale");
    var grid = document.getElementById("compare-all"), shared = null, small = [];
    function draw() {
      if (u) u.destroy();
      el.textContent = "";
      u = plot(el, metric, all.length ? all[0].axis : "x", labels, align(all), opts, 320);
    }
    // every shared metric as small multiples, one chart per metric with every job on it
    function drawAll() {
      small.forEach(function (c) { c.destroy(); });
      small = [];
      grid.textContent = "";
      shared.groups.forEach(function (g) {
        g.names.forEach(function (n) {
          var per = shared.series[n], have = [], names = [];
          per.forEach(function (s, i) { if (s) { have.push(s); names.push(shared.labels[i]); } });
          if (!have.length) return;
          var axes = new Set(have.map(function (s) { return s.axis; }));
          var c = document.createElement("div");
          c.className = "chart small";
          c.dataset.name = n;
          c.dataset.jobs = have.length;
          grid.appendChild(c);
          small.push(plot(c, n + (axes.size > 1 ? " (x: " + Array.from(axes).join(" / ") + ")" : ""), have[0].axis, names, align(have), opts));
        });
      });
      grid.dataset.charts = small.length;
    }
    if (grid) {
      fetch("/ui/compare/charts?ids=" + encodeURIComponent(grid.dataset.ids)).then(function (r) { return r.json(); })
        .then(function (got) { shared = got; drawAll(); });
    }
    Promise.all(ids.map(function (id) {
      return fetch("/jobs/" + id + "/series?name=" + encodeURIComponent(metric) + "&points=2000").then(function (r) { return r.json(); });
    })).then(function (got) {
      all = got;
      draw();
      all.forEach(function (s) {
        var cell = document.querySelector('td.latest[data-job="' + s.job + '"]');
        if (cell && s.y.length) cell.textContent = fmt(s.y[s.y.length - 1]);
      });
      el.dataset.points = all.map(function (s) { return s.points; }).join(",");
      el.dataset.ms = Math.round(performance.now() - t0);
      var note = document.getElementById("chart-note");
      if (note) note.textContent = metric + " of " + ids.length + (ids.length === 1 ? " job." : " jobs.");
    });
    if (logBox) logBox.addEventListener("change", function () {
      opts.log = logBox.checked;
      if (all) { draw(); el.dataset.log = opts.log ? "1" : "0"; }
      if (shared) drawAll();
    });
  }

  window.RunnerCharts = { Multiples: Multiples, downsample: downsample, MAX: MAX };
  document.addEventListener("DOMContentLoaded", function () {
    var cmp = document.getElementById("compare-chart");
    if (cmp) compare(cmp);
  });
})();
