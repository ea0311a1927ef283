// onnx_metadata.js: the metadata_props of an ONNX file (ModelProto field 14), read without
// parsing the graph. ONNX Runtime's JS bindings do not expose a model's custom metadata (Python's
// session.get_modelmeta() does), so this walks the protobuf's top-level fields and skips the
// graph by its length: a few small reads even for a 1 GB model.

import { Vs2Error } from './errors.js';

const METADATA_PROPS = 14;  // ModelProto field number (onnx.proto3)
const MAX_ENTRY_BYTES = 64 << 20;  // a manifest with 100k class names is ~3 MB
const READ_WINDOW = 64 << 10;

/** [key, value] of every ModelProto.metadata_props entry, in file order. */
export async function metadataProps(source, where = String(source)) {
  const reader = source instanceof Uint8Array ? bytesReader(source) : await fileReader(source);
  try {
    const props = [];
    let pos = 0;
    while (pos < reader.size) {
      const head = await reader.read(pos, Math.min(20, reader.size - pos));  // tag + length varints
      const [tag, afterTag] = varint(head, 0, where);
      const field = Math.floor(tag / 8);
      const wire = tag % 8;
      if (wire === 0) { pos += varint(head, afterTag, where)[1]; continue; }
      if (wire === 1 || wire === 5) { pos += afterTag + (wire === 1 ? 8 : 4); continue; }
      if (wire !== 2 || field === 0) throw malformed(where, pos);
      const [length, start] = varint(head, afterTag, where);
      if (pos + start + length > reader.size) throw malformed(where, pos, 'truncated');
      if (field === METADATA_PROPS) {
        if (length > MAX_ENTRY_BYTES) throw malformed(where, pos, `a ${length}-byte metadata entry`);
        props.push(entry(await reader.read(pos + start, length), where));
      }
      pos += start + length;
    }
    if (pos !== reader.size) throw malformed(where, reader.size, 'truncated');
    return props;
  } finally {
    await reader.close();
  }
}

function malformed(where, pos, why = 'not a protobuf field') {
  return new Vs2Error(`${where}: expected an ONNX model, got a damaged file (${why} at byte ${pos})`);
}

function varint(bytes, at, where) {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10 && at + i < bytes.length; i++) {
    const b = bytes[at + i];
    value += (b & 0x7f) * scale;
    scale *= 128;
    if (b < 0x80) return [value, at + i + 1];
  }
  throw malformed(where, at, 'a cut varint');
}

/** StringStringEntryProto bytes -> [key, value] (fields 1 and 2; others skipped). */
function entry(bytes, where) {
  const text = { 1: '', 2: '' };
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let at = 0;
  while (at < bytes.length) {
    const [tag, next] = varint(bytes, at, where);
    const wire = tag % 8;
    if (wire === 0) { at = varint(bytes, next, where)[1]; continue; }
    if (wire === 1 || wire === 5) { at = next + (wire === 1 ? 8 : 4); continue; }
    if (wire !== 2) throw malformed(where, at, 'a metadata entry');
    const [length, start] = varint(bytes, next, where);
    if (start + length > bytes.length) throw malformed(where, at, 'a metadata entry');
    const field = Math.floor(tag / 8);
    if (field === 1 || field === 2) {
      try {
        text[field] = utf8.decode(bytes.subarray(start, start + length));
      } catch {
        throw malformed(where, at, 'metadata that is not UTF-8');
      }
    }
    at = start + length;
  }
  if (at !== bytes.length) throw malformed(where, at, 'a metadata entry');
  return [text[1], text[2]];
}

function bytesReader(bytes) {
  return { size: bytes.length, read: async (pos, n) => bytes.subarray(pos, pos + n), close: async () => {} };
}

async function fileReader(path) {
  const fs = await import('node:fs/promises');
  let handle;
  try {
    // stat before open: opening a FIFO blocks until a writer comes
    if (!(await fs.stat(path)).isFile()) throw new Vs2Error(`${path}: expected an exported model file, got no regular file`);
    handle = await fs.open(path, 'r');
    const { size } = await handle.stat();
    const direct = async (pos, n) => {
      const buffer = new Uint8Array(n);
      const { bytesRead } = await handle.read(buffer, 0, n, pos);
      return buffer.subarray(0, bytesRead);
    };
    // Small reads come from a 64 KiB window: a read call per field took a minute for a 2 MB
    // file of a million tiny fields (valid protobuf, so no cause to refuse it).
    let window = { pos: 0, bytes: new Uint8Array(0) };
    const read = async (pos, n) => {
      if (n > READ_WINDOW) return direct(pos, n);
      if (pos < window.pos || pos + n > window.pos + window.bytes.length) {
        window = { pos, bytes: await direct(pos, Math.min(READ_WINDOW, size - pos)) };
      }
      return window.bytes.subarray(pos - window.pos, pos - window.pos + n);
    };
    return { size, read, close: () => handle.close() };
  } catch (err) {
    await handle?.close();
    if (err instanceof Vs2Error) throw err;
    throw new Vs2Error(`${path}: expected an exported model (model.onnx), got ${err.code ?? err.message}`);
  }
}
