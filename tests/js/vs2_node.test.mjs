// node --test tests/js/   (unit tests always; the model tests need an export folder)
//
// With VS2_EXPORT=folder VS2_IMAGES='["a.png", ...]' VS2_RESULTS=out.json it runs vs2.js on
// onnxruntime-node over the images (decoded by png.js) and writes every output as JSON for
// tests/test_js_bindings.py to compare with the Python runtime. VS2_MODEL picks another graph
// file of the folder (model.int8.onnx).
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { test } from 'node:test';

import { decodePng } from '../../vs2_export/web/static/png.js';
import {
  Vs2Error, classMeans, loadModel, normalise, pyFormat, rankClasses, resizeCropExact, resizedSize, toPlain,
} from '../../vs2_export/web/static/vs2.js';

test('pyFormat fills {} like Python str.format', () => {
  assert.equal(pyFormat('a photo of a {}.', 'cat'), 'a photo of a cat.');
  assert.equal(pyFormat('{{literal}} {}', 'x'), '{literal} x');
  assert.equal(pyFormat('{}', '$& $1'), '$& $1');  // no replacement-pattern surprises
  assert.equal(pyFormat('a {:} b', 'x'), 'a x b');  // '{:}' is '{}' to str.format
});

test('rankClasses: softmax, most likely first, ties in class order', () => {
  const logits = { data: Float32Array.of(1, 3, 3, -2), dims: [1, 4] };
  const top = rankClasses(logits, ['a', 'b', 'c', 'd'], 3)[0];
  assert.deepEqual(top.map((t) => t.label), ['b', 'c', 'a']);
  const sum = [1, 3, 3, -2].map(Math.exp).reduce((x, y) => x + y);
  assert.ok(Math.abs(top[0].prob - Math.exp(3) / sum) < 1e-12);
});

test('classMeans averages normalised rows and renormalises', () => {
  const emb = Float32Array.of(2, 0, 0, 3, /* class 2 */ 1, 0, 1, 0);
  const out = classMeans(emb, 2, 2, 2);
  assert.ok(Math.abs(out[0] - Math.SQRT1_2) < 1e-7 && Math.abs(out[1] - Math.SQRT1_2) < 1e-7);
  assert.deepEqual(Array.from(out.subarray(2)), [1, 0]);
});

test('resizeCropExact crops like torchvision (round half to even) and refuses resampling', () => {
  const spec = { image_size: 2, resize_mode: 'shortest', fill_color: 0 };
  const w = 5;
  const h = 2;
  const data = new Uint8Array(w * h * 3).map((_, i) => Math.floor(i / 3));  // pixel index
  const out = resizeCropExact({ data, width: w, height: h }, spec);
  // (5 - 2) / 2 = 1.5 -> round half even -> 2: columns 2, 3
  assert.deepEqual(Array.from(out).filter((_, i) => i % 3 === 0), [2, 3, 7, 8]);
  assert.throws(() => resizeCropExact({ data: new Uint8Array(27), width: 3, height: 3 }, spec), Vs2Error);
  const longest = { image_size: 3, resize_mode: 'longest', fill_color: 7 };
  const padded = resizeCropExact({ data: new Uint8Array(3 * 2 * 3).fill(1), width: 3, height: 2 }, longest);
  assert.deepEqual(Array.from(padded).filter((_, i) => i % 3 === 0), [1, 1, 1, 1, 1, 1, 7, 7, 7]);
});

test('resizedSize follows preprocess.py: int() for shortest, round half even for longest', () => {
  assert.deepEqual(resizedSize(300, 5, { image_size: 224, resize_mode: 'shortest' }), [13440, 224]);
  assert.deepEqual(resizedSize(480, 640, { image_size: 224, resize_mode: 'shortest' }), [224, 298]);
  assert.deepEqual(resizedSize(672, 224, { image_size: 224, resize_mode: 'longest' }), [224, 75]);
  assert.deepEqual(resizedSize(3, 1, { image_size: 2, resize_mode: 'longest' }), [2, 1]);  // 0.667 -> 1
  assert.deepEqual(resizedSize(5, 9, { image_size: 7, resize_mode: 'squash' }), [7, 7]);
});

