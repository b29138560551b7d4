// QR codes for the audience link, drawn in the page (no network: the page works offline and on a LAN).
// ISO/IEC 18004 in byte mode (UTF-8), error correction level M (15 % of the code may be damaged or covered),
// versions 1-15 (up to 412 bytes: any link Dragoman prints fits). tests/web/test_qr_js.py compares every version and
// mask with an independent encoder (segno) module by module, and reads the code back with a decoder where installed.

const MAX_VERSION = 15;
// Level M per version: error correction codewords per block, and the blocks as [count, data codewords] groups.
const BLOCKS_M = [
  null,
  [10, [[1, 16]]], [16, [[1, 28]]], [26, [[1, 44]]], [18, [[2, 32]]], [24, [[2, 43]]],
  [16, [[4, 27]]], [18, [[4, 31]]], [22, [[2, 38], [2, 39]]], [22, [[3, 36], [2, 37]]], [26, [[4, 43], [1, 44]]],
  [30, [[1, 50], [4, 51]]], [22, [[6, 36], [2, 37]]], [22, [[8, 37], [1, 38]]], [24, [[4, 40], [5, 41]]],
  [24, [[5, 41], [5, 42]]],
];
const FORMAT_M = 0b00; // the level's two bits in the format information (L 01, M 00, Q 11, H 10)

const dataCodewords = (version) => BLOCKS_M[version][1].reduce((n, [count, size]) => n + count * size, 0);
const countBits = (version) => (version <= 9 ? 8 : 16); // byte mode's character count field

/** The smallest version whose level-M capacity holds `n` bytes, or null when none up to MAX_VERSION does. */
export function versionFor(n) {
  for (let v = 1; v <= MAX_VERSION; v++) if (4 + countBits(v) + 8 * n <= 8 * dataCodewords(v)) return v;
  return null;
}

// --- Reed-Solomon over GF(256), polynomial x^8 + x^4 + x^3 + x^2 + 1 ---------------------------------------------

function gfMul(a, b) {
  let product = 0;
  for (let i = 7; i >= 0; i--) {
    product = (product << 1) ^ ((product >>> 7) * 0x11d);
    if ((b >>> i) & 1) product ^= a;
  }
  return product;
}

/** The generator polynomial (x - a^0)(x - a^1)...(x - a^(degree-1)), highest coefficient (1) left out. */
function generator(degree) {
  const g = new Array(degree).fill(0);
  g[degree - 1] = 1;
  let root = 1;
  for (let i = 0; i < degree; i++) {
    for (let j = 0; j < degree; j++) {
      g[j] = gfMul(g[j], root);
      if (j + 1 < degree) g[j] ^= g[j + 1];
    }
    root = gfMul(root, 2);
  }
  return g;
}

function errorCorrection(data, g) {
  const rest = new Array(g.length).fill(0);
  for (const byte of data) {
    const factor = byte ^ rest.shift();
    rest.push(0);
    for (let i = 0; i < g.length; i++) rest[i] ^= gfMul(g[i], factor);
  }
  return rest;
}

// --- codewords --------------------------------------------------------------------------------------------------

function dataBytes(bytes, version) {
  const bits = [];
  const put = (value, n) => { for (let i = n - 1; i >= 0; i--) bits.push((value >>> i) & 1); };
  put(0b0100, 4); // byte mode
  put(bytes.length, countBits(version));
  for (const b of bytes) put(b, 8);
  const capacity = 8 * dataCodewords(version);
  put(0, Math.min(4, capacity - bits.length)); // terminator
  while (bits.length % 8) bits.push(0);
  const out = [];
  for (let i = 0; i < bits.length; i += 8) out.push(bits.slice(i, i + 8).reduce((v, bit) => (v << 1) | bit, 0));
  for (let pad = 0xec; out.length < capacity / 8; pad ^= 0xec ^ 0x11) out.push(pad);
  return out;
}

/** Data split into blocks, each with its error correction; codewords interleaved across blocks. */
function codewords(data, version) {
  const [ecPerBlock, groups] = BLOCKS_M[version];
  const g = generator(ecPerBlock);
  const blocks = [];
  let at = 0;
  for (const [count, size] of groups) {
    for (let i = 0; i < count; i++) {
      const block = data.slice(at, at + size);
      at += size;
      blocks.push({ data: block, ec: errorCorrection(block, g) });
    }
  }
  const out = [];
  const longest = Math.max(...blocks.map((b) => b.data.length));
  for (let i = 0; i < longest; i++) for (const b of blocks) if (i < b.data.length) out.push(b.data[i]);
  for (let i = 0; i < ecPerBlock; i++) for (const b of blocks) out.push(b.ec[i]);
  return out;
}

