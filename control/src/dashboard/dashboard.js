// The dashboard's logic: polls the control plane's JSON views (/v1/devices, /v1/apps, each
// app's /logs, each device's /ledger) every 2 s and redraws. Every value from the fog is put
// in the page with textContent, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const WINDOW_MS = 10000; // requests/s and errors are over the last 10 s of request lines

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) {
    throw new Error(path + ": HTTP " + response.status);
  }
  return response.json();
}

// A table cell holding `text` as text.
function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) {
    td.className = className;
  }
  return td;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    tr.appendChild(c);
  }
  return tr;
}

function replaceRows(tableId, rows) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...rows);
}

function short(id) {
  return id.length > 16 ? id.slice(0, 16) + "…" : id;
}

function deviceState(d) {
  if (!d.alive) {
    return ["dead", "bad"];
  }
  // A device nobody admitted is given no work, whatever it offers.
  if (!d.admitted) {
    return ["pending admission", "warn"];
  }
  return d.harvestable ? ["harvesting", "ok"] : ["not harvestable", "warn"];
}

function reached(d) {
  if (d.addr) {
    return "direct " + d.addr;
  }
  if (d.attached && d.attached.length > 0) {
    return "dial-out: " + d.attached
      .map((l) => short(l.router) + " " + (l.rtt_us / 1000).toFixed(1) + " ms")
      .join(", ");
  }
  return "—";
}

async function credits(deviceId) {
  const periods = await getJson("/v1/devices/" + encodeURIComponent(deviceId) + "/ledger");
  return periods.reduce((sum, p) => sum + p.period.total_credits, 0);
}

// Requests/s, errors (5xx) and median latency over the last WINDOW_MS of an app's request lines.
async function traffic(app) {
  const lines = await getJson("/v1/apps/" + encodeURIComponent(app) + "/logs");
  const since = Date.now() - WINDOW_MS;
  const recent = lines.filter((l) => l.ts_ms >= since);
  const errors = recent.filter((l) => l.status >= 500).length;
  const micros = recent.map((l) => l.micros).sort((a, b) => a - b);
  const p50 = micros.length ? micros[Math.floor(micros.length / 2)] / 1000 : null;
  return { rps: recent.length / (WINDOW_MS / 1000), errors, p50, total: lines.length };
}

function drawDevices(devices, earned) {
  document.getElementById("device-count").textContent = "(" + devices.length + ")";
  replaceRows("devices", devices.map((d, i) => {
    const [state, cls] = deviceState(d);
    const idCell = cell(short(d.id), "mono");
    idCell.title = d.id;
    idCell.dataset.device = d.id;
    return row([
      idCell,
      cell(state, cls),
      cell(d.harvest || (d.alive ? "always on" : "—")),
      cell(reached(d), "mono"),
      cell(d.cpu_free.toFixed(2) + " / " + d.cpu.toFixed(2), "num"),
      cell(d.running.join(", ")),
      cell(earned[i] === null ? "—" : earned[i].toFixed(6), "num"),
    ]);
  }));
}

function drawApps(apps, loads) {
  document.getElementById("app-count").textContent = "(" + apps.length + ")";
  replaceRows("apps", apps.map((a, i) => {
    const load = loads[i];
    const where = a.running.length ? a.running.map(short).join(", ") : "—";
    return row([
      cell(a.name),
      cell(a.tier),
      cell(a.running.length + " / " + a.replicas, "num"),
      cell(where, "mono"),
      cell(load ? load.rps.toFixed(1) : "—", "num"),
      cell(load ? load.errors : "—", load && load.errors > 0 ? "num bad" : "num"),
      cell(load && load.p50 !== null ? load.p50.toFixed(1) : "—", "num"),
      cell(a.moving ? "moving " + a.moving : a.problem || "", a.problem ? "warn" : ""),
    ]);
  }));
}

function drawEvents(apps) {
  // Events are "HH:MM:SS what happened", per app; newest first across apps.
  const events = [];
  for (const a of apps) {
    for (const e of a.events) {
      events.push({ app: a.name, text: e });
    }
  }
  events.sort((x, y) => (x.text < y.text ? 1 : x.text > y.text ? -1 : 0));
  const list = document.getElementById("events");
  if (events.length === 0) {
    const li = document.createElement("li");
    li.textContent = "no events yet";
    list.replaceChildren(li);
    return;
  }
  list.replaceChildren(...events.slice(0, 30).map((e) => {
    const li = document.createElement("li");
    const app = document.createElement("strong");
    app.textContent = e.app;
    li.append(app, " ", e.text);
    return li;
  }));
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [devices, apps] = await Promise.all([getJson("/v1/devices"), getJson("/v1/apps")]);
    devices.sort((a, b) => a.id.localeCompare(b.id));
    apps.sort((a, b) => a.name.localeCompare(b.name));
    const [earned, loads] = await Promise.all([
      Promise.all(devices.map((d) => credits(d.id).catch(() => null))),
      Promise.all(apps.map((a) => traffic(a.name).catch(() => null))),
    ]);
    drawDevices(devices, earned);
    drawApps(apps, loads);
    drawEvents(apps);
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "";
  } catch (err) {
    status.textContent = "cannot reach the control plane: " + err.message;
    status.className = "bad";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
