// CLIP BPE tokenizer for the browser and Node 20 (ES module, no dependencies, no build step).
//
// Token ids equal to open_clip's SimpleTokenizer and to vs2_export/runtime/tokenizer.py:
//   text -> clean (ftfy.fix_text, html.unescape twice, whitespace, lower) -> regex pieces
//        -> UTF-8 bytes -> byte-level BPE -> ids
//   ids: BigInt64Array [N * contextLength] = [SOT, ids..., EOT, 0...]; too long: cut, last = EOT.
//
// Known gaps against Python (ftfy 6.3), all documented in docs/js.md:
//  - ftfy's mojibake repair (fix_encoding: "cafÃ©" -> "café") is not ported; such text keeps
//    its mojibake here (looksLikeMojibake() flags the common cases).
//  - Unicode tables come from the JS engine (V8/ICU) for lower-casing, NFC, \p{L}, \p{N};
//    Python takes them from its unicodedata (3.11: Unicode 14) and `regex` (newer). They agree
//    on every character assigned in Unicode 14 except where a later Unicode changed it.

import { HTML5_ENTITIES } from './html_entities.js';

export const SPECIAL_TOKENS = ['<start_of_text>', '<end_of_text>'];
export const DEFAULT_CONTEXT_LENGTH = 77;
export const VOCAB_FILE = 'tokenizer/bpe_simple_vocab_16e6.txt.gz';
const N_MERGES = 49152 - 256 - 2;

// Python str.isspace() (what str.split() and str.strip() use) and `regex`'s \s: not JS's \s.
const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const REGEX_SPACE = '\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_SPACE_RUN = new RegExp(`[${PY_SPACE}]+`, 'u');
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'gu');
const PIECES = new RegExp(
  `${SPECIAL_TOKENS.join('|')}|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^${REGEX_SPACE}\\p{L}\\p{N}]+`,
  'giu');

/** A local file path when running in Node and `source` names one (a path or a file: URL), else null. */
export async function nodePath(source) {
  if (typeof source !== 'string' && !(source instanceof URL)) return null;
  const text = String(source);
  const isNode = typeof process !== 'undefined' && process.versions?.node;
  if (!isNode || /^(https?|data|blob):/i.test(text)) return null;
  return text.startsWith('file:') ? (await import('node:url')).fileURLToPath(text) : text;
}