// --- the matrix -----------------------------------------------------------------------------------------------

class Matrix {
  constructor(version) {
    this.size = 17 + 4 * version;
    this.dark = Array.from({ length: this.size }, () => new Array(this.size).fill(false)); // [row][col]
    this.reserved = Array.from({ length: this.size }, () => new Array(this.size).fill(false)); // function modules
  }

  set(row, col, dark) {
    this.dark[row][col] = dark;
    this.reserved[row][col] = true;
  }
}

function bch(value, poly, degree) {
  // remainder of value * x^degree divided by poly (both as bit strings)
  let rem = value << degree;
  const top = 31 - Math.clz32(poly);
  for (let bit = 31 - Math.clz32(rem); bit >= top; bit--) if ((rem >>> bit) & 1) rem ^= poly << (bit - top);
  return rem;
}

function drawFunctionPatterns(m, version) {
  const n = m.size;
  for (let i = 0; i < n; i++) { // timing patterns
    m.set(6, i, i % 2 === 0);
    m.set(i, 6, i % 2 === 0);
  }
  for (const [r0, c0] of [[0, 0], [0, n - 7], [n - 7, 0]]) { // finders with their light separators
    for (let dr = -1; dr <= 7; dr++) {
      for (let dc = -1; dc <= 7; dc++) {
        const r = r0 + dr, c = c0 + dc;
        if (r < 0 || c < 0 || r >= n || c >= n) continue;
        const ring = Math.max(Math.abs(dr - 3), Math.abs(dc - 3)); // 0 centre ... 3 outer ring, 4 separator
        m.set(r, c, ring !== 2 && ring !== 4);
      }
    }
  }
  if (version >= 2) { // alignment patterns
    const count = Math.floor(version / 7) + 2;
    const step = Math.ceil((4 * version + 4) / (2 * count - 2)) * 2;
    const at = [6];
    for (let p = n - 7; at.length < count; p -= step) at.splice(1, 0, p);
    for (const r of at) {
      for (const c of at) {
        if ((r === 6 && c === 6) || (r === 6 && c === n - 7) || (r === n - 7 && c === 6)) continue; // finders
        for (let dr = -2; dr <= 2; dr++) {
          for (let dc = -2; dc <= 2; dc++) m.set(r + dr, c + dc, Math.max(Math.abs(dr), Math.abs(dc)) !== 1);
        }
      }
    }
  }
  drawFormat(m, 0); // reserves the format areas; redrawn with the chosen mask
  if (version >= 7) {
    const bits = (version << 12) | bch(version, 0x1f25, 12);
    for (let i = 0; i < 18; i++) {
      const dark = ((bits >>> i) & 1) === 1;
      const a = n - 11 + (i % 3), b = Math.floor(i / 3);
      m.set(b, a, dark); // the block left of the top-right finder
      m.set(a, b, dark); // the block above the bottom-left finder
    }
  }
}

function drawFormat(m, mask) {
  const n = m.size;
  const data = (FORMAT_M << 3) | mask;
  const bits = ((data << 10) | bch(data, 0x537, 10)) ^ 0x5412;
  const bit = (i) => ((bits >>> i) & 1) === 1;
  // first copy, around the top-left finder
  for (let i = 0; i <= 5; i++) m.set(i, 8, bit(i));
  m.set(7, 8, bit(6));
  m.set(8, 8, bit(7));
  m.set(8, 7, bit(8));
  for (let i = 9; i < 15; i++) m.set(8, 14 - i, bit(i));
  // second copy, split beside the other two finders
  for (let i = 0; i < 8; i++) m.set(8, n - 1 - i, bit(i));
  for (let i = 8; i < 15; i++) m.set(n - 15 + i, 8, bit(i));
  m.set(n - 8, 8, true); // the dark module
}

function placeData(m, words) {
  const n = m.size;
  let i = 0;
  for (let right = n - 1; right >= 1; right -= 2) {
    if (right === 6) right = 5; // the vertical timing pattern is skipped
    const upward = ((right + 1) & 2) === 0;
    for (let k = 0; k < n; k++) {
      const row = upward ? n - 1 - k : k;
      for (const col of [right, right - 1]) {
        if (m.reserved[row][col]) continue;
        m.dark[row][col] = i < words.length * 8 && ((words[i >>> 3] >>> (7 - (i & 7))) & 1) === 1;
        i++;
      }
    }
  }
}

