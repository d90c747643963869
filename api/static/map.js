// dustpatrol map page: sites coloured by their most pressing notice, findings with their
// evidence photos, flight tracks and frame footprints. Data from /map/data (GeoJSON); the
// token from /auth/token is kept in this tab's sessionStorage only.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const STATES = {
  escalated: ["#7b1fa2", "升级督办 escalated"],
  overdue: ["#d32f2f", "逾期 overdue"],
  issued: ["#f57c00", "已下发 issued"],
  acknowledged: ["#fbc02d", "已签收 acknowledged"],
  rectified: ["#0288d1", "已整改 rectified"],
  verified: ["#388e3c", "已复核 verified"],
  closed: ["#9e9e9e", "已办结 closed"],
  rejected: ["#bdbdbd", "已撤销 rejected"],
  none: ["#e0e0d8", "无通知 no notice"],
};
const CLASSES = { exposed_soil: "裸露土方 exposed soil", road_dust: "道路积尘 road dust" };

const map = L.map("map", { preferCanvas: false, zoomControl: true }).setView([35, 110], 5);
if (config.tileUrl) {
  L.tileLayer(config.tileUrl, { maxZoom: 22, attribution: config.tileAttribution || "" }).addTo(map);
}
L.control.scale({ imperial: false }).addTo(map);
// The flight's own photos lie under everything else (Leaflet's overlay pane is at 400).
map.createPane("imagery").style.zIndex = 350;
const MAX_IMAGERY = 60; // overlays fetched per view
const layers = {
  imagery: L.layerGroup(), // off until asked for: each overlay is an image to fetch
  sites: L.layerGroup().addTo(map),
  footprints: L.layerGroup().addTo(map),
  tracks: L.layerGroup().addTo(map),
  findings: L.layerGroup().addTo(map),
};
L.control
  .layers(null, {
    "航片 imagery": layers.imagery,
    "工地 sites": layers.sites,
    "航片范围 footprints": layers.footprints,
    "航迹 tracks": layers.tracks,
    "发现 findings": layers.findings,
  }, { collapsed: false })
  .addTo(map);
const legend = L.control({ position: "bottomright" });
legend.onAdd = () => {
  const box = L.DomUtil.create("div", "legend");
  box.innerHTML = Object.values(STATES)
    .map(([colour, label]) => `<div><i style="background:${colour}"></i>${label}</div>`)
    .join("") + '<div><i style="background:#e53935;border-color:#b71c1c"></i>发现 finding</div>';
  return box;
};
legend.addTo(map);

const status = document.getElementById("status");
const loginDialog = document.getElementById("login");
let fittedOnce = false;
let byView = false;
let moveTimer = null;
map.on("moveend", () => {
  if (!byView) return;
  clearTimeout(moveTimer);
  moveTimer = setTimeout(load, 250);
});

function token() {
  return sessionStorage.getItem("dustpatrol-token");
}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  if (response.status === 401) {
    sessionStorage.removeItem("dustpatrol-token");
    showLogin();
    throw new Error("not logged in");
  }
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.detail || `${path}: HTTP ${response.status}`);
  }
  return response;
}

function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function showLogin() {
  if (!loginDialog.open) loginDialog.showModal();
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const response = await fetch("/auth/token", { method: "POST", body: new URLSearchParams(form) });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    document.getElementById("login-error").textContent = problem.detail || "登录失败 login failed";
    return;
  }
  sessionStorage.setItem("dustpatrol-token", (await response.json()).access_token);
  loginDialog.close();
  await start();
});

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem("dustpatrol-token");
  location.reload();
});

