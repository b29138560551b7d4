// Dragoman live captions: microphone -> server (WebSocket PCM or WebRTC) -> captions on the page.
// Protocol: docs/protocol.md. Captions already shown survive reconnects; only the tentative tail is dropped.
import { toSRT, toWebVTT } from "./captions.js";
import { qrSvg } from "./qr.js";

const PROTOCOL_VERSION = 1;
const TARGET_RATE = 16000; // what the worklet sends; the server accepts any rate but 16 kHz is the model's
const FRAME_SAMPLES = 320; // 20 ms frames
const MAX_RETRY_DELAY_S = 10;
const STOP_TIMEOUT_MS = 20000; // give up waiting for "end" after this long
const ICE_GATHER_TIMEOUT_MS = 2000;

const $ = (id) => document.getElementById(id);
const ui = {
  task: $("task"), language: $("language"), transport: $("transport"), start: $("start"), stop: $("stop"),
  status: $("status"), lag: $("lag"), level: $("level"), captions: $("captions"), partial: $("partial"),
  placeholder: $("placeholder"), vtt: $("download-vtt"), srt: $("download-srt"), clear: $("clear"),
  target: $("target"), targetLabel: $("target-label"), source: $("source"),
  vocabulary: $("vocabulary"), audioSource: $("audio-source"), share: $("share"), shareBox: $("share-box"), shareLink: $("share-link"),
  shareCopy: $("share-copy"), shareProjection: $("share-projection"), shareQr: $("share-qr"),
  detected: $("detected"), detectedText: $("detected-text"), detectedFix: $("detected-fix"),
  detectedOther: $("detected-other"),
};
const SOURCE_CHARS = 400; // how much of the source text the panel beside translated captions keeps

const state = {
  running: false, // the user pressed Start and not Stop
  stopping: false, // Stop pressed; waiting for the final commits and "end"
  ws: null,
  ready: false, // the current socket's session is ready for audio
  pc: null,
  stream: null,
  ctx: null,
  node: null,
  commits: [], // {text, start, end} in seconds since the first Start (or Clear)
  clock0: null, // performance.now() at the first Start
  offset: 0, // where the current server session's time 0 lies on our clock
  sessionCommits: 0, // commits received in the current server session
  retries: 0,
  retryTimer: null,
  stopTimer: null,
  lastError: null,
  sourceText: "", // with a caption language: the speech model's committed text (its last SOURCE_CHARS)
  sourcePartial: "",
  detected: null, // with Auto-detect: the server's latest `language` message ({language, decided})
};
window.dragoman = state; // for debugging and the end-to-end tests

// --- UI -------------------------------------------------------------------------------------------------------------

function setStatus(text, kind = null) {
  ui.status.textContent = text;
  if (kind) document.body.dataset.state = kind;
}

function syncControls() {
  const busy = state.running || state.stopping;
  ui.start.disabled = busy;
  ui.stop.disabled = !state.running;
  for (const el of [ui.task, ui.language, ui.transport, ui.target, ui.vocabulary, ui.share, ui.audioSource]) el.disabled = busy;
  const any = state.commits.length > 0;
  ui.vtt.disabled = ui.srt.disabled = !any;
  ui.clear.disabled = !any || busy;
}

function nearBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 48;
}

function renderPartial(text) {
  const follow = nearBottom(ui.captions);
  ui.partial.textContent = text;
  if (text) ui.placeholder.hidden = true;
  if (follow) ui.captions.scrollTop = ui.captions.scrollHeight; // auto-scroll unless the reader scrolled up
}

function addCommit(msg) {
  let text = msg.text || "";
  if (!text.trim()) return;
  const follow = nearBottom(ui.captions);
  // Commits concatenate to the transcript (they carry their own spaces); only a new server session's first
  // commit needs one added, and the very first has its leading space dropped
  if (state.commits.length === 0) text = text.trimStart();
  else if (state.sessionCommits === 0 && !/^\s/.test(text)) text = " " + text;
  state.sessionCommits += 1;
  state.commits.push({ text, start: state.offset + (msg.start_s ?? 0), end: state.offset + (msg.end_s ?? 0) });
  const span = document.createElement("span");
  span.className = "commit";
  span.textContent = text;
  ui.captions.insertBefore(span, ui.partial);
  ui.placeholder.hidden = true;
  ui.partial.textContent = ""; // the commit supersedes the tail; the next partial follows
  if (follow) ui.captions.scrollTop = ui.captions.scrollHeight;
  syncControls();
}

