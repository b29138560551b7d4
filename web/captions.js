// Caption files from committed text: WebVTT and SRT, built in the browser (no server round trip).
// The same cue rule as app/captions.py, whose CueBuilder this follows line by line; the numbers and patterns come
// from caption-rules.json, read by both. tests/web/test_captions_js.py runs this file and the Python one on the
// same commits and compares the files byte for byte, so a change to either must be made to both.
// Lengths count code points (Python's len), times round half up to the millisecond: both languages agree exactly.
import RULES from "./caption-rules.json" with { type: "json" };

const SENTENCE_END = new RegExp(RULES.sentence_end);
const CLAUSE_END = new RegExp(RULES.clause_end);
const CONJUNCTIONS = new Set(RULES.conjunctions);
const SPACE = new RegExp(RULES.space);
const SPACES = new RegExp(RULES.space + "+");

export const DEFAULT_CONFIG = Object.freeze({
  maxLineChars: RULES.max_line_chars, maxLines: RULES.max_lines, minDurationS: RULES.min_duration_s,
  maxDurationS: RULES.max_duration_s, pauseS: RULES.pause_s,
});

const codePoints = (s) => Array.from(s);
const length = (s) => { let n = 0; for (const _ of s) n++; return n; };
const roundMs = (seconds) => Math.floor(seconds * 1000 + 0.5) / 1000;

/** Words as at most `maxLines` balanced lines of at most `maxLineChars`, or null when they do not fit. */
export function wrapLines(words, maxLineChars, maxLines) {
  const text = words.join(" ");
  if (length(text) <= maxLineChars) return [text];
  if (maxLines === 1) return null;
  // Balanced split (shortest longest line): two half-full lines read faster than one full and one stub
  let best = null;
  const longest = (lines) => Math.max(...lines.map(length));
  for (let i = 1; i < words.length; i++) {
    const head = words.slice(0, i).join(" ");
    if (length(head) > maxLineChars) break;
    const rest = wrapLines(words.slice(i), maxLineChars, maxLines - 1);
    if (rest === null) continue;
    const lines = [head, ...rest];
    if (best === null || longest(lines) < longest(best)) best = lines;
  }
  return best;
}

/** Sans-I/O: commits ({text, start, end} in seconds) in, finished cues ({start, end, lines}) out. */
export class CueBuilder {
  constructor(config = DEFAULT_CONFIG) {
    this.config = config;
    this.words = []; // the open cue: {text, start, end}
    this.lastEnd = 0; // end of the last word seen: word times never go backwards
    this.writtenEnd = 0; // end of the last finished cue: the next one starts no earlier
  }

  add(commit) {
    let done = [];
    let words = this.split(commit);
    if (words.length && this.words.length && !SPACE.test(codePoints(commit.text)[0] ?? "")) {
      // A commit that does not start with a space continues the previous word ("nice" + ", and")
      const glued = words[0];
      const last = this.words.pop();
      words = [...this.glue(last, glued), ...words.slice(1)];
    }
    for (const word of words) done = done.concat(this.addWord(word));
    return done;
  }

  /** The stream reached `streamS` with no new words: close the open cue once that is a pause. */
  advance(streamS) {
    if (this.words.length && streamS - this.words[this.words.length - 1].end >= this.config.pauseS) return this.close();
    return [];
  }

  finish() {
    return this.close();
  }

  /** A word and the piece that continues it; cut again into line-sized parts when that outgrows a line. */
  glue(last, piece) {
    const text = codePoints(last.text + piece.text);
    const n = this.config.maxLineChars;
    if (text.length <= n) return [{ text: text.join(""), start: last.start, end: piece.end }];
    const span = piece.end - last.start;
    const parts = [];
    for (let i = 0; i < text.length; i += n) {
      parts.push({ text: text.slice(i, i + n).join(""), start: last.start + span * i / text.length,
        end: last.start + span * Math.min(i + n, text.length) / text.length });
    }
    return parts;
  }

  split(commit) {
    const n = this.config.maxLineChars;
    const tokens = [];
    for (const token of commit.text.split(SPACES)) {
      if (!token) continue;
      // A "word" longer than a line (CJK text has no spaces) is cut into line-sized pieces
      const chars = codePoints(token);
      for (let i = 0; i < chars.length; i += n) tokens.push(chars.slice(i, i + n).join(""));
    }
    if (!tokens.length) return [];
    const start = Math.max(commit.start, this.lastEnd);
    const end = Math.max(commit.end, start);
    const total = tokens.reduce((sum, t) => sum + length(t) + 1, 0);
    const words = [];
    let pos = 0;
    for (const token of tokens) {
      const wStart = start + (end - start) * pos / total;
      pos += length(token) + 1;
      words.push({ text: token, start: wStart, end: start + (end - start) * pos / total });
    }
    this.lastEnd = end;
    return words;
  }

