// sha256.js: hex SHA-256 for checking files against the manifest (class_embeddings.f32).

/** Hex SHA-256 of bytes: Web Crypto where it exists (Node, https and localhost pages), else
 *  sha256Js, since crypto.subtle is missing on a page served over plain http from another host. */
export async function sha256Hex(bytes) {
  const subtle = globalThis.crypto?.subtle;
  const digest = subtle ? new Uint8Array(await subtle.digest('SHA-256', bytes)) : sha256Js(bytes);
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** FIPS 180-4 SHA-256 in plain JS. Its constants are the first 32 bits of the fractional parts of
 *  the square (H) and cube (K) roots of the first primes, computed here rather than typed in. */
export function sha256Js(bytes) {
  const frac = (x) => ((x - Math.floor(x)) * 2 ** 32) >>> 0;
  const primes = [];
  for (let n = 2; primes.length < 64; n++) if (primes.every((p) => n % p)) primes.push(n);
  const K = Uint32Array.from(primes, (p) => frac(Math.cbrt(p)));
  const H = Uint32Array.from(primes.slice(0, 8), (p) => frac(Math.sqrt(p)));
  const padded = new Uint8Array(Math.ceil((bytes.length + 9) / 64) * 64);
  padded.set(bytes);
  padded[bytes.length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(bytes.length / 2 ** 29));  // bit length, big-endian
  view.setUint32(padded.length - 4, (bytes.length * 8) >>> 0);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  const w = new Uint32Array(64);
  const v = new Uint32Array(8);
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    v.set(H);
    for (let i = 0; i < 64; i++) {
      const [a, b, c, d, e, f, g, h] = v;
      const t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
      const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      v.set([t1 + t2, a, b, c, d + t1, e, f, g]);  // Uint32Array stores each sum mod 2^32
    }
    for (let i = 0; i < 8; i++) H[i] += v[i];
  }
  const out = new Uint8Array(32);
  H.forEach((h, i) => new DataView(out.buffer).setUint32(4 * i, h));
  return out;
}