// --- captions in another language (docs/mt.md) ------------------------------------------------------------------

async function loadTargets() {
  // Only the languages this server's MT models can caption in; none: the selector stays hidden
  try {
    const res = await fetch("/v1/targets", { cache: "no-store" });
    if (!res.ok) return;
    const { targets } = await res.json();
    for (const code of targets || []) {
      const opt = document.createElement("option");
      opt.value = code;
      let name = code;
      try { name = new Intl.DisplayNames([navigator.language || "en"], { type: "language" }).of(code.split("_")[0]); } catch {}
      opt.textContent = name === code ? code : `${name} (${code})`;
      ui.target.append(opt);
    }
    ui.targetLabel.hidden = !(targets && targets.length);
  } catch { /* an older server: no selector */ }
}

function translating() {
  return Boolean(ui.target.value);
}

function showSource(msg, committed) {
  // The source text beside the translation: committed text, then the tentative tail in grey
  if (committed) {
    state.sourceText = (state.sourceText + (msg.text || "")).slice(-SOURCE_CHARS);
    state.sourcePartial = "";
  } else {
    state.sourcePartial = msg.text || "";
  }
  ui.source.hidden = false;
  ui.source.textContent = "";
  const done = document.createElement("span");
  done.textContent = state.sourceText.trimStart();
  const tail = document.createElement("span");
  tail.className = "partial";
  tail.textContent = state.sourcePartial;
  ui.source.append(done, tail);
  ui.source.scrollTop = ui.source.scrollHeight;
}

function showLag(lag) {
  if (lag == null) {
    ui.lag.textContent = "lag —";
    ui.lag.className = "lag";
    return;
  }
  ui.lag.textContent = `lag ${lag.toFixed(1)} s`;
  ui.lag.className = "lag " + (lag < 2.5 ? "ok" : lag < 5 ? "warn" : "bad");
}

function clockNow() {
  return (performance.now() - state.clock0) / 1000;
}

// --- microphone -----------------------------------------------------------------------------------------------------

async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("This browser only allows the microphone on secure pages: open Dragoman via https:// or " +
      "http://localhost on the machine running the server.");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      // Raw speech recognises better than speech "cleaned up" for calls
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (e) {
    if (e.name === "NotAllowedError" || e.name === "SecurityError") {
      throw new Error("Microphone access was denied. Allow the microphone for this page in the browser's " +
        "site settings (the icon left of the address), then press Start again.");
    }
    if (e.name === "NotFoundError" || e.name === "OverconstrainedError") {
      throw new Error("No microphone was found. Connect one and press Start again.");
    }
    if (e.name === "NotReadableError") {
      throw new Error("The microphone is in use by another application or could not be opened.");
    }
    throw new Error(`Could not open the microphone: ${e.message || e.name}`);
  }
}

// Tab audio (getDisplayMedia): the sound of a video call, a stream or a recording playing in another tab; optionally
// mixed with the microphone in an AudioContext. Desktop Chrome/Edge share a tab's sound ("Share tab audio"); Firefox
// and Safari share no audio this way, and phones cannot share at all: those say so instead of capturing silence.
async function openTabAudio() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    throw new Error("This browser cannot capture a tab's sound (desktop Chrome or Edge can; phones cannot). " +
      "Choose \"Microphone\" under \"Audio from\".");
  }
  let display;
  try {
    display = await navigator.mediaDevices.getDisplayMedia({
      video: true, // browsers require video to share; only the sound is used
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      systemAudio: "include",
    });
  } catch (e) {
    throw new Error(e.name === "NotAllowedError"
      ? "Sharing was cancelled. Press Start, pick the tab and tick \"Share tab audio\"."
      : `Could not capture a tab: ${e.message || e.name}`);
  }
  if (!display.getAudioTracks().length) {
    for (const t of display.getTracks()) t.stop();
    throw new Error("What you shared has no sound. Share a browser tab with \"Share tab audio\" ticked " +
      "(this browser may not share sound at all: then use the microphone).");
  }
  // the person pressed the browser's "Stop sharing": stop like the Stop button
  display.getAudioTracks()[0].addEventListener("ended", () => stop());
  return display;
}