/** Read a file as bytes: Uint8Array/ArrayBuffer as is, a URL with fetch, a path in Node. */
export async function readBytes(source) {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (typeof Response !== 'undefined' && source instanceof Response) {
    return new Uint8Array(await source.arrayBuffer());
  }
  const path = await nodePath(source);
  if (path !== null) {
    // A FIFO or device would block or never end: only regular files (the Python runtime's rule).
    await checkRegular(path);
    return new Uint8Array(await (await import('node:fs/promises')).readFile(path));
  }
  const text = String(source);
  const response = await fetch(text);
  if (!response.ok) throw new Error(`${text}: HTTP ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** What InferenceSession.create gets for a graph file: in Node its path, so that ONNX Runtime
 *  also finds the weights of a graph over 2 GB in the sidecar beside it (model.onnx.data; a graph
 *  given as bytes cannot, and Node reads no file over 2 GB into one buffer); elsewhere its bytes. */
export async function graphSource(source) {
  const path = await nodePath(source);
  if (path === null) return readBytes(source);
  // ONNX Runtime opening a FIFO blocks the process for good (text.onnx was passed unchecked):
  // only regular files, as the Python runtime's check_regular before every session.
  await checkRegular(path);
  return path;
}

async function checkRegular(path) {
  const fs = await import('node:fs/promises');
  if (!(await fs.stat(path)).isFile()) throw new Error(`${path}: expected a regular file`);
}

export const MAX_VOCAB_BYTES = 8 << 20;
/** The vocab file, and its text once decompressed, at most (runtime/tokenizer.py's limit; open_clip's
 *  is 1.4 MB gzipped, 3.2 MB of text): a gzip bomb is refused after inflating this much. */

/** gunzip when the bytes start with the gzip magic (a server may have decoded it already),
 *  reading at most `limit` bytes of output. */
export async function maybeGunzip(bytes, limit = MAX_VOCAB_BYTES) {
  if (bytes.length < 2 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
  const reader = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip')).getReader();
  const chunks = [];
  let total = 0;
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      total += read.value.length;
      if (total > limit) throw new RangeError(`it inflates to over ${limit} bytes`);
      chunks.push(read.value);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  const out = new Uint8Array(total);
  chunks.reduce((offset, c) => { out.set(c, offset); return offset + c.length; }, 0);
  return out;
}

/** Load the tokenizer from the vocab file (gzipped or not): bytes, URL or (Node) path. */
export async function loadTokenizer(source, { contextLength = DEFAULT_CONTEXT_LENGTH, clean = 'lower' } = {}) {
  const bytes = await maybeGunzip(await readBytes(source));
  if (bytes.length > MAX_VOCAB_BYTES) throw new RangeError(`vocab: over ${MAX_VOCAB_BYTES} bytes`);
  return new ClipTokenizer(new TextDecoder('utf-8', { fatal: true }).decode(bytes), { contextLength, clean });
}

/** bytes 0..255 -> printable characters (open_clip bytes_to_unicode), and the characters in
 *  open_clip's dict order (printable bytes first), which is the order of the first 512 ids. */
function bytesToUnicode() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); n++; }
  }
  const table = new Array(256);
  bs.forEach((b, i) => { table[b] = String.fromCodePoint(cs[i]); });
  return { table, ordered: cs.map((c) => String.fromCodePoint(c)) };
}

export class ClipTokenizer {
  /** mergesText: the decompressed bpe_simple_vocab_16e6.txt. */
  constructor(mergesText, { contextLength = DEFAULT_CONTEXT_LENGTH, clean = 'lower' } = {}) {
    if (!Number.isInteger(contextLength) || contextLength < 2) {
      throw new Error(`contextLength: expected an int >= 2, got ${contextLength}`);
    }
    if (!(clean in CLEANERS)) throw new Error(`clean: expected lower, whitespace or canonicalize, got ${clean}`);
    const lines = mergesText.split('\n').slice(1, N_MERGES + 1);
    const merges = lines.map((line) => line.split(' '));
    if (merges.length !== N_MERGES || merges.some((m) => m.length !== 2 || !m[0] || !m[1])) {
      throw new Error(`vocab: expected ${N_MERGES} BPE merges of two symbols each (the CLIP vocab)`);
    }
    const { table, ordered } = bytesToUnicode();
    this.byteEncoder = table;
    const vocab = [...ordered, ...ordered.map((c) => `${c}</w>`),
      ...merges.map((m) => m[0] + m[1]), ...SPECIAL_TOKENS];
    this.encoder = new Map(vocab.map((token, i) => [token, i]));
    this.ranks = new Map(merges.map((m, i) => [`${m[0]} ${m[1]}`, i]));
    this.sotTokenId = this.encoder.get(SPECIAL_TOKENS[0]);
    this.eotTokenId = this.encoder.get(SPECIAL_TOKENS[1]);
    this.contextLength = contextLength;
    this.clean = CLEANERS[clean];
    this.cache = new Map(SPECIAL_TOKENS.map((t) => [t, t]));
    this.utf8 = new TextEncoder();
  }

  get vocabSize() { return this.encoder.size; }

  /** One text -> BPE ids, without SOT/EOT, not truncated. */
  encode(text) {
    const ids = [];
    // U+0345 folds to a letter: Python's `regex` (IGNORECASE) matches it with no alternative and
    // skips it, JS's /iu takes it as \p{L}. A space is skipped the same way: mirror Python.
    for (const [piece] of this.clean(text).replaceAll('\u0345', ' ').matchAll(PIECES)) {
      let chars = '';
      for (const b of this.utf8.encode(piece)) chars += this.byteEncoder[b];
      for (const token of this.bpe(chars).split(' ')) ids.push(this.encoder.get(token));
    }
    return ids;
  }

  /** texts -> { data: BigInt64Array [N * L], dims: [N, L] }: SOT ids EOT, zero-padded; cut
   *  to fit with EOT last (open_clip's truncation). */
  tokenize(texts, contextLength = this.contextLength) {
    const list = typeof texts === 'string' ? [texts] : texts;
    const data = new BigInt64Array(list.length * contextLength);
    list.forEach((text, row) => {
      let tokens = [this.sotTokenId, ...this.encode(text), this.eotTokenId];
      if (tokens.length > contextLength) {
        tokens = tokens.slice(0, contextLength);
        tokens[contextLength - 1] = this.eotTokenId;
      }
      tokens.forEach((id, i) => { data[row * contextLength + i] = BigInt(id); });
    });
    return { data, dims: [list.length, contextLength] };
  }

  /** Byte-encoded piece -> space-separated BPE tokens (open_clip's bpe(), same merge order). */
  bpe(token) {
    const cached = this.cache.get(token);
    if (cached !== undefined) return cached;
    const symbols = Array.from(token);
    let word = [...symbols.slice(0, -1), `${symbols[symbols.length - 1]}</w>`];
    while (word.length > 1) {
      let best = Infinity;
      let first = null;
      let second = null;
      for (let i = 0; i < word.length - 1; i++) {
        const rank = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (rank !== undefined && rank < best) { best = rank; first = word[i]; second = word[i + 1]; }
      }
      if (first === null) break;
      const merged = [];
      for (let i = 0; i < word.length;) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(word[i]);
          i += 1;
        }
      }
      word = merged;
    }
    const result = word.join(' ');
    this.cache.set(token, result);
    return result;
  }
}

// ---- text cleaning: open_clip basic_clean / whitespace_clean / canonicalize_text

export function pyStrip(text) { return text.replace(PY_STRIP, ''); }

export function whitespaceClean(text) {
  return pyStrip(text.split(PY_SPACE_RUN).filter((s) => s.length > 0).join(' '));
}

/** open_clip basic_clean: ftfy.fix_text, html.unescape twice, strip. */
export function basicClean(text) {
  return pyStrip(htmlUnescape(htmlUnescape(fixText(text))));
}

const PUNCTUATION = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/g;  // Python string.punctuation

export function canonicalize(text) {
  return whitespaceClean(text.replaceAll('_', ' ').replace(PUNCTUATION, '').toLowerCase());
}

const CLEANERS = {
  lower: (text) => whitespaceClean(basicClean(text)).toLowerCase(),
  whitespace: (text) => whitespaceClean(basicClean(text)),
  canonicalize: (text) => canonicalize(basicClean(text)),
};

// ---- Python's html.unescape (Lib/html/__init__.py), same rules and tables

const INVALID_CHARREFS = new Map([[0x00, '\ufffd'], [0x0d, '\r']]);
const CP1252_C1 = [0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030,
  0x160, 0x2039, 0x152, 0x8d, 0x17d, 0x8f, 0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013,
  0x2014, 0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178];  // bytes 0x80..0x9f
CP1252_C1.forEach((cp, i) => INVALID_CHARREFS.set(0x80 + i, String.fromCodePoint(cp)));

function isInvalidCodepoint(n) {
  return (n >= 0x1 && n <= 0x8) || n === 0xb || (n >= 0xe && n <= 0x1f) || (n >= 0x7f && n <= 0x9f)
    || (n >= 0xfdd0 && n <= 0xfdef) || (n & 0xfffe) === 0xfffe;
}

const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

function replaceCharref(s) {
  if (s[0] === '#') {
    const digits = s.replace(/;$/, '');
    const num = (s[1] === 'x' || s[1] === 'X') ? parseInt(digits.slice(2), 16) : parseInt(digits.slice(1), 10);
    if (INVALID_CHARREFS.has(num)) return INVALID_CHARREFS.get(num);
    if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
    if (isInvalidCodepoint(num)) return '';
    return String.fromCodePoint(num);
  }
  if (Object.hasOwn(HTML5_ENTITIES, s)) return HTML5_ENTITIES[s];
  const chars = Array.from(s);  // the longest name that is a prefix (HTML5 legacy names, no ';')
  for (let x = chars.length - 1; x > 1; x--) {
    const prefix = chars.slice(0, x).join('');
    if (Object.hasOwn(HTML5_ENTITIES, prefix)) return HTML5_ENTITIES[prefix] + chars.slice(x).join('');
  }
  return `&${s}`;
}

/** Python html.unescape. */
export function htmlUnescape(s) {
  if (!s.includes('&')) return s;
  return s.replace(CHARREF, (_, ref) => replaceCharref(ref));
}

// ---- ftfy.fix_text (6.3, default config) without fix_encoding

let FTFY_ENTITIES = null;

function ftfyEntities() {  // ftfy chardata._build_html_entities
  if (FTFY_ENTITIES) return FTFY_ENTITIES;
  FTFY_ENTITIES = new Map();
  for (const [name, char] of Object.entries(HTML5_ENTITIES)) {
    if (!name.endsWith(';')) continue;
    FTFY_ENTITIES.set(`&${name}`, char);
    if (name === name.toLowerCase()) {
      const upper = `&${name.toUpperCase()}`;
      if (htmlUnescape(upper) === upper) FTFY_ENTITIES.set(upper, char.toUpperCase());
    }
  }
  return FTFY_ENTITIES;
}

function ftfyUnescapeHtml(text) {
  const entities = ftfyEntities();
  return text.replace(/&#?[0-9A-Za-z]{1,24};/g, (m) => {
    if (entities.has(m)) return entities.get(m);
    if (m.startsWith('&#')) {
      const unescaped = htmlUnescape(m);
      return unescaped.includes(';') ? m : unescaped;
    }
    return m;
  });
}

const LIGATURES = {
  'Ĳ': 'IJ', 'ĳ': 'ij', 'ŉ': 'ʼn', 'Ǳ': 'DZ', 'ǲ': 'Dz', 'ǳ': 'dz', 'Ǆ': 'DŽ', 'ǅ': 'Dž', 'ǆ': 'dž',
  'Ǉ': 'LJ', 'ǈ': 'Lj', 'ǉ': 'lj', 'Ǌ': 'NJ', 'ǋ': 'Nj', 'ǌ': 'nj', 'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl',
  'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'ſt', 'ﬆ': 'st',
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'gu');

const FIXERS = [
  // fix_c1_controls: C1 controls read as sloppy windows-1252
  (t) => t.replace(/[\x80-\x9f]/g, (c) => String.fromCodePoint(CP1252_C1[c.charCodeAt(0) - 0x80])),
  (t) => t.replace(LIGATURE_RE, (c) => LIGATURES[c]),  // fix_latin_ligatures
  // fix_character_width: U+3000 -> space, halfwidth/fullwidth forms U+FF01..U+FFEF -> NFKC
  (t) => t.replace(/[\u3000\uff01-\uffef]/g, (c) => (c === '\u3000' ? ' ' : c.normalize('NFKC'))),
  (t) => t.replace(/[\u201c-\u201f]/g, '"').replace(/[\u02bc\u2018-\u201b]/g, "'"),  // uncurl_quotes
  (t) => t.replace(/\r\n/g, '\n').replace(/[\r\u2028\u2029\u0085]/g, '\n'),  // fix_line_breaks
  (t) => t.replace(/[\ud800-\udfff]/gu, '\ufffd'),  // fix_surrogates (lone ones; pairs are chars)
  (t) => t.replace(/\x1b\[((?:\d|;)*)([a-zA-Z])/g, ''),  // remove_terminal_escapes
  // remove_control_chars
  (t) => t.replace(/[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g, ''),
  (t) => t.normalize('NFC'),
];

function fixSegment(segment, unescape) {
  let text = segment;
  for (;;) {
    const before = text;
    if (unescape) text = ftfyUnescapeHtml(text);
    for (const fix of FIXERS) text = fix(text);
    if (text === before) return text;
  }
}

/** ftfy.fix_text with its default config, except fix_encoding (mojibake repair). */
export function fixText(text) {
  let unescape = true;  // unescape_html="auto": off from the first line that contains '<' on
  const out = [];
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf('\n', pos) + 1;
    if (end === 0) end = text.length;
    const segment = text.slice(pos, end);
    if (unescape && segment.includes('<')) unescape = false;
    out.push(fixSegment(segment, unescape));
    pos = end;
  }
  return out.join('');
}

/** True where ftfy's mojibake repair would likely change the text (then JS and Python differ):
 *  UTF-8 read as Latin-1 / windows-1252, e.g. "Ã©", "â€™", "Ã¼". */
export function looksLikeMojibake(text) {
  return /[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]/u.test(text);
}
