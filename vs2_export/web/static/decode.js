// Browser image decoding for vs2.js: File/Blob -> { data: RGBA bytes, width, height, channels: 4 },
// byte-equal to Pillow's Image.open(f).convert('RGB') for opaque images: measured in Chromium 156
// (headless, software) on PNG (RGB, grey, palette, opaque RGBA), baseline / progressive / 4:4:4 /
// grey JPEG and all eight EXIF orientations.
//
// The browser decodes (createImageBitmap, no colour management) and applies the EXIF orientation;
// Pillow and open_clip do not rotate, so the rotation is undone here. WebCodecs' ImageDecoder is
// not used: Chromium sometimes hands JPEGs over as I420 and converts to RGB with its own matrix.
// Known gap: where alpha < 255 the canvas stores premultiplied colour, so RGB differs there.

import { MAX_PIXELS, Vs2Error } from './vs2.js';

export async function decodeImage(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  const orientation = exifOrientation(bytes);
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image',
    });
  } catch (err) {  // a DOMException with no file name: Python's load_image names the file and why
    throw new Vs2Error(`${blob.name ?? 'image'}: not an image this browser can decode, or a damaged one (${err.message})`);
  }
  try {
    if (bitmap.width * bitmap.height > MAX_PIXELS) {
      throw new Vs2Error(`image: ${bitmap.width}x${bitmap.height} is over ${MAX_PIXELS} pixels`);
    }
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext('2d', { willReadFrequently: true, colorSpace: 'srgb' });
    ctx.drawImage(bitmap, 0, 0);
    const shown = ctx.getImageData(0, 0, bitmap.width, bitmap.height, { colorSpace: 'srgb' });
    const image = { data: shown.data, width: shown.width, height: shown.height, channels: 4 };
    return orientation > 1 ? unrotate(image, orientation) : image;
  } finally {
    bitmap.close();
  }
}

/** The displayed image (EXIF orientation applied) -> the stored one, as Pillow decodes it. */
export function unrotate(shown, orientation) {
  const swap = orientation >= 5;
  const w = swap ? shown.height : shown.width;  // stored size
  const h = swap ? shown.width : shown.height;
  const out = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [dx, dy] = displayed(x, y, w, h, orientation);
      const s = (dy * shown.width + dx) * 4;
      const d = (y * w + x) * 4;
      out[d] = shown.data[s]; out[d + 1] = shown.data[s + 1];
      out[d + 2] = shown.data[s + 2]; out[d + 3] = shown.data[s + 3];
    }
  }
  return { data: out, width: w, height: h, channels: 4 };
}

/** Where EXIF orientation o puts stored pixel (x, y) of a w x h image. */
function displayed(x, y, w, h, o) {
  switch (o) {
    case 2: return [w - 1 - x, y];          // mirror horizontal
    case 3: return [w - 1 - x, h - 1 - y];  // rotate 180
    case 4: return [x, h - 1 - y];          // mirror vertical
    case 5: return [y, x];                  // transpose
    case 6: return [h - 1 - y, x];          // rotate 90 clockwise
    case 7: return [h - 1 - y, w - 1 - x];  // transverse
    case 8: return [y, w - 1 - x];          // rotate 90 counter-clockwise
    default: return [x, y];
  }
}

/** EXIF orientation (1..8) of a JPEG (APP1) or PNG (eXIf); 1 when none. WebP is left alone:
 *  Chromium 156 does not rotate WebP by its EXIF either (measured), so its pixels match as is. */
export function exifOrientation(b) {
  const tiff = exifBlock(b);
  if (!tiff) return 1;
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  if (tiff.length < 8) return 1;
  const little = tiff[0] === 0x49 && tiff[1] === 0x49;
  if (!little && !(tiff[0] === 0x4d && tiff[1] === 0x4d)) return 1;
  const ifd = view.getUint32(4, little);
  if (ifd + 2 > tiff.length) return 1;
  const count = view.getUint16(ifd, little);
  for (let i = 0; i < count; i++) {
    const entry = ifd + 2 + i * 12;
    if (entry + 12 > tiff.length) return 1;
    if (view.getUint16(entry, little) === 0x0112) {
      const value = view.getUint16(entry + 8, little);
      return value >= 1 && value <= 8 ? value : 1;
    }
  }
  return 1;
}

function exifBlock(b) {
  const u32 = (i) => ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
  const tag = (i) => String.fromCharCode(b[i], b[i + 1], b[i + 2], b[i + 3]);
  if (b[0] === 0xff && b[1] === 0xd8) {  // JPEG: markers up to the scan
    for (let i = 2; i + 4 <= b.length && b[i] === 0xff;) {
      const marker = b[i + 1];
      const length = (b[i + 2] << 8) | b[i + 3];
      if (marker === 0xda || marker === 0xd9) return null;
      if (marker === 0xe1 && tag(i + 4) === 'Exif' && b[i + 8] === 0 && b[i + 9] === 0) {
        return b.subarray(i + 10, i + 2 + length);
      }
      i += 2 + length;
    }
    return null;
  }
  if (b[0] === 0x89 && tag(1) === 'PNG\r') {  // PNG: chunks up to IDAT
    for (let i = 8; i + 8 <= b.length;) {
      const length = u32(i);
      const type = tag(i + 4);
      if (type === 'eXIf') return b.subarray(i + 8, i + 8 + length);
      if (type === 'IDAT' || type === 'IEND') return null;
      i += 12 + length;
    }
    return null;
  }
  return null;
}