async function openAudio() {
  const kind = ui.audioSource.value;
  if (kind === "mic") return openMicrophone();
  const display = await openTabAudio();
  state.extraStreams = [display];
  if (kind === "tab") return new MediaStream(display.getAudioTracks());
  let mic;
  try {
    mic = await openMicrophone();
  } catch (e) {
    for (const t of display.getTracks()) t.stop();
    state.extraStreams = [];
    throw e;
  }
  state.extraStreams.push(mic);
  const ctx = new AudioContext();
  const mix = ctx.createMediaStreamDestination();
  ctx.createMediaStreamSource(new MediaStream(display.getAudioTracks())).connect(mix);
  ctx.createMediaStreamSource(mic).connect(mix);
  state.mixCtx = ctx;
  if (ctx.state === "suspended") await ctx.resume();
  return mix.stream;
}

function stopMicrophone() {
  for (const s of state.extraStreams || []) for (const t of s.getTracks()) t.stop();
  state.extraStreams = [];
  if (state.mixCtx) { state.mixCtx.close(); state.mixCtx = null; }
  if (state.node) { state.node.port.onmessage = null; state.node.disconnect(); state.node = null; }
  if (state.ctx) { state.ctx.close(); state.ctx = null; }
  if (state.stream) { for (const t of state.stream.getTracks()) t.stop(); state.stream = null; }
  ui.level.value = 0;
}

let levelCounter = 0;
function meterLevel(frame) {
  if (++levelCounter % 5) return; // every 100 ms is plenty
  let sum = 0;
  for (let i = 0; i < frame.length; i++) sum += frame[i] * frame[i];
  const rms = Math.sqrt(sum / frame.length) / 32768;
  ui.level.value = Math.min(1, Math.sqrt(rms) * 2); // perceptual-ish scale
}

// The AudioWorklet runs for the whole capture and drives the level meter on both transports; with the WebSocket
// transport its frames also go to whichever socket is ready (WebRTC sends the track itself).
async function startCapture() {
  if (state.node) return; // survives reconnects
  // The context runs at the device's rate; the worklet reads it and resamples, so no sampleRate is forced here
  state.ctx = new AudioContext();
  await state.ctx.audioWorklet.addModule("capture-worklet.js");
  const source = state.ctx.createMediaStreamSource(state.stream);
  state.node = new AudioWorkletNode(state.ctx, "capture-16k", {
    numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { targetRate: TARGET_RATE, frameSamples: FRAME_SAMPLES },
  });
  state.node.port.onmessage = (e) => {
    if (!(e.data instanceof ArrayBuffer)) return; // {type: "rate"} info
    meterLevel(new Int16Array(e.data));
    if (ui.transport.value !== "websocket") return;
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN && state.ready && !state.stopping) ws.send(e.data);
  };
  // A worklet is only pulled while connected towards the destination; a muted gain keeps it silent
  const mute = state.ctx.createGain();
  mute.gain.value = 0;
  source.connect(state.node).connect(mute).connect(state.ctx.destination);
  if (state.ctx.state === "suspended") await state.ctx.resume();
}

