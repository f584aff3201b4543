// fmjax report page: builds the page from the JSON block #fmjax-data (fmjax/report/page.py).
// Plain JavaScript, no libraries, no requests: pictures are data: URIs, charts are SVG.
(function () {
  "use strict";
  const started = performance.now();
  const DATA = JSON.parse(document.getElementById("fmjax-data").textContent);
  const app = document.getElementById("app");
  const SVG = "http://www.w3.org/2000/svg";

  // ---------------------------------------------------------------- helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
    for (const c of children) if (c) node.append(c);
    return node;
  }
  // Python's f"{x:.{d}f}": JavaScript's toFixed rounds exact ties up, Python to the even digit.
  function pyFixed(x, d) {
    if (!isFinite(x)) return String(x);
    const full = Math.abs(x).toFixed(100);
    const dot = full.indexOf(".");
    const rest = full.slice(dot + 1 + d);
    if (/^50*$/.test(rest)) {
      const kept = full.slice(0, dot + 1 + d).replace(/\.$/, "");
      if (Number(kept.slice(-1)) % 2 === 0) return (x < 0 ? "-" : "") + kept;
    }
    return x.toFixed(d);
  }
  const pct = (v) => (v === null || v === undefined || !isFinite(v) ? "-" : pyFixed(100 * v, 1));
  // Python's f"{x:.4g}"-like short numbers for thresholds and axes.
  function short(x) {
    if (x === null || x === undefined || !isFinite(x)) return "-";
    if (x === 0) return "0";
    const a = Math.abs(x);
    if (a >= 1e-3 && a < 1e5) return String(Number(x.toPrecision(4)));
    return x.toExponential(3).replace(/\.?0+e/, "e");
  }
  // Index of the first element of the ascending array `a` for which pred(a[i]) holds.
  function firstIndex(a, pred) {
    let lo = 0, hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (pred(a[mid])) hi = mid; else lo = mid + 1;
    }
    return lo;
  }
  function loadImage(uri) {
    return new Promise((resolve, reject) => {
      const im = new Image();
      im.onload = () => resolve(im);
      im.onerror = () => reject(new Error("an embedded picture could not be decoded"));
      im.src = uri;
    });
  }
  // The red channel of an embedded greyscale PNG: {w, h, v: Uint8ClampedArray}.
  async function greyLevels(uri) {
    const im = await loadImage(uri);
    const c = document.createElement("canvas");
    c.width = im.naturalWidth; c.height = im.naturalHeight;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(im, 0, 0);
    const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
    const v = new Uint8ClampedArray(c.width * c.height);
    for (let i = 0; i < v.length; i++) v[i] = rgba[4 * i];
    return { w: c.width, h: c.height, v };
  }

  function linksList(links) {
    if (!links || !links.length) return null;
    return el("p", { class: "links" }, "Files of this report: ",
      ...links.flatMap((l, i) => [i ? ", " : "", el("a", { href: l, text: l })]));
  }

  // ---------------------------------------------------------------- charts (SVG)
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const step0 = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
    return out;
  }
  function logTicks(lo, hi) {
    const out = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      const t = Math.pow(10, e);
      if (t >= lo * 0.999 && t <= hi * 1.001) out.push(t);
    }
    return out.length >= 2 ? out : [lo, hi];
  }
  // A plot frame: returns {node, x(v), y(v), layer} with axes, ticks and labels drawn.
  function frame(o) {
    const W = o.width || 360, H = o.height || 240, L = 52, R = 12, T = 22, B = 40;
    const sx = o.logx ? Math.log10 : (v) => v, sy = o.logy ? Math.log10 : (v) => v;
    const x0 = sx(o.xmin), x1 = sx(o.xmax), y0 = sy(o.ymin), y1 = sy(o.ymax);
    const x = (v) => L + ((sx(v) - x0) / ((x1 - x0) || 1)) * (W - L - R);
    const y = (v) => H - B - ((sy(v) - y0) / ((y1 - y0) || 1)) * (H - T - B);
    const node = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart" });
    node.append(svg("text", { x: L, y: 14, class: "chart-title" }, document.createTextNode(o.title || "")));
    node.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot-area" }));
    const xt = o.xticks ? o.xticks.map((t) => t[0]) : o.logx ? logTicks(o.xmin, o.xmax) : niceTicks(o.xmin, o.xmax, 4);
    const xname = new Map((o.xticks || []).map((t) => [t[0], t[1]]));
    const yt = o.logy ? logTicks(o.ymin, o.ymax) : niceTicks(o.ymin, o.ymax, 4);
    for (const t of xt) {
      node.append(svg("line", { x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4, class: "tick" }));
      node.append(svg("text", { x: x(t), y: H - B + 15, class: "tick-label", "text-anchor": "middle" }, document.createTextNode(xname.has(t) ? String(xname.get(t)).slice(0, 14) : short(t))));
    }
    for (const t of yt) {
      node.append(svg("line", { x1: L - 4, x2: L, y1: y(t), y2: y(t), class: "tick" }));
      node.append(svg("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), class: "grid" }));
      node.append(svg("text", { x: L - 6, y: y(t) + 3, class: "tick-label", "text-anchor": "end" }, document.createTextNode(short(t))));
    }
    node.append(svg("text", { x: (L + W - R) / 2, y: H - 6, class: "axis-label", "text-anchor": "middle" }, document.createTextNode(o.xlabel || "")));
    node.append(svg("text", { x: 12, y: (T + H - B) / 2, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})` }, document.createTextNode(o.ylabel || "")));
    const layer = svg("g");
    node.append(layer);
    return { node, x, y, layer, W, H, L, R, T, B };
  }
  function polyline(f, points, cls) {
    return svg("polyline", { points: points.map(([a, b]) => `${f.x(a).toFixed(2)},${f.y(b).toFixed(2)}`).join(" "), class: cls });
  }
  function titled(node, text) {
    node.append(svg("title", {}, document.createTextNode(text)));
    return node;
  }

  // ---------------------------------------------------------------- evaluation page
  function colourTable(hex) {
    const out = new Uint8ClampedArray(768);
    for (let i = 0; i < 768; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
    return out;
  }

  function buildEvaluation() {
    const LUT = colourTable(DATA.colours);
    const ALPHA = DATA.alpha;
    app.innerHTML = "";
    app.append(el("h1", { text: DATA.title }));
    const settings = el("table", { class: "settings", id: "settings" });
    for (const [k, v] of DATA.settings) settings.append(el("tr", {}, el("th", { text: k }), el("td", { text: v })));
    const header = el("div", { class: "header" }, settings);
    app.append(header);
    const metrics = el("table", { class: "metrics", id: "metrics-table" },
      el("thead", {}, el("tr", {}, el("th", { text: "Category" }), ...DATA.columns.map((c) => el("th", { text: c })))));
    const body = el("tbody");
    for (const row of DATA.metrics) {
      body.append(el("tr", { "data-category": row.name, class: row.name === "Mean" ? "mean" : null },
        el("td", { text: row.name }), ...row.cells.map((c) => el("td", { text: c }))));
    }
    metrics.append(body);
    header.append(el("div", {}, metrics, el("p", { class: "note", text: `${DATA.columns_note} Mean = average over categories (the numbers of metrics.json).` })));
    (DATA.groups || []).forEach((g, gi) => {
      const table = el("table", { class: "metrics", id: `group-table-${gi}` },
        el("thead", {}, el("tr", {}, el("th", { text: "Category" }), ...g.columns.map((c) => el("th", { text: c })))));
      const rows = el("tbody");
      for (const row of g.rows) rows.append(el("tr", {}, ...row.map((c) => el("td", { text: c }))));
      table.append(rows);
      app.append(el("h2", { text: `${g.title}, with the normal test images` }), table);
    });
    app.append(linksList(DATA.links));
    if (DATA.categories.length > 1) {
      app.append(el("nav", {}, "Categories: ", ...DATA.categories.flatMap((c, i) => [i ? " \u00b7 " : "", el("a", { href: `#cat-${i}`, text: c.name })])));
    }
    const cards = [];  // every card, by image index
    const cache = new Map();  // decoded pictures and overlays, by kind and image index
    let modal;  // the large view
    const observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const card = cards[Number(e.target.dataset.index)];
        card.visible = e.isIntersecting;
        if (card.visible && card.dirty) drawCard(card);
      }
    }, { rootMargin: "300px" });
    DATA.categories.forEach((cat, ci) => buildCategory(cat, ci));
    buildModal();

    // ---- one category: threshold, charts, gallery
    function buildCategory(cat, ci) {
      const members = [];
      DATA.images.forEach((im, i) => { if (im.c === ci) members.push(i); });
      const section = el("section", { id: `cat-${ci}`, class: "category", "data-name": cat.name });
      section.append(el("h2", { text: `${cat.name}: ${members.length} test images` }));
      app.append(section);
      if (!members.length) return;
      const scores = members.map((i) => DATA.images[i].score);
      const u = Array.from(new Set(scores)).sort((a, b) => a - b);  // distinct, ascending
      const m = u.length;
      const P = members.filter((i) => DATA.images[i].label === 1).length, N = members.length - P;
      // anomalous and normal images at or above u[k], k = 0..m
      const posAt = new Array(m + 1).fill(0), negAt = new Array(m + 1).fill(0);
      for (const i of members) {
        const k = firstIndex(u, (v) => v >= DATA.images[i].score);
        if (DATA.images[i].label === 1) posAt[k]++; else negAt[k]++;
      }
      for (let k = m - 1; k >= 0; k--) { posAt[k] += posAt[k + 1]; negAt[k] += negAt[k + 1]; }
      const position = (mark) => firstIndex(u, mark.strict ? (v) => v > mark.threshold : (v) => v >= mark.threshold);
      const state = { k: 0, overlay: true };
      const first = cat.marks.find((mk) => mk.kind === "calibrated") || cat.marks.find((mk) => mk.kind === "f1");
      state.k = first ? position(first) : Math.floor(m / 2);

      // threshold panel
      const slider = el("input", { type: "range", min: 0, max: m, step: 1, value: state.k, class: "threshold", "aria-label": `threshold for ${cat.name}` });
      const readout = el("span", { class: "readout" });
      const stat = (name) => el("td", { "data-stat": name });
      const stats = {};
      const statTable = el("table", { class: "stats" });
      const rows = [["false-alarm rate (%)", "far"], ["recall (%)", "recall"], ["precision (%)", "precision"], ["F1 (%)", "f1"], ["flagged", "flagged"]];
      for (const [label, key] of rows) { stats[key] = stat(key); statTable.append(el("tr", {}, el("th", { text: label }), stats[key])); }
      const confusion = el("table", { class: "confusion" },
        el("tr", {}, el("th"), el("th", { text: "flagged" }), el("th", { text: "passed" })),
        el("tr", {}, el("th", { text: `anomalous (${P})` }), stats.tp = stat("tp"), stats.fn = stat("fn")),
        el("tr", {}, el("th", { text: `normal (${N})` }), stats.fp = stat("fp"), stats.tn = stat("tn")));
      const ticks = el("div", { class: "ticks" });
      const jumps = el("div", { class: "jumps" });
      for (const mark of cat.marks) {
        const k = position(mark);
        ticks.append(el("span", { class: `tick-mark ${mark.kind}`, style: `left:${m ? (100 * k) / m : 0}%`, title: `${mark.label}: ${short(mark.threshold)}` }));
        const stated = mark.kind === "calibrated" ? ` (report: ${mark.false_alarm_rate}% false alarms, ${mark.recall}% recall)` : "";
        jumps.append(el("button", { type: "button", class: `jump ${mark.kind}`, "data-kind": mark.kind, "data-threshold": mark.threshold,
          text: `${mark.label}: ${short(mark.threshold)}${stated}`, onclick: () => setK(k) }));
      }
      const panel = el("div", { class: "panel" },
        el("h3", { text: "Threshold (test split)" }),
        el("div", { class: "slider-box" }, slider, ticks), readout, jumps,
        el("div", { class: "stat-row" }, statTable, confusion));
      if (cat.pixel_words) panel.append(el("p", { class: "note", text: `Cyan outlines on flagged images: their pixels at or above the ${cat.pixel_words}. Lime: the ground truth.` }));
      else panel.append(el("p", { class: "note", text: "Lime outlines: the ground truth. No pixel threshold (no calibration, no masks), so no predicted region is drawn." }));
      if (cat.scale) {
        const bar = document.createElement("canvas");
        bar.width = 256; bar.height = 10; bar.className = "colour-bar";
        const bctx = bar.getContext("2d"), bd = bctx.createImageData(256, 10);
        for (let x = 0; x < 256; x++) for (let y = 0; y < 10; y++) { const o = 4 * (y * 256 + x); bd.data[o] = LUT[3 * x]; bd.data[o + 1] = LUT[3 * x + 1]; bd.data[o + 2] = LUT[3 * x + 2]; bd.data[o + 3] = 255; }
        bctx.putImageData(bd, 0, 0);
        panel.append(el("div", { class: "scale" }, el("span", { text: short(cat.scale.vmin) }), bar, el("span", { text: short(cat.scale.vmax) }), el("div", { class: "note", text: `Heatmap overlay: ${cat.scale.words}, as in the PNG grids.` })));
      }
      const charts = el("div", { class: "charts" });
      section.append(el("div", { class: "top" }, panel, charts));

      // charts: histogram, ROC, PR
      const marked = cat.marks.map((mk) => mk.threshold);  // the range holds the marks too
      const lo = Math.min(u[0], ...marked), hi = Math.max(u[m - 1], ...marked);
      const logx = lo > 0 && hi / lo > Math.pow(10, 1.5);
      const bins = 30;
      const edges = [];
      for (let b = 0; b <= bins; b++) edges.push(logx ? lo * Math.pow(hi / lo, b / bins) : lo + ((hi - lo || 1) * b) / bins);
      const binOf = (v) => Math.min(bins - 1, Math.max(0, firstIndex(edges, (e) => e > v) - 1));
      const counts = [new Array(bins).fill(0), new Array(bins).fill(0)];
      for (const i of members) counts[DATA.images[i].label][binOf(DATA.images[i].score)]++;
      const frac = counts.map((c, g) => c.map((v) => v / Math.max(1, g ? P : N)));
      const hist = frame({ title: "image scores (fraction of each group)", xmin: edges[0], xmax: edges[bins], logx, ymin: 0, ymax: Math.max(1e-9, ...frac[0], ...frac[1]) * 1.05, xlabel: "image score" + (logx ? " (log)" : ""), ylabel: "fraction", width: 340 });
      ["normal", "anomalous"].forEach((g, gi) => {
        for (let b = 0; b < bins; b++) {
          if (!counts[gi][b]) continue;
          const x0 = hist.x(edges[b]), x1 = hist.x(edges[b + 1]);
          hist.layer.append(titled(svg("rect", { x: x0, width: Math.max(1, x1 - x0), y: hist.y(frac[gi][b]), height: hist.y(0) - hist.y(frac[gi][b]), class: `bar ${g}` }),
            `${g}: ${counts[gi][b]} images with scores ${short(edges[b])} to ${short(edges[b + 1])}`));
        }
      });
      for (const mark of cat.marks) {
        if (mark.threshold < edges[0] || mark.threshold > edges[bins]) continue;
        hist.layer.append(titled(svg("line", { x1: hist.x(mark.threshold), x2: hist.x(mark.threshold), y1: hist.T, y2: hist.H - hist.B, class: `mark ${mark.kind}` }), `${mark.label}: ${short(mark.threshold)}`));
      }
      const histLine = svg("line", { y1: hist.T, y2: hist.H - hist.B, class: "current" });
      hist.layer.append(histLine);
      hist.node.append(svg("text", { x: hist.W - hist.R - 4, y: hist.T + 12, class: "legend normal", "text-anchor": "end" }, document.createTextNode(`normal (n=${N})`)));
      hist.node.append(svg("text", { x: hist.W - hist.R - 4, y: hist.T + 25, class: "legend anomalous", "text-anchor": "end" }, document.createTextNode(`anomalous (n=${P})`)));
      const roc = frame({ title: "image ROC", xmin: 0, xmax: 1, ymin: 0, ymax: 1, xlabel: "false-alarm rate", ylabel: "recall", width: 230 });
      const pr = frame({ title: "image precision-recall", xmin: 0, xmax: 1, ymin: 0, ymax: 1, xlabel: "recall", ylabel: "precision", width: 230 });
      const rocPoints = [], prPoints = [];
      for (let k = m; k >= 0; k--) {
        rocPoints.push([N ? negAt[k] / N : 0, P ? posAt[k] / P : 0]);
        if (k < m && posAt[k] + negAt[k] > 0 && P) prPoints.push([posAt[k] / P, posAt[k] / (posAt[k] + negAt[k])]);
      }
      roc.layer.append(polyline(roc, [[0, 0], [1, 1]], "chance"));
      roc.layer.append(polyline(roc, rocPoints, "curve"));
      if (prPoints.length) pr.layer.append(polyline(pr, prPoints, "curve"));
      const rocDot = svg("circle", { r: 4.5, class: "current-dot" }), prDot = svg("circle", { r: 4.5, class: "current-dot" });
      roc.layer.append(rocDot); pr.layer.append(prDot);
      charts.append(hist.node, roc.node, pr.node);

      // gallery
      const defects = Array.from(new Set(members.map((i) => DATA.images[i].defect))).sort();
      const select = (name, options) => el("select", { "data-control": name }, ...options.map(([v, t]) => el("option", { value: v, text: t })));
      const sortBy = select("sort", [["file", "file order"], ["score-desc", "score, highest first"], ["score-asc", "score, lowest first"]]);
      const byDefect = select("defect", [["", "every defect type"], ...defects.map((d) => [d, d])]);
      const byLabel = select("label", [["", "every label"], ["1", "anomalous"], ["0", "normal"]]);
      const byDecision = select("decision", [["", "every decision"], ["flagged", "flagged"], ["passed", "passed"]]);
      const overlay = el("input", { type: "checkbox", checked: true, "data-control": "overlay" });
      const shown = el("span", { class: "shown" });
      const gallery = el("div", { class: "gallery", "data-category": cat.name });
      section.append(el("div", { class: "controls" }, "Sort ", sortBy, " Show ", byDefect, byLabel, byDecision,
        el("label", {}, overlay, " heatmap overlay"), shown), gallery);
      for (const i of members) {
        const im = DATA.images[i];
        const canvas = document.createElement("canvas");
        const f = 160 / Math.max(im.w, im.h);  // drawn at the size shown, outlines one pixel wide
        canvas.width = Math.max(1, Math.round(im.w * f)); canvas.height = Math.max(1, Math.round(im.h * f));
        const caption = el("div", { class: "caption" },
          el("div", { class: "name", text: im.name, title: im.path }),
          el("div", { text: `${im.defect} \u00b7 ${im.label ? "anomalous" : "normal"}` }),
          el("div", {}, "score ", el("b", { class: "score", text: short(im.score) }),
            im.normalised !== undefined ? ` \u00b7 normalised ${pyFixed(im.normalised, 3)}` : ""),
          el("div", { class: "decision" }));
        const node = el("div", { class: "card", "data-index": i, "data-score": im.score, "data-label": im.label, "data-defect": im.defect, tabindex: 0 }, canvas, caption);
        node.addEventListener("click", () => openLarge(i));
        node.addEventListener("keydown", (e) => { if (e.key === "Enter") openLarge(i); });
        const card = { i, node, canvas, caption, cat, ci, state, flagged: null, dirty: true, visible: false };
        cards[i] = card;
        gallery.append(node);
        observer.observe(node);
      }
      function applyView() {
        const order = members.slice();
        if (sortBy.value !== "file") {
          const sign = sortBy.value === "score-desc" ? -1 : 1;
          order.sort((a, b) => sign * (DATA.images[a].score - DATA.images[b].score) || a - b);
        }
        let count = 0;
        for (const i of order) {
          const card = cards[i], im = DATA.images[i];
          const show = (!byDefect.value || im.defect === byDefect.value) && (!byLabel.value || String(im.label) === byLabel.value) &&
            (!byDecision.value || (byDecision.value === "flagged") === card.flagged);
          card.node.hidden = !show;
          count += show;
          gallery.append(card.node);
        }
        shown.textContent = ` ${count} of ${members.length} shown`;
      }
      function setK(k) {
        state.k = Math.max(0, Math.min(m, k));
        slider.value = state.k;
        update();
      }
      function update() {
        const k = state.k;
        const tp = posAt[k], fp = negAt[k], fn = P - tp, tn = N - fp;
        const precision = tp + fp ? tp / (tp + fp) : null, recall = P ? tp / P : null;
        const f1 = precision === null || recall === null ? null : (2 * precision * recall) / Math.max(precision + recall, 1e-300);
        stats.far.textContent = pct(N ? fp / N : null);
        stats.recall.textContent = pct(recall);
        stats.precision.textContent = pct(precision);
        stats.f1.textContent = pct(f1);
        stats.flagged.textContent = `${tp + fp} of ${members.length}`;
        stats.tp.textContent = tp; stats.fp.textContent = fp; stats.fn.textContent = fn; stats.tn.textContent = tn;
        const at = cat.marks.filter((mk) => position(mk) === k).map((mk) => mk.label);
        readout.textContent = (k < m ? `flagged: image score \u2265 ${short(u[k])}` : "flagged: none (above every score)") + (at.length ? ` \u2014 ${at.join("; ")}` : "");
        readout.dataset.k = k;
        for (const b of jumps.children) b.classList.toggle("active", position(cat.marks[Array.prototype.indexOf.call(jumps.children, b)]) === k);
        const cut = k === 0 ? u[0] : k === m ? u[m - 1] : logx ? Math.sqrt(u[k - 1] * u[k]) : (u[k - 1] + u[k]) / 2;
        histLine.setAttribute("x1", hist.x(cut)); histLine.setAttribute("x2", hist.x(cut));
        rocDot.setAttribute("cx", roc.x(N ? fp / N : 0)); rocDot.setAttribute("cy", roc.y(P ? tp / P : 0));
        if (precision !== null && recall !== null) { prDot.setAttribute("cx", pr.x(recall)); prDot.setAttribute("cy", pr.y(precision)); prDot.style.display = ""; }
        else prDot.style.display = "none";
        for (const i of members) {
          const card = cards[i];
          const flagged = k < m && DATA.images[i].score >= u[k];
          if (flagged !== card.flagged) {
            card.flagged = flagged;
            card.node.classList.toggle("flagged", flagged);
            card.caption.lastChild.textContent = flagged ? "flagged" : "passed";
            card.dirty = true;
            if (card.visible) drawCard(card);
          }
        }
        if (byDecision.value) applyView();
      }
      slider.addEventListener("input", () => { state.k = Number(slider.value); update(); });
      for (const s of [sortBy, byDefect, byLabel, byDecision]) s.addEventListener("change", applyView);
      overlay.addEventListener("change", () => {
        state.overlay = overlay.checked;
        for (const i of members) { cards[i].dirty = true; if (cards[i].visible) drawCard(cards[i]); }
      });
      update();
      applyView();
    }

    // ---- drawing: image, heatmap overlay, outlines
    function cached(key, make) {
      if (!cache.has(key)) cache.set(key, make());
      return cache.get(key);
    }
    function overlayCanvas(i) {
      return cached(`o${i}`, async () => {
        const heat = await cached(`h${i}`, () => greyLevels(DATA.images[i].heat));
        const c = document.createElement("canvas");
        c.width = heat.w; c.height = heat.h;
        const ctx = c.getContext("2d"), d = ctx.createImageData(heat.w, heat.h);
        for (let p = 0; p < heat.v.length; p++) {
          const v = heat.v[p];
          d.data[4 * p] = LUT[3 * v]; d.data[4 * p + 1] = LUT[3 * v + 1]; d.data[4 * p + 2] = LUT[3 * v + 2];
          d.data[4 * p + 3] = Math.round(255 * ALPHA * (v / 255));
        }
        ctx.putImageData(d, 0, 0);
        return c;
      });
    }
    // Outline (1 display pixel) of the region inside(x, y) of a w x h grid, drawn on ctx's W x H.
    function outline(ctx, W, H, grid, inside, rgb) {
      const d = ctx.getImageData(0, 0, W, H);
      const at = (x, y) => inside(grid.v[Math.min(grid.h - 1, Math.floor((y * grid.h) / H)) * grid.w + Math.min(grid.w - 1, Math.floor((x * grid.w) / W))]);
      const row = new Uint8Array(W * H);
      for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) row[y * W + x] = at(x, y) ? 1 : 0;
      for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
        const p = y * W + x;
        if (!row[p]) continue;
        const edge = (x > 0 && !row[p - 1]) || (x < W - 1 && !row[p + 1]) || (y > 0 && !row[p - W]) || (y < H - 1 && !row[p + W]);
        if (edge) { d.data[4 * p] = rgb[0]; d.data[4 * p + 1] = rgb[1]; d.data[4 * p + 2] = rgb[2]; d.data[4 * p + 3] = 255; }
      }
      ctx.putImageData(d, 0, 0);
    }
    async function paint(canvas, i, withOverlay, flagged, withMask) {
      const im = DATA.images[i], cat = DATA.categories[im.c];
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      const W = canvas.width, H = canvas.height;
      const picture = await cached(`i${i}`, () => loadImage(im.img));
      ctx.imageSmoothingEnabled = Math.max(im.w, im.h) >= 128;  // small images: pixels, as the PNGs
      ctx.drawImage(picture, 0, 0, W, H);
      ctx.imageSmoothingEnabled = true;
      if (withOverlay && im.heat) ctx.drawImage(await overlayCanvas(i), 0, 0, W, H);
      if (withMask && im.mask) outline(ctx, W, H, await cached(`m${i}`, () => greyLevels(im.mask)), (v) => v >= 128, [0, 255, 0]);
      if (flagged && im.heat && cat.pixel_level !== null && cat.pixel_level <= 255) {
        const level = cat.pixel_level;
        outline(ctx, W, H, await cached(`h${i}`, () => greyLevels(im.heat)), (v) => v >= level, [0, 255, 255]);
      }
    }
    function drawCard(card) {
      card.dirty = false;
      paint(card.canvas, card.i, card.state.overlay, card.flagged, true).catch((e) => console.error(e.message));
    }

    // ---- the large view
    function buildModal() {
      modal = el("div", { id: "large", class: "modal", hidden: true, onclick: (e) => { if (e.target === modal) closeLarge(); } });
      document.body.append(modal);
      document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeLarge(); });
    }
    function closeLarge() { modal.hidden = true; modal.innerHTML = ""; }
    function openLarge(i) {
      const im = DATA.images[i], card = cards[i], cat = DATA.categories[im.c];
      const side = Math.min(560, Math.floor((window.innerWidth - 80) / 2));
      const f = side / Math.max(im.w, im.h);
      const make = () => { const c = document.createElement("canvas"); c.width = Math.max(1, Math.round(im.w * f)); c.height = Math.max(1, Math.round(im.h * f)); return c; };
      const left = make(), right = make();
      modal.innerHTML = "";
      modal.append(el("div", { class: "modal-box" },
        el("button", { type: "button", class: "close", text: "\u00d7 close", onclick: closeLarge }),
        el("h3", { text: `${cat.name} / ${im.defect}: ${im.name}` }),
        el("div", { class: "pair" }, el("figure", {}, left, el("figcaption", { text: "image + ground truth (lime)" })),
          el("figure", {}, right, el("figcaption", { text: "heatmap overlay" + (card.flagged && cat.pixel_words ? " + predicted defect (cyan)" : "") }))),
        el("p", { text: `${im.path} \u00b7 ${im.w}\u00d7${im.h} px as scored \u00b7 ${im.label ? "anomalous" : "normal"} \u00b7 image score ${short(im.score)}` +
          (im.normalised !== undefined ? ` \u00b7 normalised ${pyFixed(im.normalised, 3)}` : "") +
          ` \u00b7 ${card.flagged ? "flagged" : "passed"} at the current threshold` + (im.decision ? ` \u00b7 calibrated decision: ${im.decision}` : "") })));
      modal.hidden = false;
      paint(left, i, false, false, true).catch((e) => console.error(e.message));
      paint(right, i, true, card.flagged, true).catch((e) => console.error(e.message));
    }
  }

  // ---------------------------------------------------------------- study pages
  function buildTables() {
    app.innerHTML = "";
    app.append(el("h1", { text: DATA.title }));
    if (DATA.intro) app.append(el("p", { text: DATA.intro }));
    app.append(linksList(DATA.links));
    DATA.tables.forEach((t, ti) => {
      const table = el("table", { class: "metrics sortable", id: `table-${ti}` });
      const head = el("tr");
      const body = el("tbody");
      t.columns.forEach((c, ci) => {
        let ascending = true;
        head.append(el("th", { text: c, title: "click to sort", onclick: () => {
          const rows = Array.from(body.children);
          const key = (r) => r.children[ci].dataset.value;
          rows.sort((a, b) => {
            const x = key(a), y = key(b), nx = Number(x), ny = Number(y);
            const both = x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny);
            return (ascending ? 1 : -1) * (both ? nx - ny : String(x).localeCompare(String(y)));
          });
          ascending = !ascending;
          for (const r of rows) body.append(r);
        } }));
      });
      for (const row of t.rows) {
        body.append(el("tr", {}, ...row.map((v) => el("td", { "data-value": v === "-" ? "" : v.replace(/[%,]/g, ""), text: v }))));
      }
      table.append(el("thead", {}, head), body);
      app.append(el("h2", { text: t.title }), table);
      if (t.note) app.append(el("p", { class: "note", text: t.note }));
    });
    const tip = el("div", { class: "tooltip", hidden: true });
    document.body.append(tip);
    DATA.plots.forEach((p, pi) => {
      const box = el("div", { class: "plot-box", id: `plot-${pi}` });
      const logx = el("input", { type: "checkbox", checked: p.log_x || null });
      const logy = el("input", { type: "checkbox", checked: p.log_y || null });
      const draw = () => {
        box.querySelector("svg")?.remove();
        box.dataset.logX = logx.checked; box.dataset.logY = logy.checked;
        const pts = p.series.flatMap((s) => s.points);
        if (!pts.length) return;
        const xs = pts.map((q) => q[0]), ys = pts.map((q) => q[1]);
        const lx = logx.checked && Math.min(...xs) > 0, ly = logy.checked && Math.min(...ys) > 0;
        let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
        if (x0 === x1) { x0 = lx ? x0 / 2 : x0 - 1; x1 = lx ? x1 * 2 : x1 + 1; }
        if (y0 === y1) { y0 = ly ? y0 / 2 : y0 - 1; y1 = ly ? y1 * 2 : y1 + 1; }
        const padY = ly ? 1 : 0, dy = (y1 - y0) * 0.05;
        const f = frame({ title: p.title, xticks: p.x_ticks, xmin: x0, xmax: x1, ymin: ly ? y0 / 1.1 : y0 - dy * (1 - padY), ymax: ly ? y1 * 1.1 : y1 + dy, logx: lx, logy: ly, xlabel: p.x + (lx ? " (log)" : ""), ylabel: p.y + (ly ? " (log)" : ""), width: 520, height: 320 });
        p.series.forEach((s, si) => {
          const pts2 = s.points.slice().sort((a, b) => a[0] - b[0]);
          f.layer.append(polyline(f, pts2, `series s${si % 7}`));
          for (const [a, b, label] of pts2) {
            const dot = svg("circle", { cx: f.x(a), cy: f.y(b), r: 4, class: `dot s${si % 7}` });
            const text = `${s.name}: ${label ? label + ", " : ""}${p.x} ${short(a)}, ${p.y} ${short(b)}`;
            titled(dot, text);
            dot.addEventListener("mouseenter", (e) => { tip.textContent = text; tip.hidden = false; tip.style.left = `${e.pageX + 10}px`; tip.style.top = `${e.pageY + 10}px`; });
            dot.addEventListener("mouseleave", () => { tip.hidden = true; });
            f.layer.append(dot);
          }
          f.node.append(svg("text", { x: f.W - f.R - 4, y: f.T + 14 + 13 * si, class: `legend s${si % 7}`, "text-anchor": "end" }, document.createTextNode(s.name)));
        });
        box.append(f.node);
      };
      logx.addEventListener("change", draw);
      logy.addEventListener("change", draw);
      app.append(el("div", { class: "controls" }, p.x_ticks ? null : el("label", {}, logx, " log x"), " ", el("label", {}, logy, " log y")), box);
      draw();
    });
  }

  try {
    if (DATA.kind === "evaluation") buildEvaluation(); else buildTables();
  } finally {
    window.fmjaxBuildMs = performance.now() - started;  // this script's work
    window.fmjaxReadyMs = performance.now();  // since navigation started (the parse included)
    document.documentElement.dataset.ready = "true";
  }
})();