const MASKS = [
  (r, c) => (r + c) % 2 === 0,
  (r) => r % 2 === 0,
  (r, c) => c % 3 === 0,
  (r, c) => (r + c) % 3 === 0,
  (r, c) => (Math.floor(r / 2) + Math.floor(c / 3)) % 2 === 0,
  (r, c) => ((r * c) % 2) + ((r * c) % 3) === 0,
  (r, c) => (((r * c) % 2) + ((r * c) % 3)) % 2 === 0,
  (r, c) => (((r + c) % 2) + ((r * c) % 3)) % 2 === 0,
];

function applyMask(m, mask) {
  for (let r = 0; r < m.size; r++) {
    for (let c = 0; c < m.size; c++) if (!m.reserved[r][c] && MASKS[mask](r, c)) m.dark[r][c] = !m.dark[r][c];
  }
}

/** The standard's penalty score: long runs, 2x2 blocks, finder-like patterns, dark/light imbalance. */
export function penalty(dark) {
  const n = dark.length;
  let score = 0;
  const lines = [];
  for (let i = 0; i < n; i++) {
    lines.push(dark[i]);
    lines.push(dark.map((row) => row[i]));
  }
  const finderLike = [true, false, true, true, true, false, true];
  for (const line of lines) {
    let run = 1;
    for (let i = 1; i <= n; i++) {
      if (i < n && line[i] === line[i - 1]) { run++; continue; }
      if (run >= 5) score += 3 + run - 5;
      run = 1;
    }
    for (let i = 0; i + 7 <= n; i++) {
      if (!finderLike.every((v, k) => line[i + k] === v)) continue;
      const lightBefore = i >= 4 && [1, 2, 3, 4].every((k) => !line[i - k]);
      const lightAfter = i + 11 <= n && [0, 1, 2, 3].every((k) => !line[i + 7 + k]);
      if (lightBefore || lightAfter) score += 40;
    }
  }
  let nDark = 0;
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      if (dark[r][c]) nDark++;
      if (r + 1 < n && c + 1 < n) {
        const v = dark[r][c];
        if (dark[r][c + 1] === v && dark[r + 1][c] === v && dark[r + 1][c + 1] === v) score += 3;
      }
    }
  }
  score += 10 * Math.floor(Math.abs(nDark * 100 / (n * n) - 50) / 5);
  return score;
}

/** `text` as a QR code: {version, mask, modules} with modules[row][col] true for dark, no quiet zone.
 * `mask` forces one of the 8 masks; by default the one with the lowest penalty is used. */
export function encodeQr(text, { mask = null } = {}) {
  const bytes = [...new TextEncoder().encode(text)];
  const version = versionFor(bytes.length);
  if (version === null) throw new Error(`${bytes.length} bytes do not fit a version ${MAX_VERSION} QR code`);
  const words = codewords(dataBytes(bytes, version), version);
  let best = null;
  for (const candidate of mask === null ? [0, 1, 2, 3, 4, 5, 6, 7] : [mask]) {
    const m = new Matrix(version);
    drawFunctionPatterns(m, version);
    placeData(m, words);
    applyMask(m, candidate);
    drawFormat(m, candidate);
    const score = mask === null ? penalty(m.dark) : 0;
    if (best === null || score < best.score) best = { version, mask: candidate, modules: m.dark, score };
  }
  return { version: best.version, mask: best.mask, modules: best.modules };
}

/** An SVG element drawing `text` as a QR code with the standard 4-module quiet zone, dark on white. */
export function qrSvg(text, { pixels = 200 } = {}) {
  const { modules } = encodeQr(text);
  const n = modules.length + 8;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${n} ${n}`);
  svg.setAttribute("width", String(pixels));
  svg.setAttribute("height", String(pixels));
  svg.setAttribute("shape-rendering", "crispEdges");
  const bg = document.createElementNS(ns, "rect");
  bg.setAttribute("width", String(n));
  bg.setAttribute("height", String(n));
  bg.setAttribute("fill", "#fff"); // white in dark mode too: scanners expect dark modules on light
  const path = document.createElementNS(ns, "path");
  let d = "";
  modules.forEach((row, r) => row.forEach((dark, c) => { if (dark) d += `M${c + 4} ${r + 4}h1v1h-1z`; }));
  path.setAttribute("d", d);
  path.setAttribute("fill", "#000");
  svg.append(bg, path);
  return svg;
}
