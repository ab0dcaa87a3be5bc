// The job page's "Try the model" box: sends the chosen image, draws the answer on it (boxes,
// keypoints, labels) and lists it (a class and its top five, masks by class). Everything shown is
// set as text or drawn; nothing of the answer is read as HTML.
(function () {
  "use strict";
  const form = document.getElementById("infer-form");
  if (!form) return;
  const out = document.getElementById("infer-out"), canvas = document.getElementById("infer-canvas");
  const rows = document.getElementById("infer-table"), raw = document.getElementById("infer-json");
  const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"];

  function row(k, v) {
    const tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
    th.textContent = k; td.textContent = v; tr.append(th, td); rows.append(tr);
  }
  function pct(x) { return (100 * x).toFixed(1) + " %"; }

  function draw(img, ans) {
    const scale = Math.min(1, 640 / Math.max(img.width, img.height)) || 1;
    canvas.width = Math.round(img.width * scale); canvas.height = Math.round(img.height * scale);
    const g = canvas.getContext("2d");
    g.drawImage(img, 0, 0, canvas.width, canvas.height);
    g.lineWidth = 2; g.font = "12px sans-serif";
    (ans.boxes || []).forEach(function (b, i) {
      const c = COLOURS[(b.label_id || i) % COLOURS.length];
      g.strokeStyle = c; g.fillStyle = c;
      g.strokeRect(b.x1 * scale, b.y1 * scale, (b.x2 - b.x1) * scale, (b.y2 - b.y1) * scale);
      g.fillText((b.label || b.label_id || "") + " " + (b.confidence || 0).toFixed(2), b.x1 * scale + 2, Math.max(10, b.y1 * scale - 3));
    });
    (ans.keypoints || []).forEach(function (person, i) {
      g.fillStyle = COLOURS[i % COLOURS.length];
      (person.points || person || []).forEach(function (p) {
        const x = p.x !== undefined ? p.x : p[0], y = p.y !== undefined ? p.y : p[1];
        if (x !== undefined && y !== undefined) { g.beginPath(); g.arc(x * scale, y * scale, 3, 0, 2 * Math.PI); g.fill(); }
      });
    });
  }

  function show(file, ans) {
    rows.replaceChildren(); raw.textContent = JSON.stringify(ans, null, 2); out.hidden = false;
    if (ans.error) { row("error", ans.error); canvas.hidden = true; return; }
    if (ans.predicted_label !== undefined) row("class", ans.predicted_label + " (" + pct(ans.confidence || 0) + ")");
    (ans.top5_predictions || []).slice(1).forEach(function (p) { row("", p.label + " (" + pct(p.confidence) + ")"); });
    if (ans.boxes) row("boxes", String(ans.boxes.length));
    (ans.masks || []).forEach(function (m) { row("mask " + (m.label || m.label_id), pct(m.fraction || 0) + " of the image"); });
    if (ans.caption !== undefined) row("caption", ans.caption);
    (ans.warnings || []).forEach(function (w) { row("warning", w); });
    if (ans.inference_ms !== undefined) row("time", Math.round(ans.inference_ms) + " ms");
    const url = URL.createObjectURL(file), img = new Image();
    img.onload = function () { draw(img, ans); URL.revokeObjectURL(url); canvas.hidden = false; };
    img.onerror = function () { URL.revokeObjectURL(url); canvas.hidden = true; };
    img.src = url;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    const file = document.getElementById("infer-image").files[0];
    if (!file) return;
    const button = document.getElementById("infer-run");
    button.disabled = true; button.textContent = "running…";
    const t0 = Date.now(), note = button.nextElementSibling, was = note ? note.textContent : "";
    const ticker = setInterval(function () {  // most of a first answer is the job's env starting and its checkpoint loading
      if (note) note.textContent = "starting the job's env and loading its checkpoint as " + form.dataset.user + "… " + Math.round((Date.now() - t0) / 1000) + " s";
    }, 1000);
    fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (ans) { show(file, ans); })
      .catch(function (e) { show(file, { error: String(e) }); })
      .finally(function () {
        clearInterval(ticker);
        if (note) note.textContent = was + " (the last answer took " + Math.round((Date.now() - t0) / 100) / 10 + " s, with the env's start)";
        button.disabled = false; button.textContent = "infer";
      });
  });
})();
