// Minimal PNG decoder for Node apps and tests (the browser decodes with its own image stack).
// 8-bit, non-interlaced grey, grey+alpha, RGB, RGBA and palette PNGs -> RGB bytes, equal to
// Pillow's Image.open(f).convert('RGB') (alpha dropped, not composited; palette looked up).
// Anything else (16-bit, interlaced, sub-byte depths) throws: decode it elsewhere. A file that
// Pillow refuses (IHDR not first, a zero side, a bad CRC before the image data) is refused here
// too, as a Vs2Error, rather than decoded into pixels the Python runtime never sees.

import { Vs2Error } from './errors.js';

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const CHANNELS = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/** zlib bytes -> the first `need` inflated bytes (or fewer, if the data ends first). Reading
 *  stops there, as Pillow's decoder stops when the image is full: a few KB of IDAT can inflate
 *  to gigabytes (a decompression bomb), and the pixel limit alone would not stop that. */
async function inflate(bytes, need) {
  const reader = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate')).getReader();
  const chunks = [];
  let total = 0;
  try {
    while (total < need) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      total += value.length;
    }
  } catch (err) {
    throw new Vs2Error(`png: damaged image data (${err.message})`);
  } finally {
    reader.cancel().catch(() => {});
  }
  return concat(chunks).subarray(0, need);
}

/** PNG file bytes -> { width, height, data: Uint8Array RGB [H * W * 3] }. */
export async function decodePng(bytes, { maxPixels = 89478485 } = {}) {
  if (!(bytes instanceof Uint8Array)) throw new Vs2Error(`png: expected the file's bytes (Uint8Array), got ${bytes?.constructor?.name ?? bytes}`);
  if (!SIGNATURE.every((b, i) => bytes[i] === b)) throw new Vs2Error('png: not a PNG file');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 8;
  let header = null;
  let palette = null;
  const idat = [];
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const body = bytes.subarray(pos + 8, pos + 8 + length);
    checkChunk(bytes, pos, type, length, !idat.length && type !== 'IDAT');
    if (type === 'IHDR') {
      header = { width: view.getUint32(pos + 8), height: view.getUint32(pos + 12), depth: body[8],
        colorType: body[9], interlace: body[12] };
      if (!header.width || !header.height) throw new Vs2Error(`png: a ${header.width}x${header.height} image (IHDR)`);
    } else if (type === 'PLTE') {
      palette = body;
    } else if (type === 'IDAT') {
      idat.push(body);
    } else if (type === 'IEND') {
      break;
    }
    pos += 12 + length;
  }
  if (!header) throw new Vs2Error('png: no IHDR chunk');
  const { width, height, depth, colorType, interlace } = header;
  const channels = CHANNELS[colorType];
  if (depth !== 8 || interlace !== 0 || !channels) {
    throw new Vs2Error(`png: only 8-bit non-interlaced PNGs are supported here (depth ${depth}, `
      + `colour type ${colorType}, interlace ${interlace})`);
  }
  if (width * height > maxPixels) throw new Vs2Error(`png: ${width}x${height} is over ${maxPixels} pixels`);
  if (colorType === 3 && !palette) throw new Vs2Error('png: palette image without PLTE');
  const stride = width * channels;
  const raw = await inflate(concat(idat), height * (stride + 1));
  if (raw.length < height * (stride + 1)) throw new Vs2Error('png: truncated image data');
  const pixels = unfilter(raw, width, height, channels);
  return { width, height, data: toRgb(pixels, width * height, colorType, palette) };
}

/** A chunk by Pillow's rules (PngImagePlugin: one IHDR, first, of 13 bytes; up to the image
 *  data each chunk whole and its CRC right, `before`): Pillow refuses such a file, so decoding it
 *  would give pixels for an image that the Python runtime reports as corrupt. */
function checkChunk(bytes, pos, type, length, before) {
  if ((pos === 8) !== (type === 'IHDR') || (type === 'IHDR' && length !== 13)) {
    throw new Vs2Error(`png: expected one 13-byte IHDR chunk first, got ${type} (${length} bytes) at byte ${pos}`);
  }
  if (!before) return;
  if (pos + 12 + length > bytes.length) throw new Vs2Error(`png: truncated ${type} chunk at byte ${pos}`);
  const stored = new DataView(bytes.buffer, bytes.byteOffset).getUint32(pos + 8 + length);
  if (crc32(bytes.subarray(pos + 4, pos + 8 + length)) !== stored) throw new Vs2Error(`png: bad CRC in the ${type} chunk`);
}

let CRC_TABLE = null;

function crc32(bytes) {
  CRC_TABLE ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c;
  });
  let crc = 0xffffffff;
  for (const b of bytes) crc = CRC_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function concat(chunks) {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) { out.set(c, offset); offset += c.length; }
  return out;
}

function unfilter(raw, width, height, bpp) {
  const stride = width * bpp;
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const row = y * stride;
    const prev = row - stride;
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? out[row + x - bpp] : 0;
      const b = y > 0 ? out[prev + x] : 0;
      const c = x >= bpp && y > 0 ? out[prev + x - bpp] : 0;
      let predictor = 0;
      if (filter === 1) predictor = a;
      else if (filter === 2) predictor = b;
      else if (filter === 3) predictor = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (filter !== 0) throw new Vs2Error(`png: bad filter type ${filter}`);
      out[row + x] = (raw[src + x] + predictor) & 0xff;
    }
  }
  return out;
}

function toRgb(pixels, count, colorType, palette) {
  const rgb = new Uint8Array(count * 3);
  for (let i = 0; i < count; i++) {
    if (colorType === 2 || colorType === 6) {
      const s = i * (colorType === 2 ? 3 : 4);
      rgb[i * 3] = pixels[s]; rgb[i * 3 + 1] = pixels[s + 1]; rgb[i * 3 + 2] = pixels[s + 2];
    } else if (colorType === 3) {
      const p = pixels[i] * 3;
      rgb[i * 3] = palette[p] ?? 0; rgb[i * 3 + 1] = palette[p + 1] ?? 0; rgb[i * 3 + 2] = palette[p + 2] ?? 0;
    } else {
      const g = pixels[i * (colorType === 0 ? 1 : 2)];
      rgb[i * 3] = g; rgb[i * 3 + 1] = g; rgb[i * 3 + 2] = g;
    }
  }
  return rgb;
}
