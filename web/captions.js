// Caption files from committed text: WebVTT and SRT, built in the browser (no server round trip).
// A commit may be a few words; cues group them into readable blocks that break at sentence ends.

const MAX_CUE_CHARS = 84; // two lines of ~42 characters, the usual subtitle limit
const MAX_CUE_S = 6; // long cues are hard to read along with
const SENTENCE_END = /[.!?…。？！]["')\]]?$/;

/** Group commits ({text, start, end} in seconds) into cues ({text, start, end}). */
export function buildCues(commits) {
  const cues = [];
  let cue = null;
  for (const c of commits) {
    // Commit texts carry their own spacing (a piece may continue a word), so they are concatenated as is
    if (!c.text.trim()) continue;
    if (cue && (cue.text.length + c.text.length > MAX_CUE_CHARS || c.end - cue.start > MAX_CUE_S)) {
      cues.push(cue);
      cue = null;
    }
    if (cue) {
      cue.text += c.text;
      cue.end = Math.max(cue.end, c.end);
    } else {
      cue = { text: c.text.trimStart(), start: c.start, end: Math.max(c.end, c.start + 0.5) };
    }
    if (SENTENCE_END.test(c.text.trimEnd())) {
      cues.push(cue);
      cue = null;
    }
  }
  if (cue) cues.push(cue);
  for (const c of cues) c.text = c.text.trim();
  // Cues must not overlap: a later cue starts no earlier than the previous one ends
  for (let i = 1; i < cues.length; i++) {
    if (cues[i].start < cues[i - 1].end) cues[i - 1].end = Math.max(cues[i - 1].start + 0.1, cues[i].start);
  }
  return cues;
}

/** Seconds -> "HH:MM:SS.mmm" (WebVTT) or "HH:MM:SS,mmm" (SRT). */
export function formatTime(seconds, separator = ".") {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3600000);
  const m = Math.floor((ms % 3600000) / 60000);
  const s = Math.floor((ms % 60000) / 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(h)}:${pad(m)}:${pad(s)}${separator}${pad(ms % 1000, 3)}`;
}

function escapeVtt(text) {
  // '<' and '&' start markup in WebVTT; escaping '>' also rules out a stray "-->"
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function toWebVTT(commits) {
  const body = buildCues(commits)
    .map((c) => `${formatTime(c.start)} --> ${formatTime(c.end)}\n${escapeVtt(c.text)}\n`)
    .join("\n");
  return "WEBVTT\n\n" + body;
}

export function toSRT(commits) {
  return buildCues(commits)
    .map((c, i) => `${i + 1}\n${formatTime(c.start, ",")} --> ${formatTime(c.end, ",")}\n${c.text.replace(/-->/g, "->")}\n`)
    .join("\n");
}