document.getElementById("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});

async function loadBureaus() {
  const select = document.querySelector("select[name=bureau]");
  try {
    const bureaus = await (await api("/bureaus")).json();
    for (const bureau of bureaus) select.add(new Option(bureau.name, bureau.name));
  } catch {
    select.disabled = true; // a bureau user sees its own sites only
  }
}

async function showEvidence(container, url) {
  try {
    const blob = await (await api(url)).blob();
    const img = document.createElement("img");
    img.className = "evidence";
    img.alt = url;
    img.src = URL.createObjectURL(blob);
    container.appendChild(img);
  } catch (error) {
    container.insertAdjacentHTML("beforeend", `<p class="error">${escapeHtml(error.message)}</p>`);
  }
}

function findingPopup(properties) {
  const box = document.createElement("div");
  box.className = "popup";
  box.innerHTML = `<h3>发现 #${properties.id} · ${escapeHtml(CLASSES[properties.class] || properties.class)}</h3>
    <table>
      <tr><td>工地 site</td><td>${escapeHtml(properties.site_id)}</td></tr>
      <tr><td>面积 area</td><td>${properties.area_m2.toFixed(1)} m²</td></tr>
      <tr><td>置信度 confidence</td><td>${properties.confidence.toFixed(2)}</td></tr>
      <tr><td>审核 review</td><td>${escapeHtml(properties.review)}</td></tr>
      <tr><td>通知 notice</td><td>${escapeHtml(properties.notice || "—")}</td></tr>
      <tr><td>架次 flight</td><td>${properties.flight}</td></tr>
    </table>`;
  if (properties.images.length === 0) box.insertAdjacentHTML("beforeend", "<p>无照片 no photo</p>");
  for (const url of properties.images.slice(0, 3)) showEvidence(box, url);
  return box;
}

function sitePopup(properties) {
  const notices = properties.notices
    .map((n) => `<tr><td>${escapeHtml(n.number)}</td><td>${escapeHtml(CLASSES[n.class] || n.class)}</td><td>${escapeHtml(STATES[n.state]?.[1] || n.state)}</td></tr>`)
    .join("");
  return `<div class="popup"><h3>${escapeHtml(properties.name || properties.site_id)} (${escapeHtml(properties.site_id)})</h3>
    <table><tr><td>单位 bureau</td><td>${escapeHtml(properties.bureau || "—")}</td></tr>
    <tr><td>状态 state</td><td>${escapeHtml(STATES[properties.state][1])}</td></tr></table>
    <table>${notices}</table></div>`;
}

let footprints = [];
const overlaysShown = new Set();

async function loadImagery() {
  if (!map.hasLayer(layers.imagery)) return;
  const view = map.getBounds();
  let fetched = 0;
  for (const feature of footprints) {
    const url = feature.properties.overlay;
    if (overlaysShown.has(url) || fetched >= MAX_IMAGERY) continue;
    if (!view.intersects(L.geoJSON(feature).getBounds())) continue;
    overlaysShown.add(url);
    fetched += 1;
    try {
      const response = await api(url);
      const [west, south, east, north] = response.headers.get("X-Bounds").split(",").map(Number);
      const source = URL.createObjectURL(await response.blob());
      L.imageOverlay(source, [[south, west], [north, east]], { pane: "imagery", className: "imagery" })
        .addTo(layers.imagery);
    } catch {
      // an oblique frame or one still being processed has no imagery: its footprint stays
    }
  }
}
layers.imagery.on("add", loadImagery);
map.on("moveend", loadImagery);

function draw(data) {
  for (const group of Object.values(layers)) group.clearLayers();
  overlaysShown.clear();
  L.geoJSON(data.sites, {
    style: (f) => ({
      color: "#444",
      weight: 1.5,
      fillColor: STATES[f.properties.state][0],
      fillOpacity: 0.55,
      className: `site site-${f.properties.state}`,
    }),
    onEachFeature: (f, layer) => layer.bindPopup(sitePopup(f.properties)),
  }).addTo(layers.sites);
  const flights = data.flights.features;
  footprints = flights.filter((f) => f.properties.kind === "footprint");
  loadImagery();
  L.geoJSON({ type: "FeatureCollection", features: flights.filter((f) => f.properties.kind === "footprint") }, {
    style: { color: "#1e88e5", weight: 0.8, fillOpacity: 0.04, className: "footprint" },
    interactive: false,
  }).addTo(layers.footprints);
  L.geoJSON({ type: "FeatureCollection", features: flights.filter((f) => f.properties.kind === "track") }, {
    style: { color: "#0d47a1", weight: 2.5, dashArray: "6 4", className: "track" },
    onEachFeature: (f, layer) =>
      layer.bindPopup(`<div class="popup"><h3>架次 flight ${f.properties.flight}</h3>${escapeHtml(f.properties.name)} · ${escapeHtml(f.properties.drone || "")} · ${f.properties.frames} 帧 frames</div>`),
  }).addTo(layers.tracks);
  L.geoJSON(data.findings, {
    style: (f) => ({
      color: "#b71c1c",
      weight: 2,
      fillColor: f.properties.class === "road_dust" ? "#ff8f00" : "#e53935",
      fillOpacity: 0.75,
      className: `finding finding-${f.properties.id}`,
    }),
    onEachFeature: (f, layer) => layer.bindPopup(() => findingPopup(f.properties), { maxWidth: 300 }),
  }).addTo(layers.findings);
  // A large registry comes a view at a time: once a response is truncated, every move asks
  // for the sites in view.
  byView = byView || data.truncated;
  status.textContent = `${data.sites.features.length} 工地 sites · ${data.findings.features.length} 发现 findings · ${flights.filter((f) => f.properties.kind === "track").length} 架次 flights`;
  if (data.truncated) status.textContent += " · 仅显示部分工地，请放大 (zoom in for all sites)";
  document.body.dataset.loaded = "true";
  if (!fittedOnce && data.extent) {
    const [west, south, east, north] = data.extent;
    fittedOnce = true;
    map.fitBounds(L.latLngBounds([south, west], [north, east]).pad(0.1));
  }
}

async function load() {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(document.getElementById("filters"))) {
    if (value) params.set(key, value);
  }
  if (byView) {
    const view = map.getBounds().pad(0.2);
    params.set("bbox", [view.getWest(), view.getSouth(), view.getEast(), view.getNorth()].map((v) => v.toFixed(6)).join(","));
  }
  status.textContent = "加载中 loading…";
  document.body.dataset.loaded = "false";
  try {
    draw(await (await api(`/map/data?${params}`)).json());
  } catch (error) {
    status.textContent = error.message;
  }
}

async function start() {
  document.getElementById("logout").hidden = false;
  await loadBureaus();
  await load();
}

if (token()) start();
else showLogin();
