// Dragoman audience page: read-only live captions of one room (docs/protocol.md, "Rooms").
// Address: /watch/ROOM?token=VIEWER_TOKEN[&view=projection]. Nothing here can send audio or control the session.
import { qrSvg } from "/qr.js";

const MAX_RETRY_DELAY_S = 10;
const MAX_CHARS = 20000; // what the page keeps on screen (a replay brings back earlier captions on reconnect)
const PREFS = "dragoman.watch"; // theme, text size and view survive reloads (localStorage)

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), captions: $("captions"), committed: $("committed"), partial: $("partial"),
  smaller: $("smaller"), larger: $("larger"), theme: $("theme"), projection: $("projection"),
  fullscreen: $("fullscreen"), lang: $("lang"), langLabel: $("lang-label"),
  qrToggle: $("qr-toggle"), qr: $("qr"), qrCode: $("qr-code"),
};
const params = new URLSearchParams(location.search);
const room = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const state = {
  ws: null, opened: false, ended: false, retries: 0,
  text: { "": "" }, // committed captions per language ("" = as spoken)
  partial: { "": "" },
};
window.dragomanWatch = state; // for the end-to-end tests

function setStatus(text, kind) {
  ui.status.textContent = text;
  document.body.dataset.state = kind;
}

// --- display preferences ----------------------------------------------------------------------------------------

const prefs = Object.assign({ theme: "dark", size: 1.4, projection: false },
  JSON.parse(localStorage.getItem(PREFS) || "{}"));
if (params.get("view") === "projection") prefs.projection = true;
if (params.get("theme") === "light" || params.get("theme") === "dark") prefs.theme = params.get("theme");

function applyPrefs() {
  document.body.dataset.theme = prefs.theme;
  ui.theme.textContent = prefs.theme === "dark" ? "Dark" : "Light";
  ui.theme.setAttribute("aria-pressed", String(prefs.theme === "dark"));
  document.documentElement.style.setProperty("--size", `${prefs.size}rem`);
  document.body.classList.toggle("projection", prefs.projection);
  ui.projection.setAttribute("aria-pressed", String(prefs.projection));
  ui.projection.textContent = prefs.projection ? "Full transcript" : "Projection view";
  try { localStorage.setItem(PREFS, JSON.stringify(prefs)); } catch {}
  render();
}

ui.smaller.addEventListener("click", () => { prefs.size = Math.max(0.8, +(prefs.size / 1.15).toFixed(2)); applyPrefs(); });
ui.larger.addEventListener("click", () => { prefs.size = Math.min(6, +(prefs.size * 1.15).toFixed(2)); applyPrefs(); });
ui.theme.addEventListener("click", () => { prefs.theme = prefs.theme === "dark" ? "light" : "dark"; applyPrefs(); });
ui.projection.addEventListener("click", () => { prefs.projection = !prefs.projection; applyPrefs(); });
ui.fullscreen.addEventListener("click", () => {
  if (!document.fullscreenEnabled) return setStatus("This browser does not allow full screen here.", document.body.dataset.state);
  document.documentElement.requestFullscreen().catch(() => {});
});
ui.lang.addEventListener("change", render);
// A screen in the room shows its own link as a QR code: phones scan it and follow on their own (display options off)
ui.qrToggle.addEventListener("click", () => {
  const show = ui.qr.hidden;
  if (show && !ui.qrCode.firstChild) {
    const link = `${location.origin}${location.pathname}?token=${encodeURIComponent(params.get("token") || "")}`;
    try {
      ui.qrCode.append(qrSvg(link));
      ui.qrCode.dataset.text = link;
    } catch { ui.qrCode.textContent = link; } // too long for a QR code: the link itself
  }
  ui.qr.hidden = !show;
  ui.qrToggle.setAttribute("aria-pressed", String(show));
});

// --- captions ---------------------------------------------------------------------------------------------------

function render() {
  const lang = ui.lang.value;
  const follow = prefs.projection || ui.captions.scrollHeight - ui.captions.scrollTop - ui.captions.clientHeight < 48;
  ui.committed.textContent = (state.text[lang] || "").trimStart();
  ui.partial.textContent = state.partial[lang] || "";
  if (follow) ui.captions.scrollTop = ui.captions.scrollHeight;
}

function addLanguage(code) {
  if (code in state.text) return;
  state.text[code] = "";
  state.partial[code] = "";
  const opt = document.createElement("option");
  opt.value = code;
  let name = code;
  try { name = new Intl.DisplayNames([navigator.language || "en"], { type: "language" }).of(code.split("_")[0]); } catch {}
  opt.textContent = name;
  ui.lang.append(opt);
  ui.langLabel.hidden = false;
}

function onMessage(msg) {
  const lang = msg.target || "";
  switch (msg.type) {
    case "joined":
      // a (re)join replays every commit: start from a clean slate so nothing shows twice
      for (const k of Object.keys(state.text)) { state.text[k] = ""; state.partial[k] = ""; }
      state.retries = 0;
      setStatus(msg.live ? "Live" : "This talk has ended.", msg.live ? "live" : "ended");
      break;
    case "commit": case "target_commit":
      if (lang) addLanguage(lang);
      state.text[lang] = (state.text[lang] + (msg.text || "")).slice(-MAX_CHARS);
      state.partial[lang] = "";
      break;
    case "partial": case "target_partial":
      if (lang) addLanguage(lang);
      state.partial[lang] = msg.text || "";
      break;
    case "room_end":
      state.ended = true;
      for (const k of Object.keys(state.partial)) state.partial[k] = "";
      setStatus(`The speaker has stopped: ${msg.reason || "the room ended"}. The captions stay here.`, "ended");
      break;
    case "error":
      if (msg.code === "slow_client") setStatus("This screen fell behind the captions. Reload the page to catch up.", "error");
      break;
  }
  render();
}

function connect() {
  if (!room) return setStatus("This link has no room in it. Ask the speaker for the viewer link.", "error");
  const token = params.get("token") || "";
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/watch/` +
    `${encodeURIComponent(room)}?token=${encodeURIComponent(token)}`;
  const ws = new WebSocket(url);
  state.ws = ws;
  state.opened = false;
  ws.onopen = () => { state.opened = true; };
  ws.onmessage = (e) => {
    if (typeof e.data !== "string") return;
    try { onMessage(JSON.parse(e.data)); } catch { /* ignore what we do not understand */ }
  };
  ws.onclose = (e) => {
    if (ws !== state.ws || state.ended) return;
    if (e.code === 1008) return; // slow_client: said so above; a reload catches up
    if (!state.opened && state.retries === 0) {
      // the browser hides the handshake's status: refused (wrong or expired link, full room) or unreachable
      setStatus("Cannot join this room: the link is wrong or has expired (the talk ended), the room is full, " +
        "or the server cannot be reached. Ask the speaker for a fresh link.", "error");
      return;
    }
    if (state.retries >= 8) {
      return setStatus("Lost the connection to the captions and could not get it back. Reload to try again.", "error");
    }
    const delay = Math.min(MAX_RETRY_DELAY_S, 0.5 * 2 ** state.retries);
    state.retries += 1;
    setStatus(`Disconnected. Reconnecting in ${delay.toFixed(delay < 1 ? 1 : 0)} s… (captions so far are kept)`,
      "reconnecting");
    setTimeout(connect, delay * 1000);
  };
}

applyPrefs();
connect();
