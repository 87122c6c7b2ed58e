// xraylens page: upload one radiograph, show verdict, heatmap (opacity slider) and boxes.
// Plain JS, no dependencies, works offline. Talks to /api/model and /api/predict only.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
let busy = false;

function setHidden(el, hidden) { el.toggleAttribute("hidden", hidden); }  // works for SVG too

function showError(message) {
  const box = $("error");
  box.textContent = message;
  setHidden(box, false);
}

function clearError() { setHidden($("error"), true); $("error").textContent = ""; }

function setBusy(on, text) {
  busy = on;
  $("status-text").textContent = text || "Analysing…";
  setHidden($("status"), !on);
  $("dropzone").classList.toggle("disabled", on);
}

async function loadModel() {
  try {
    const res = await fetch("/api/model");
    if (!res.ok) throw new Error(res.statusText);
    const m = await res.json();
    $("model-info").textContent =
      `${m.architecture} · ${m.input_size}px · ${m.engine}` + (m.cam_method ? ` · ${m.cam_method}` : "") +
      ` · v${m.xraylens_version}`;
  } catch (err) {
    $("model-info").textContent = "model information unavailable";
  }
}

async function upload(file) {
  if (!file || busy) return;
  clearError();
  setBusy(true, `Analysing ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const res = await fetch("/api/predict", { method: "POST", body: form });
    let body = null;
    try { body = await res.json(); } catch (_) { body = null; }
    if (!res.ok) {
      const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
        : res.statusText;
      throw new Error(`Could not analyse ${file.name} (${res.status}): ${detail}`);
    }
    render(body);
  } catch (err) {
    setHidden($("result"), true);
    showError(err.message || String(err));
  } finally {
    setBusy(false);
  }
}

function render(r) {
  $("file-name").textContent = `${r.filename} · ${r.width} × ${r.height} px`;
  $("xray").src = `data:image/png;base64,${r.image_png_base64}`;
  const heat = $("heatmap");
  if (r.heatmap_png_base64) {
    heat.src = `data:image/png;base64,${r.heatmap_png_base64}`;
    setHidden(heat, false);
  } else {
    heat.removeAttribute("src");
    setHidden(heat, true);
  }
  applyOpacity();
  drawBoxes(r);

  const abnormal = r.probability >= r.threshold;
  const verdict = $("verdict");
  verdict.textContent = r.verdict.charAt(0).toUpperCase() + r.verdict.slice(1);
  verdict.className = `verdict ${abnormal ? "abnormal" : "normal"}`;
  $("probability").textContent = `${(100 * r.probability).toFixed(1)}%`;
  const fill = $("meter-fill");
  fill.style.width = `${(100 * r.probability).toFixed(1)}%`;
  fill.className = `meter-fill ${abnormal ? "abnormal" : "normal"}`;
  $("meter-threshold").style.left = `${(100 * r.threshold).toFixed(1)}%`;
  $("threshold-text").textContent = `decision threshold ${(100 * r.threshold).toFixed(0)}%`;
  $("explanation").textContent = r.explanation;

  const list = $("box-list");
  list.replaceChildren();
  if (!r.boxes.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = r.heatmap_png_base64 ? "No region stands out." : "No heatmap for this model.";
    list.appendChild(li);
  }
  r.boxes.forEach((b, i) => {
    const li = document.createElement("li");
    li.textContent = `${b.region} · ${(100 * b.area_fraction).toFixed(1)}% of the image · score ${b.score.toFixed(2)}`;
    li.dataset.index = String(i);
    list.appendChild(li);
  });

  const details = $("details");
  details.replaceChildren();
  const rows = [["Model", `${r.model.architecture} (${r.model.engine})`], ["Input size", `${r.model.input_size} px`],
                ["Heatmap", r.model.cam_method || "none"], ["Version", r.model.version]];
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    details.append(dt, dd);
  }
  setHidden($("result"), false);
  $("upload-panel").classList.add("compact");  // the result is the focus now; keep the drop zone small
  $("drop-title").textContent = "Drop another radiograph";
}

function drawBoxes(r) {
  const svg = $("boxes");
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${r.width} ${r.height}`);  // boxes come in original pixels
  const stroke = Math.max(r.width, r.height) / 250;
  r.boxes.forEach((b, i) => {
    const rect = document.createElementNS(SVG_NS, "rect");
    rect.setAttribute("x", b.x0); rect.setAttribute("y", b.y0);
    rect.setAttribute("width", Math.max(b.x1 - b.x0, 1)); rect.setAttribute("height", Math.max(b.y1 - b.y0, 1));
    rect.setAttribute("stroke-width", stroke);
    rect.setAttribute("class", "box");
    svg.appendChild(rect);
    const label = document.createElementNS(SVG_NS, "text");
    label.setAttribute("x", b.x0 + stroke); label.setAttribute("y", b.y0 + stroke * 7);
    label.setAttribute("font-size", stroke * 6);
    label.setAttribute("class", "box-label");
    label.textContent = String(i + 1);
    svg.appendChild(label);
  });
  applyBoxes();
}

function applyOpacity() {
  const v = Number($("opacity").value);
  $("heatmap").style.opacity = String(v / 100);
  $("opacity-value").textContent = `${v}%`;
}

function applyBoxes() { setHidden($("boxes"), !$("show-boxes").checked); }

function init() {
  const zone = $("dropzone");
  const input = $("file-input");
  input.addEventListener("change", () => { upload(input.files[0]); input.value = ""; });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => {
    e.preventDefault(); zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, (e) => {
    e.preventDefault(); zone.classList.remove("dragging");
  }));
  zone.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]); });
  // A file dropped next to the zone should not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("opacity").addEventListener("input", applyOpacity);
  $("show-boxes").addEventListener("change", applyBoxes);
  loadModel();
}

document.addEventListener("DOMContentLoaded", init);
