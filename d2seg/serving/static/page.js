// The d2seg page: upload an image to /v1/predict, draw the returned masks over it, list them,
// re-filter by score without uploading again, download the JSON. Plain browser APIs only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, answer: null, image: null, name: "image" };

function token() { return sessionStorage.getItem("d2seg-token"); }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers);
  if (token()) headers.Authorization = "Bearer " + token();
  return fetch(path, Object.assign({}, options, { headers }));
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function errorText(response) {
  try { return (await response.json()).error.message; } catch (e) { return response.statusText; }
}

async function loadModel() {
  const response = await api("/v1/model");
  if (response.status === 401) {
    $("token-box").hidden = false;
    say("This server needs an access token.", true);
    return;
  }
  if (response.status === 503) {
    say(await errorText(response));
    setTimeout(loadModel, 2000);
    return;
  }
  if (!response.ok) { say(await errorText(response), true); return; }
  state.model = await response.json();
  $("token-box").hidden = true;
  const classes = state.model.thing_classes.length ? state.model.thing_classes
    : state.model.stuff_classes;
  $("model").textContent = `${state.model.name} — ${state.model.tasks.join(", ")} — ` +
    `classes: ${classes.join(", ")}`;
  setThreshold(state.model.score_threshold);
  say("Ready: drop an image.");
}

function setThreshold(value) {
  $("threshold").value = value;
  $("threshold-value").textContent = Number(value).toFixed(2);
}

// COCO compressed RLE (pycocotools' rleFrString) → column-major run lengths.
function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1; k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function rleArea(rle) {
  return rleCounts(rle.counts).reduce((sum, n, i) => (i % 2 ? sum + n : sum), 0);
}

// Tint the pixels of an RLE mask in an RGBA buffer of the image's size.
function paint(pixels, rle, color, alpha) {
  const [height, width] = rle.size;
  let index = 0;
  rleCounts(rle.counts).forEach((run, i) => {
    if (i % 2) {
      for (let j = index; j < index + run; j++) {
        const y = j % height, x = Math.floor(j / height), o = 4 * (y * width + x);
        for (let c = 0; c < 3; c++) pixels[o + c] = (1 - alpha) * pixels[o + c] + alpha * color[c];
      }
    }
    index += run;
  });
}

function thingColor(categoryId) {
  const colors = state.model.colors.thing;
  return colors[(categoryId - 1) % colors.length] || [255, 0, 0];
}

function stuffColor(id) {
  const colors = state.model.colors.stuff;
  return colors[id] || [255, 0, 0];
}

// A panoptic segment's colour: a thing's class colour, or stuff label L's (2 + k: stuff k).
function segmentColor(s) {
  return s.isthing ? thingColor(s.category_id)
    : stuffColor(s.category_id - state.model.thing_classes.length - 2);
}

function isBackground(name) { return ["background", "_background_"].includes(name.toLowerCase()); }

function visibleInstances() {
  const threshold = Number($("threshold").value);
  return (state.answer.instances || []).filter((r) => r.score >= threshold);
}

function draw() {
  const canvas = $("overlay"), image = state.image, answer = state.answer;
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  const frame = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const instances = visibleInstances();
  if (answer.sem_seg) {
    answer.sem_seg.classes.filter((c) => !isBackground(c.name))
      .forEach((c) => paint(frame.data, c.segmentation, stuffColor(c.id), 0.6));
  }
  (answer.panoptic ? answer.panoptic.segments_info : []).forEach((s) => {
    if (s.category_name !== "background" && (!("score" in s) || s.score >= Number($("threshold").value))) {
      paint(frame.data, s.segmentation, segmentColor(s), 0.6);
    }
  });
  instances.filter((r) => r.segmentation)
    .forEach((r) => paint(frame.data, r.segmentation, thingColor(r.category_id), 0.5));
  ctx.putImageData(frame, 0, 0);
  // Labels 12 screen pixels high whatever the image's size on screen.
  const scale = canvas.width / Math.max(1, canvas.clientWidth);
  const size = Math.max(4, Math.round(14 * scale));
  ctx.font = `${size}px sans-serif`;
  ctx.lineWidth = Math.max(0.5, 1.5 * scale);
  instances.forEach((r) => {
    const [x, y, w, h] = r.bbox, color = `rgb(${thingColor(r.category_id).join(",")})`;
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, w, h);
    const text = `${r.category_name} ${Math.round(r.score * 100)}%`;
    ctx.fillStyle = "rgba(0,0,0,0.6)";
    ctx.fillRect(x, Math.max(0, y - size - 2), ctx.measureText(text).width + 4, size + 2);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x + 2, Math.max(size - 2, y - 4));
  });
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function swatch(color) {
  const span = document.createElement("span");
  span.className = "swatch";
  span.style.background = `rgb(${color.join(",")})`;
  return span;
}