  addWord(word) {
    const cfg = this.config;
    let done = [];
    if (this.words.length) {
      const paused = word.start - this.words[this.words.length - 1].end >= cfg.pauseS;
      if (paused) done = this.close();
      else if (!this.takes(word)) {
        done = this.close(this.clauseBreak());
        if (this.words.length && !this.takes(word)) done = done.concat(this.close()); // the rest is still too much
      }
    }
    this.words.push(word);
    if (SENTENCE_END.test(word.text)) done = done.concat(this.close());
    return done;
  }

  /** Whether the open cue can grow by `word`: not too long, and it still wraps into its lines. */
  takes(word) {
    const cfg = this.config;
    if (word.end - this.words[0].start > cfg.maxDurationS) return false;
    return wrapLines([...this.words.map((w) => w.text), word.text], cfg.maxLineChars, cfg.maxLines) !== null;
  }

  /** How many open words to close when the cue is full: up to its last clause end, else before its last
   * conjunction, unless either would leave a stub in the first third. */
  clauseBreak() {
    const words = this.words;
    const first = Math.floor(words.length / 3);
    for (let i = words.length - 1; i >= first; i--) if (CLAUSE_END.test(words[i].text)) return i + 1;
    for (let i = words.length - 1; i >= Math.max(first, 1); i--) if (CONJUNCTIONS.has(words[i].text.toLowerCase())) return i;
    return words.length;
  }

  close(nWords = null) {
    if (!this.words.length) return [];
    const cfg = this.config;
    const n = nWords === null ? this.words.length : nWords;
    const words = this.words.slice(0, n);
    this.words = this.words.slice(n);
    const lines = wrapLines(words.map((w) => w.text), cfg.maxLineChars, cfg.maxLines);
    const start = Math.max(words[0].start, this.writtenEnd);
    let end = Math.max(words[words.length - 1].end, start + cfg.minDurationS);
    if (this.words.length) end = Math.min(end, Math.max(this.words[0].start, words[words.length - 1].end));
    this.writtenEnd = end;
    return [{ start: roundMs(start), end: roundMs(end), lines }];
  }
}

/** Every cue of a list of commits ({text, start, end} in seconds). */
export function buildCues(commits, config = DEFAULT_CONFIG) {
  const builder = new CueBuilder(config);
  let cues = [];
  for (const c of commits) cues = cues.concat(builder.add(c));
  return cues.concat(builder.finish());
}

/** Seconds -> "HH:MM:SS.mmm" (WebVTT) or "HH:MM:SS,mmm" (SRT). */
export function formatTime(seconds, separator = ".") {
  const ms = Math.max(0, Math.floor(seconds * 1000 + 0.5));
  const h = Math.floor(ms / 3600000);
  const m = Math.floor((ms % 3600000) / 60000);
  const s = Math.floor((ms % 60000) / 1000);
  const pad = (v, w = 2) => String(v).padStart(w, "0");
  return `${pad(h)}:${pad(m)}:${pad(s)}${separator}${pad(ms % 1000, 3)}`;
}

function escapeVtt(line) {
  // WebVTT cue text is markup: escape it, and "-->" would end the cue payload
  return line.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** One cue as file text, ending in the blank line that separates cues; `index` counts from 1. */
export function formatCue(cue, index, format) {
  if (format === "vtt") {
    return `${index}\n${formatTime(cue.start)} --> ${formatTime(cue.end)}\n${cue.lines.map(escapeVtt).join("\n")}\n\n`;
  }
  // SRT has no escaping; "-->" inside text would confuse parsers, so it is softened to an arrow
  return `${index}\n${formatTime(cue.start, ",")} --> ${formatTime(cue.end, ",")}\n` +
    `${cue.lines.map((l) => l.replaceAll("-->", "→")).join("\n")}\n\n`;
}

export function formatCaptions(cues, format) {
  return (format === "vtt" ? "WEBVTT\n\n" : "") + cues.map((c, i) => formatCue(c, i + 1, format)).join("");
}

export function toWebVTT(commits) {
  return formatCaptions(buildCues(commits), "vtt");
}

export function toSRT(commits) {
  return formatCaptions(buildCues(commits), "srt");
}