// WebRTC: a fresh peer connection per server session; the answer comes back over the socket.
async function startWebRtc(iceServers) {
  const pc = new RTCPeerConnection({ iceServers: iceServers || [] });
  state.pc = pc;
  for (const track of state.stream.getAudioTracks()) pc.addTrack(track, state.stream);
  let offerSent = false;
  pc.onicecandidate = (e) => {
    // Late candidates trickle; most are already in the offer because we wait for gathering below
    if (!offerSent || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
    const c = e.candidate;
    send({ type: "ice", candidate: c ? c.candidate : null, sdpMid: c ? c.sdpMid : null,
      sdpMLineIndex: c ? c.sdpMLineIndex : null });
  };
  pc.onconnectionstatechange = () => {
    if (pc !== state.pc) return;
    if (pc.connectionState === "connected") setStatus("Listening (WebRTC)…", "live");
    if (pc.connectionState === "failed") {
      setStatus("The WebRTC connection failed. Try the WebSocket transport, or configure a TURN server " +
        "(dragoman serve --ice-server).", "error");
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
  if (pc !== state.pc) return; // torn down meanwhile
  send({ type: "offer", sdp: pc.localDescription.sdp });
  offerSent = true;
}

// --- connection -----------------------------------------------------------------------------------------------------

function wsUrl() {
  // A server started with --token needs it on the socket: a page opened as /?token=... passes it on
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${query}`;
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function connect() {
  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  let opened = false;
  setStatus(state.retries ? "Reconnecting…" : "Connecting…", state.retries ? "reconnecting" : "connecting");

  ws.onopen = () => {
    opened = true;
    send({
      type: "start", protocol: PROTOCOL_VERSION, task: ui.task.value,
      language: ui.language.value === "auto" ? null : ui.language.value,
      sample_rate: TARGET_RATE, encoding: "pcm_s16le",
      ...(translating() ? { target: ui.target.value } : {}),
      ...(ui.vocabulary.value.trim() ? { vocabulary: ui.vocabulary.value.trim() } : {}),
      ...(ui.share.checked ? { room: true } : {}),
    });
  };
  ws.onmessage = (e) => {
    if (ws !== state.ws || typeof e.data !== "string") return;
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    onMessage(msg).catch((err) => setStatus(`Error: ${err.message || err}`, "error"));
  };
  ws.onclose = (e) => {
    if (ws !== state.ws) return;
    closeTransport();
    state.ws = null;
    if (state.stopping) return finishStop();
    if (!state.running) return;
    // Unexpected: keep the captions, retry with backoff
    const delay = Math.min(MAX_RETRY_DELAY_S, 0.5 * 2 ** state.retries);
    state.retries += 1;
    if (!opened) return diagnose(delay);
    const why = `Connection to the server lost${e.reason ? ` (${e.reason})` : ""}.`;
    setStatus(`${why} Retrying in ${delay.toFixed(delay < 1 ? 1 : 0)} s… (captions so far are kept)`, "reconnecting");
    showLag(null);
    state.retryTimer = setTimeout(() => { state.retryTimer = null; if (state.running) connect(); }, delay * 1000);
  };
}

// The browser hides why a WebSocket handshake failed: ask the server over HTTP (wrong token, busy, or gone).
async function diagnose(delay) {
  const token = new URLSearchParams(location.search).get("token");
  let verdict = "down";
  try {
    const res = await fetch(`/metrics${token ? `?token=${encodeURIComponent(token)}` : ""}`, { cache: "no-store" });
    verdict = res.status === 401 ? "token" : res.status === 403 ? "origin" : "up";
    if (verdict === "up") {
      const health = await fetch("/healthz", { cache: "no-store" });
      const body = await health.json();
      if (health.status === 503) verdict = body.status === "shutting_down" ? "refused" : "busy";
    }
  } catch { verdict = "down"; }
  if (!state.running) return;
  if (verdict === "token" || verdict === "origin") {
    setStatus(verdict === "token"
      ? "The access token is missing or wrong. Open the page with the full link you were given (…/?token=…), then press Start."
      : "This server does not accept pages from this address (see dragoman serve --allow-origin).", "error");
    return stop(true);
  }
  const why = verdict === "down"
    ? `Cannot reach the Dragoman server at ${location.host}. Is "dragoman serve" still running?`
    : verdict === "busy" ? "The server is busy with other sessions." : "The server refused the connection.";
  setStatus(`${why} Retrying in ${delay.toFixed(delay < 1 ? 1 : 0)} s… (captions so far are kept)`, "reconnecting");
  state.retryTimer = setTimeout(() => { state.retryTimer = null; if (state.running) connect(); }, delay * 1000);
}

function showRoom(msg) {
  // The audience link: anyone with it can read the captions (never send audio); it lasts as long as this session
  const link = `${location.origin}${msg.watch_path}`;
  ui.shareLink.href = ui.shareLink.textContent = link;
  ui.shareProjection.href = `${link}&view=projection`;
  // phones in the audience scan it from the speaker's screen (or a projected slide) instead of typing the link
  try {
    ui.shareQr.replaceChildren(qrSvg(link));
    ui.shareQr.dataset.text = link;
  } catch {
    ui.shareQr.replaceChildren(); // a link too long for a QR code: the link itself is still there
  }
  ui.shareBox.hidden = false;
}

// --- auto-detection: show the language heard, correct it in one click ------------------------------------------

function languageName(code) {
  const option = [...ui.language.options].find((o) => o.value === code);
  if (option) return option.textContent;
  try { return new Intl.DisplayNames(["en"], { type: "language" }).of(code) || code; } catch { return code; }
}

function correctionCandidates(detected) {
  // The languages a correction most likely needs: the browser's own, then the most spoken ones on this page
  const offered = [...ui.language.options].map((o) => o.value).filter((v) => v !== "auto");
  const preferred = (navigator.languages || []).map((l) => l.split("-")[0].toLowerCase());
  const picks = [...new Set([...preferred, "en", "de", "fr", "es"])];
  return picks.filter((c) => c !== detected && offered.includes(c)).slice(0, 3);
}

function showDetected(msg) {
  if (ui.language.value !== "auto" || !msg.language) return;
  const same = state.detected && state.detected.language === msg.language && state.detected.decided === msg.decided;
  state.detected = { language: msg.language, decided: Boolean(msg.decided) };
  if (same && !ui.detected.hidden) return;
  const name = languageName(msg.language);
  ui.detectedText.textContent = msg.decided
    ? `Spoken language detected: ${name}. Not ${name}?`
    : `Hearing ${name}? (still listening to be sure; captions follow once it is) Not ${name}?`;
  ui.detected.classList.toggle("unsure", !msg.decided);
  ui.detectedFix.textContent = "";
  for (const code of correctionCandidates(msg.language)) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.language = code;
    b.textContent = languageName(code);
    b.title = `Restart captioning as ${languageName(code)} (captions so far are kept)`;
    b.addEventListener("click", () => correctLanguage(code));
    ui.detectedFix.append(b);
  }
  ui.detectedOther.textContent = "";
  const none = new Option("choose…", "");
  ui.detectedOther.append(none);
  for (const o of ui.language.options) {
    if (o.value !== "auto" && o.value !== msg.language) ui.detectedOther.append(new Option(o.textContent, o.value));
  }
  ui.detected.hidden = false;
}

ui.detectedOther.addEventListener("change", () => {
  if (ui.detectedOther.value) correctLanguage(ui.detectedOther.value);
});

// The speaker says which language it is: the server restarts the session in that language at once, on the same
// socket, audio and room (viewers keep their link); what was captioned stays, speech not yet committed is dropped.
function correctLanguage(code) {
  ui.language.value = code;
  ui.detected.hidden = true;
  state.detected = null;
  if (!state.running || state.stopping) return; // not streaming: it applies to the next Start
  renderPartial("");
  if (state.ready && state.ws && state.ws.readyState === WebSocket.OPEN) {
    send({ type: "language", language: code }); // answered with "restarted"
    setStatus(`Restarting in ${languageName(code)}…`, "connecting");
    return;
  }
  // no session yet (still connecting): start afresh with the language
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close(1000, "language corrected");
  closeTransport();
  if (state.retryTimer) { clearTimeout(state.retryTimer); state.retryTimer = null; }
  state.retries = 0;
  connect();
  setStatus(`Restarting in ${languageName(code)}…`, "connecting");
}

ui.shareCopy.addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(ui.shareLink.href);
    ui.shareCopy.textContent = "Copied";
  } catch {
    ui.shareCopy.textContent = "Select the link to copy it";
  }
  setTimeout(() => { ui.shareCopy.textContent = "Copy link"; }, 2000);
});

async function onMessage(msg) {
  switch (msg.type) {
    case "ready":
      state.ready = true;
      state.retries = 0;
      state.offset = clockNow(); // this session's time 0 on the page's clock
      state.sessionCommits = 0;
      ui.detected.hidden = true; // a new session detects (and announces) its language afresh
      await startCapture();
      if (ui.transport.value === "webrtc") {
        setStatus("Connecting audio (WebRTC)…", "connecting");
        await startWebRtc(msg.ice_servers);
      } else {
        setStatus("Listening…", "live");
      }
      break;
    case "language":
      showDetected(msg);
      break;
    case "restarted": // the session runs anew in the corrected language: its stream time starts again at 0
      state.offset = clockNow();
      state.sessionCommits = 0;
      ui.detected.hidden = true;
      setStatus(ui.transport.value === "webrtc" ? "Listening (WebRTC)…" : "Listening…", "live");
      break;
    case "partial":
      if (translating()) showSource(msg, false);
      else renderPartial(msg.text || "");
      break;
    case "commit":
      if (translating()) showSource(msg, true);
      else addCommit(msg);
      break;
    case "target_partial":
      if (msg.target === ui.target.value) renderPartial(msg.text || "");
      break;
    case "target_commit":
      if (msg.target === ui.target.value) addCommit(msg);
      break;
    case "room":
      showRoom(msg);
      break;
    case "stats":
      showLag(msg.lag_s);
      break;
    case "answer":
      if (state.pc) await state.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      break;
    case "error":
      state.lastError = msg;
      if (msg.code === "busy") {
        setStatus("The server is busy with other sessions. Try again in a minute.", "error");
        stop(true);
      } else if (msg.code === "internal") {
        // the session is over on the server: stop sending, say so, let the speaker start again
        setStatus(`The session failed on the server (${msg.message}). Your captions are kept; press Start to ` +
          "begin a new session.", "error");
        stop(true);
      } else if (msg.code === "bad_message" && !state.ready) {
        setStatus(`The server refused these settings: ${msg.message}`, "error");
        stop(true);
      } else {
        setStatus(`Server: ${msg.message}`, state.running ? document.body.dataset.state : "error");
      }
      break;
    case "end":
      renderPartial("");
      if (state.stopping && state.ws) state.ws.close(1000, "done");
      break;
  }
}

function closeTransport() {
  state.ready = false;
  if (state.pc) { state.pc.close(); state.pc = null; }
}

// --- start / stop ---------------------------------------------------------------------------------------------------

async function start() {
  if (state.running || state.stopping) return;
  state.running = true;
  state.lastError = null;
  syncControls();
  setStatus(ui.audioSource.value === "mic" ? "Waiting for the microphone…" : "Pick the tab to caption…", "connecting");
  try {
    state.stream = await openAudio();
  } catch (e) {
    state.running = false;
    syncControls();
    setStatus(e.message, "error");
    return;
  }
  if (state.clock0 === null) state.clock0 = performance.now();
  state.retries = 0;
  connect();
}

function stop(immediately = false) {
  if (!state.running) return;
  state.running = false;
  if (state.retryTimer) { clearTimeout(state.retryTimer); state.retryTimer = null; }
  const ws = state.ws;
  if (!immediately && ws && ws.readyState === WebSocket.OPEN && state.ready) {
    state.stopping = true;
    send({ type: "stop" });
    setStatus("Finishing the last words…", "stopping");
    state.stopTimer = setTimeout(() => { if (state.ws) state.ws.close(1000, "stop timeout"); }, STOP_TIMEOUT_MS);
  } else if (ws) {
    state.ws = null;
    ws.close(1000, "stopped");
    closeTransport();
  }
  stopMicrophone();
  if (!state.stopping) ui.shareBox.hidden = true;
  syncControls();
  if (!state.stopping && document.body.dataset.state !== "error") setStatus("Stopped.", "idle");
}

function finishStop() {
  state.stopping = false;
  ui.shareBox.hidden = true; // the room ended with the session
  if (state.stopTimer) { clearTimeout(state.stopTimer); state.stopTimer = null; }
  showLag(null);
  syncControls();
  setStatus(state.commits.length ? "Stopped. Download the captions below." : "Stopped.", "idle");
}

// --- downloads ------------------------------------------------------------------------------------------------------

function download(text, extension, mime) {
  const stamp = new Date().toISOString().slice(0, 16).replace(/[-:T]/g, "");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: mime }));
  a.download = `dragoman-captions-${stamp}.${extension}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", () => stop());
ui.vtt.addEventListener("click", () => download(toWebVTT(state.commits), "vtt", "text/vtt"));
ui.srt.addEventListener("click", () => download(toSRT(state.commits), "srt", "application/x-subrip"));
ui.clear.addEventListener("click", () => {
  state.commits = [];
  state.clock0 = null;
  for (const el of [...ui.captions.querySelectorAll(".commit")]) el.remove();
  ui.partial.textContent = "";
  ui.placeholder.hidden = false;
  state.sourceText = state.sourcePartial = "";
  ui.source.textContent = "";
  ui.source.hidden = true;
  syncControls();
});
window.addEventListener("pagehide", () => stop(true));
syncControls();
loadTargets();