test('normalise rounds like numpy float32', () => {
  const spec = { mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711] };
  const out = normalise(Uint8Array.of(0, 128, 255), spec);
  const f = Math.fround;
  assert.equal(out[0], f(f(0 - f(spec.mean[0])) / f(spec.std[0])));
  assert.equal(out[2], f(f(f(255 / 255) - f(spec.mean[2])) / f(spec.std[2])));
});

const EXPORT = process.env.VS2_EXPORT;

test('vs2.js on onnxruntime-node over an export folder', { skip: !EXPORT && 'set VS2_EXPORT to an export folder' }, async () => {
  const ort = await import('onnxruntime-node');
  ort.env.logLevel = 'error';
  const images = JSON.parse(process.env.VS2_IMAGES ?? '[]');
  const t0 = performance.now();
  const model = await loadModel(ort, EXPORT, { sessionOptions: { intraOpNumThreads: 1 },
    model: process.env.VS2_MODEL ?? 'model.onnx' });
  const results = { runtime: 'node', versions: { node: process.versions.node, ort: ort.env.versions },
    pixel_input: model.pixelInput, timings: { load_ms: performance.now() - t0 }, images: [] };
  for (const path of images) {
    const decoded = await decodePng(await readFile(path));
    const entry = { path, width: decoded.width, height: decoded.height };
    try {
      const t1 = performance.now();
      entry.default = toPlain(await model.run(decoded));
      entry.run_ms = performance.now() - t1;
      entry.plain = toPlain(await model.run(decoded, { steer_lambda: 0 }));
      entry.never_steer = toPlain(await model.run(decoded, { gate_tau: -1 }));
      const top = model.classes && (await model.classify(decoded, { topK: 3 })).top;
      entry.top = top && top.map((t) => [t.label, t.prob]);
    } catch (err) {
      if (!(err instanceof Vs2Error)) throw err;
      entry.error = err.message;
    }
    results.images.push(entry);
  }
  if (model.defaultClasses) {
    const t2 = performance.now();
    const emb = await model.setClasses(model.defaultClasses, model.manifest.templates);
    results.timings.set_classes_ms = performance.now() - t2;
    results.runtime_class_embeddings = Array.from(emb);
    for (const entry of results.images) {
      if (entry.error) continue;
      const decoded = await decodePng(await readFile(entry.path));
      entry.runtime_classes = toPlain(await model.run(decoded));
    }
    model.resetClasses();
  }
  if (process.env.VS2_RESULTS) await writeFile(process.env.VS2_RESULTS, JSON.stringify(results));
  assert.ok(results.images.length === images.length);
});

