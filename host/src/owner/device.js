// The device page's logic: polls /status.json every 2 s and redraws. Every value (app names
// come from developers) goes in the page with textContent, never as HTML; the charts are SVG
// elements made with createElementNS.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) {
    td.className = className;
  }
  return td;
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) {
    element.setAttribute(key, String(value));
  }
  return element;
}

// A line chart of `values` (oldest first) against `times` in the SVG `id` (400 x 120).
function chart(id, times, values, format) {
  const svg = document.getElementById(id);
  const left = 40, right = 395, top = 8, bottom = 105;
  const parts = [
    svgElement("line", { class: "axis", x1: left, y1: bottom, x2: right, y2: bottom }),
    svgElement("line", { class: "axis", x1: left, y1: top, x2: left, y2: bottom }),
  ];
  if (values.length > 0) {
    const t0 = times[0], t1 = Math.max(times[times.length - 1], t0 + 1);
    const v0 = Math.min(...values), v1 = Math.max(Math.max(...values), v0 + 1e-9);
    const points = values.map((v, i) => {
      const x = left + ((times[i] - t0) / (t1 - t0)) * (right - left);
      const y = bottom - ((v - v0) / (v1 - v0)) * (bottom - top);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    parts.push(svgElement("polyline", { class: "line", points: points.join(" ") }));
    const high = svgElement("text", { x: 2, y: top + 8 });
    high.textContent = format(v1);
    const low = svgElement("text", { x: 2, y: bottom });
    low.textContent = format(v0);
    const span = svgElement("text", { x: right - 60, y: 118 });
    span.textContent = "last " + Math.round((t1 - t0) / 60000) + " min";
    parts.push(high, low, span);
  }
  svg.replaceChildren(...parts);
}

function compact(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n));
}

function draw(status) {
  document.getElementById("device").textContent = status.device;
  const state = document.getElementById("harvest-state");
  const reason = document.getElementById("harvest-reason");
  if (status.harvest) {
    state.textContent = status.harvest.state;
    state.className = "state " + (status.harvest.state === "harvesting" ? "ok" : "warn");
    reason.textContent = status.harvest.reason + " (offers " +
      status.harvest.cpu_offered.toFixed(2) + " CPU)";
  } else {
    state.textContent = "always on";
    state.className = "state warn";
    reason.textContent = "this host ignores harvest policy (--always-on)";
  }
  const rows = status.apps.map((a) => {
    const tr = document.createElement("tr");
    tr.dataset.app = a.name;
    tr.append(
      cell(a.name),
      cell(a.role),
      cell(a.in_flight, "num"),
      cell(a.requests, "num"),
      cell(a.failures, "num"),
      cell(compact(a.fuel), "num"),
    );
    return tr;
  });
  document.querySelector("#apps tbody").replaceChildren(...rows);
  document.getElementById("app-count").textContent = "(" + status.apps.length + ")";
  const times = status.history.map((s) => s.t_ms);
  chart("fuel-chart", times, status.history.map((s) => s.fuel), compact);
  chart("credits-chart", times, status.history.map((s) => s.credits), (v) => v.toFixed(4));
  const last = status.history[status.history.length - 1];
  document.getElementById("fuel-now").textContent = last ? compact(last.fuel) : "";
  document.getElementById("credits-now").textContent = last ? last.credits.toFixed(4) : "";
}

async function refresh() {
  const line = document.getElementById("status");
  try {
    const response = await fetch("/status.json", { cache: "no-store" });
    if (!response.ok) {
      throw new Error("HTTP " + response.status);
    }
    draw(await response.json());
    line.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    line.textContent = "cannot reach the host: " + error.message;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