function table() {
  const answer = state.answer, head = $("results").tHead, body = $("results").tBodies[0];
  body.textContent = "";
  let columns, rows;
  if (answer.instances) {
    columns = ["#", "class", "score", "area (px)"];
    rows = visibleInstances().map((r, i) => [i + 1, r.category_name, r.score.toFixed(3),
      r.segmentation ? rleArea(r.segmentation) : Math.round(r.bbox[2] * r.bbox[3]),
      thingColor(r.category_id)]);
  } else if (answer.panoptic) {
    columns = ["#", "class", "score", "area (px)"];
    rows = answer.panoptic.segments_info.map((s, i) => [i + 1, s.category_name,
      "score" in s ? s.score.toFixed(3) : "", s.area,
      segmentColor(s)]);
  } else {
    const total = answer.image.width * answer.image.height;
    columns = ["class", "area (px)", "share"];
    rows = answer.sem_seg.classes.map((c) => [c.name, c.area,
      `${(100 * c.area / total).toFixed(1)}%`, stuffColor(c.id)]);
  }
  head.innerHTML = "";
  const headRow = head.insertRow();
  columns.forEach((c) => { const th = document.createElement("th"); th.textContent = c; headRow.appendChild(th); });
  rows.forEach((values) => {
    const row = body.insertRow(), color = values.pop();
    values.forEach((v, i) => {
      const td = cell(row, String(v), columns[i] === "class" ? "class" : (typeof v === "number" ? "num" : ""));
      if (columns[i] === "class") td.prepend(swatch(color));
    });
  });
  if (!rows.length) {
    const row = body.insertRow();
    cell(row, "nothing above the threshold").colSpan = columns.length;
  }
}

function render() {
  setThreshold($("threshold").value);
  if (!state.answer) return;
  if (state.image) draw();
  table();
}

async function predict(file) {
  if (!state.model) { say("The model is not ready yet.", true); return; }
  state.name = file.name.replace(/\.[^.]*$/, "") || "image";
  $("original").src = URL.createObjectURL(file);
  say(`Predicting on ${file.name}…`);
  const response = await api("/v1/predict", {
    method: "POST", body: file,
    headers: { "Content-Type": file.type || "application/octet-stream" },
  });
  if (!response.ok) { say(await errorText(response), true); return; }
  state.answer = await response.json();
  $("download").disabled = false;
  const answer = state.answer;
  const found = answer.instances ? `${answer.instances.length} instance(s)`
    : answer.panoptic ? `${answer.panoptic.segments_info.length} segment(s)`
      : `${answer.sem_seg.classes.length} class(es)`;
  say(`${file.name}: ${found} in ${Math.round(answer.timing_ms.total)} ms.`);
  try {
    await $("original").decode();
  } catch (e) {  // e.g. a TIFF: the browser cannot show it, the records are still there
    state.image = null;
    say(`${file.name}: ${found}; this browser cannot display the image, the JSON is ready.`);
    return;
  }
  state.image = $("original");
  render();
}

function download() {
  const threshold = Number($("threshold").value);
  const answer = Object.assign({}, state.answer, { score_threshold: threshold });
  if (answer.instances) answer.instances = visibleInstances();
  const blob = new Blob([JSON.stringify(answer, null, 2)], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${state.name}.predictions.json`;
  link.click();
  URL.revokeObjectURL(link.href);
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) predict(e.target.files[0]); });
$("threshold").addEventListener("input", render);
$("download").addEventListener("click", download);
$("token-box").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("d2seg-token", $("token").value);
  loadModel();
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) predict(e.dataTransfer.files[0]);
});
loadModel();