test('contract checks and fallbacks on an export folder', { skip: !EXPORT && 'set VS2_EXPORT to an export folder' }, async () => {
  const ort = await import('onnxruntime-node');
  const model = await loadModel(ort, EXPORT);
  const { Vs2Model } = await import('../../vs2_export/web/static/vs2.js');
  // An export without a text graph in its manifest refuses run-time class names (Python's rule).
  const bare = new Vs2Model(ort, EXPORT, { ...model.manifest, text: null }, model.session,
    model.defaultClassEmbeddings, {}, 0);
  await assert.rejects(bare.setClasses(['cat']), /no text graph/);
  if (model.manifest.text) {
    assert.equal((await model.loadText()).tokenizer.contextLength, model.manifest.text.context_length);
  }
  const image = { data: new Uint8Array(model.imageSize * model.imageSize * 3).fill(90),
    width: model.imageSize, height: model.imageSize };
  await assert.rejects(model.run(image, { steer_lambda: Number.NaN }), Vs2Error);
  await assert.rejects(model.run(image, { steer_lambda: 1e39 }), /finite in float32/);  // inf in float32
  await assert.rejects(model.run(image, { steer_lamda: 0 }), /overrides: .* got steer_lamda/);  // misspelt
  await assert.rejects(model.classify(image, { topK: 3, gate_ta: 1 }), /got gate_ta/);
  await assert.rejects(model.run({ data: new Uint8Array(5), width: 2, height: 2 }), Vs2Error);
  // Ready tensors: wrong dims, a length that does not match them, NaN pixels.
  const s = model.imageSize;
  const ready = {
    image_rgb: [new Uint8Array(s * s * 3).fill(90), [s, s, 3], [s, s, 4]],  // not 0: the toy's h would be 0
    pixels_uint8: [new Uint8Array(s * s * 3).fill(90), [1, s, s, 3], [1, s, s, 4]],
    pixel_values: [new Float32Array(3 * s * s).fill(0.5), [1, 3, s, s], [1, 3, s, s + 1]],
  }[model.pixelInput];
  const [data, dims, wrong] = ready;
  await model.run({ [model.pixelInput]: data, dims });
  await assert.rejects(model.run({ [model.pixelInput]: data, dims: wrong }), /expected .* with its dims/);
  await assert.rejects(model.run({ [model.pixelInput]: data.subarray(1), dims }), /with its dims/);
  if (model.pixelInput === 'pixel_values') {
    await assert.rejects(model.run({ pixel_values: data.slice().fill(Number.NaN), dims }), /finite values/);
  }
  const limit = model.manifest.inputs.max_side;
  if (model.pixelInput === 'image_rgb') {  // refused before the graph allocates for the resize
    await assert.rejects(model.run({ data: new Uint8Array((limit + 1) * 3), width: limit + 1, height: 1 }),
      /limit/);
    await assert.rejects(model.run({ data: new Uint8Array(limit * 2 * 3), width: limit, height: 2 }),
      /aspect ratio/);
  }
  if (model.classEmbeddings) {
    await assert.rejects(model.run(image, { class_embeddings: new Float32Array(model.embedDim + 1) }), Vs2Error);
    await assert.rejects(model.setClasses([]), Vs2Error);
    await assert.rejects(model.setClasses(['cat', 'cat']), /unique names/);
    await assert.rejects(model.setClasses(['cat'], ['a {0}']), /templates\[0\]/);
    // NaN class embeddings make NaN logits: refused like the Python runtime's, not ranked.
    const nan = new Float32Array(model.classEmbeddings.length).fill(Number.NaN);
    await assert.rejects(model.run(image, { class_embeddings: nan }), /NaN\/inf in output logits \(rows 0\)/);
    // Python's top_k rule: -1 dropped the last class, 0 / NaN / null ranked nothing, '2' passed.
    for (const topK of [-1, 0, 1.5, Number.NaN, '2', null, Infinity]) {
      await assert.rejects(model.classify(image, { topK }), /topK: expected an int >= 1/, String(topK));
    }
    await assert.rejects(model.run(image, null), /overrides: expected an object/);  // was a TypeError
    await assert.rejects(model.classify(image, null), /overrides: expected an object/);
    // Embeddings for other classes than model.classes would be ranked under the wrong names.
    const other = new Float32Array(model.embedDim * (model.classes.length + 2)).fill(0.1);
    await assert.rejects(model.classify(image, { class_embeddings: other }), /expected \d+ rows, one per class/);
    assert.equal((await model.run(image, { class_embeddings: other })).logits.dims[1], model.classes.length + 2);
    // [, 'cat'] has a hole that forEach skipped: 'a photo of a undefined.' was embedded.
    await assert.rejects(model.setClasses([, 'cat']), /classes\[0\]: expected a non-empty string/);
    for (const texts of ['cat', [1, 2], null]) await assert.rejects(model.embedTexts(texts), /texts: expected a list of strings/);
    // classify names the columns of the embeddings its run was fed, whatever happens meanwhile.
    await model.setClasses(['cat', 'dog']);
    const pending = model.classify(image);
    model.resetClasses();
    assert.deepEqual((await pending).top.map((t) => t.label).sort(), ['cat', 'dog']);
    // Overlapping setClasses: the later call wins though the earlier, longer one finishes last.
    const many = Array.from({ length: 300 }, (_, i) => `class ${i}`);
    const first = model.setClasses(many);
    const second = model.setClasses(['cat', 'dog']);
    await Promise.all([first, second]);
    assert.deepEqual(model.classes, ['cat', 'dog']);
    const reset = model.setClasses(many);
    model.resetClasses();
    await reset;
    assert.deepEqual(model.classes, model.defaultClasses);
    // A model without classes has no logits to rank: Python's classify refuses it.
    const plain = new Vs2Model(ort, EXPORT, { ...model.manifest, classes: null }, model.session, null, {}, 0);
    await assert.rejects(plain.classify(image), /exported without class names/);
  }
});

test('sha256Js (pages without Web Crypto) equals node:crypto', async () => {
  const { sha256Js } = await import('../../vs2_export/web/static/sha256.js');
  const { createHash, randomBytes } = await import('node:crypto');
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 65537]) {
    const bytes = new Uint8Array(randomBytes(n));
    assert.equal(Buffer.from(sha256Js(bytes)).toString('hex'), createHash('sha256').update(bytes).digest('hex'), `${n} bytes`);
  }
});

test('decodePng stops inflating when the image is full (an 8 GiB IDAT bomb in 8 MB)', async () => {
  const zlib = await import('node:zlib');
  // A raw deflate segment of 64 MiB of zeros ending on a sync flush can be repeated: 128 of them,
  // a final empty block and the Adler-32 of 8 GiB of zeros (a = 1, b = n mod 65521) make a
  // valid zlib stream that inflates to 8 GiB, for a 4 x 4 RGB image that needs 52 bytes.
  const segment = zlib.deflateRawSync(Buffer.alloc(64 << 20), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  const adler = Buffer.alloc(4);
  adler.writeUInt32BE(((128 * 2 ** 26) % 65521) * 65536 + 1);
  const idat = Buffer.concat([Buffer.from([0x78, 0x9c]), ...Array(128).fill(segment), Buffer.from([3, 0]), adler]);
  const chunk = (type, body) => {
    const out = Buffer.alloc(12 + body.length);
    out.writeUInt32BE(body.length, 0);
    out.write(type, 4, 'latin1');
    body.copy(out, 8);
    out.writeUInt32BE(zlib.crc32(out.subarray(4, 8 + body.length)), 8 + body.length);  // Pillow checks it
    return out;
  };
  const ihdr = Buffer.from([0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0]);
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', Buffer.alloc(0))]);
  const image = await decodePng(new Uint8Array(png));
  assert.deepEqual([image.width, image.height, image.data.length], [4, 4, 48]);
  assert.ok(image.data.every((b) => b === 0));
  await assert.rejects(decodePng(new Uint8Array(png.subarray(0, 44))), /png: (damaged|truncated) image data/);
});

test('rankClasses: topK is an int >= 1, and 200,000 classes rank (a spread overflowed the stack)', () => {
  const logits = { data: Float32Array.of(1, 3), dims: [1, 2] };
  for (const k of [-1, 0, 1.5, Number.NaN, '2', null]) assert.throws(() => rankClasses(logits, ['a', 'b'], k), /topK: expected an int >= 1/);
  const wide = new Float32Array(200000);
  wide[123456] = 5;
  assert.deepEqual(rankClasses({ data: wide, dims: [1, wide.length] }, null, 1)[0].map((t) => t.index), [123456]);
  assert.ok(Math.abs(classMeans(new Float32Array(300000).fill(1), 1, 1, 300000)[0] - 1 / Math.sqrt(300000)) < 1e-9);
});

// The two tests below guard against quadratic work with a timeout far above the linear time (a
// hang guard: speed itself is measured by benchmarks, never asserted here).
test('class names: holes refused, duplicates found in linear time (a 64 MB manifest of names never loaded)', { timeout: 30000 }, async () => {
  const { checkNames } = await import('../../vs2_export/web/static/manifest.js');
  assert.throws(() => checkNames([, 'cat'], ['a {}']), /classes\[0\]: expected a non-empty string/);
  assert.throws(() => checkNames(['cat'], [, 'a {}']), /templates\[0\]/);
  const names = Array.from({ length: 300000 }, (_, i) => `class ${i}`);
  checkNames(names, ['a {}']);  // indexOf per name: about 2 minutes; one pass: 0.1 s
  assert.throws(() => checkNames([...names, 'class 7', 'class 3'], ['a {}']), /duplicates \["class 3","class 7"\]/);
});

test('metadataProps reads a file of two million tiny protobuf fields in seconds (a read per field: minutes)', { timeout: 30000 }, async () => {
  const { metadataProps } = await import('../../vs2_export/web/static/onnx_metadata.js');
  const { mkdtemp, rm } = await import('node:fs/promises');
  const dir = await mkdtemp(`${(await import('node:os')).tmpdir()}/vs2-`);
  try {
    const bytes = new Uint8Array(4e6).map((_, i) => (i % 2 ? 0 : 0x08));  // field 1 varint 0, repeated
    await writeFile(`${dir}/model.onnx`, bytes);
    assert.deepEqual(await metadataProps(`${dir}/model.onnx`), []);  // 0.8 s here; a read per field: 2 min
  } finally {
    await rm(dir, { recursive: true });
  }
});

test('graphSource refuses a FIFO instead of handing it to ONNX Runtime, which blocks for good', async () => {
  const { graphSource } = await import('../../vs2_export/web/static/tokenizer.js');
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { execFileSync } = await import('node:child_process');
  const dir = await mkdtemp(`${(await import('node:os')).tmpdir()}/vs2-`);
  try {
    execFileSync('mkfifo', [`${dir}/text.onnx`]);
    await assert.rejects(graphSource(`${dir}/text.onnx`), /expected a regular file/);
    await assert.rejects(graphSource(dir), /expected a regular file/);
  } finally {
    await rm(dir, { recursive: true });
  }
});

test('decodePng refuses what Pillow refuses (IHDR not first, a zero side, a bad CRC before IDAT), as Vs2Error', async () => {
  const zlib = await import('node:zlib');
  const crc = (buf) => zlib.crc32(buf);
  const chunk = (type, body, bad = false) => {
    const out = Buffer.alloc(12 + body.length);
    out.writeUInt32BE(body.length, 0);
    out.write(type, 4, 'latin1');
    body.copy(out, 8);
    out.writeUInt32BE(bad ? 0 : crc(out.subarray(4, 8 + body.length)), 8 + body.length);
    return out;
  };
  const ihdr = (w, h) => Buffer.from([0, 0, 0, w, 0, 0, 0, h, 8, 2, 0, 0, 0]);
  const idat = (w, h, bad) => chunk('IDAT', zlib.deflateSync(Buffer.alloc(h * (1 + 3 * w), 0)), bad);
  const png = (...chunks) => new Uint8Array(Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    ...chunks, chunk('IEND', Buffer.alloc(0))]));
  assert.equal((await decodePng(png(chunk('IHDR', ihdr(2, 2)), idat(2, 2, true)))).width, 2);  // Pillow skips IDAT CRCs
  await assert.rejects(decodePng(png(chunk('IHDR', ihdr(2, 2), true), idat(2, 2))), /png: bad CRC in the IHDR chunk/);
  await assert.rejects(decodePng(png(idat(2, 2), chunk('IHDR', ihdr(2, 2)))), /IHDR chunk first, got IDAT/);
  await assert.rejects(decodePng(png(chunk('IHDR', ihdr(0, 2)), idat(0, 2))), /png: a 0x2 image/);
  for (const bytes of [null, 'x.png', new ArrayBuffer(8)]) await assert.rejects(decodePng(bytes), Vs2Error);
  await assert.rejects(decodePng(png(chunk('IHDR', ihdr(2, 2), true), idat(2, 2))), Vs2Error);
});
