// vs2.js: run a vs2-export model (CLIP image tower + VS2 steering, one ONNX graph) from
// JavaScript. ES module for Node 20 (onnxruntime-node) and the browser (onnxruntime-web): the
// caller passes the `ort` namespace, so this file imports no runtime itself.
//
//   import * as ort from 'onnxruntime-node';            // or onnxruntime-web in a page
//   import { loadModel } from './vs2.js';
//   const model = await loadModel(ort, 'exported/demo');  // folder or URL of the export
//   const result = await model.classify({ data: rgb, width, height });  // decoded RGB(A) bytes
//   result.top      // [{ label, prob, index }, ...] with steering
//   await model.classify(image, { steer_lambda: 0 })     // plain CLIP from the same graph
//   await model.setClasses(['cat', 'dog'])               // run-time classes via text.onnx
//
// Graph contract (issue 9): one pixel input (manifest.pixel_input): image_rgb uint8 [H, W, 3]
// (one decoded image, any size: the graph resizes, crops, normalises), pixels_uint8 uint8
// [B, S, S, 3] or pixel_values float32 [B, 3, S, S]; float32 scalars steer_gamma, steer_lambda,
// gate_tau and class_embeddings float32 [C, E], ALL real inputs (ORT's JS bindings cannot
// override initializers), fed from manifest defaults unless overridden here. Outputs:
// embedding, base_embedding [B, E], logits [B, C], fvu [B], steered [B] bool,
// latent_indices [B, k] int64, latent_values [B, k], gate_score [B] (what the gate compared with tau).

import { Vs2Error } from './errors.js';
import {
  CLASS_EMBEDDINGS_FILE, INCOMPLETE_MARKER, OVERRIDABLE, PIXEL_INPUTS, TEXT_MODEL_FILE, checkNames,
  classEmbeddingsFrom, isFinite32, pixelSpec, pyFormat, readManifest,
} from './manifest.js';
import { graphSource, loadTokenizer, nodePath, readBytes } from './tokenizer.js';

export { CLASS_EMBEDDINGS_FILE, OVERRIDABLE, PIXEL_INPUTS, Vs2Error, pyFormat };
export const MAX_PIXELS = 89478485;  // Pillow's Image.MAX_IMAGE_PIXELS: bound before any resize

function join(base, name) {
  return base === '' ? name : `${String(base).replace(/\/?$/, '/')}${name}`;
}

/** Load an export folder (path in Node, URL in the browser): model.onnx (or `model`, e.g.
 *  'model.int8.onnx') and class_embeddings.f32 when the model has classes; text.onnx + vocab
 *  load on first use. What the runtime trusts is the manifest inside the graph (manifest.js), so
 *  an edited manifest.json changes nothing; a class_embeddings.f32 that differs from the one the
 *  graph's manifest names (size, SHA-256) is refused, as is a folder an export is still writing
 *  or was interrupted in (Node; `vs2 web` refuses to build a site from one). */
export async function loadModel(ort, base, { sessionOptions = {}, model = 'model.onnx' } = {}) {
  await checkComplete(base);
  const where = join(base, model);
  const graph = await readFile(where, graphSource);
  const manifest = await readManifest(graph, where);
  const t0 = now();
  const session = await createSession(ort, graph, sessionOptions, where);
  const loadMs = now() - t0;
  checkGraph(session, manifest, where);
  let classEmbeddings = null;
  if (manifest.class_embeddings) {
    const file = join(base, CLASS_EMBEDDINGS_FILE);
    classEmbeddings = await classEmbeddingsFrom(await readFile(file), manifest, file);
  }
  return new Vs2Model(ort, base, manifest, session, classEmbeddings, sessionOptions, loadMs);
}

/** readBytes (or graphSource), with a failure (missing file, FIFO, HTTP error) as a Vs2Error
 *  naming the file. */
async function readFile(source, read = readBytes) {
  try {
    return await read(source);
  } catch (err) {
    throw new Vs2Error(`${source}: cannot read it (${String(err?.message ?? err).split('\n')[0]})`);
  }
}

function now() { return typeof performance !== 'undefined' ? performance.now() : Date.now(); }

/** Node: a folder holding the exporter's marker is refused (the Python runtime's rule, except that
 *  no JS process is the exporter). A URL is not checked: a 404 for every load would be noise. */
async function checkComplete(base) {
  const folder = await nodePath(base === '' ? '.' : base);
  if (folder === null) return;
  const fs = await import('node:fs/promises');
  try {
    await fs.lstat(join(folder, INCOMPLETE_MARKER));
  } catch {
    return;
  }
  throw new Vs2Error(`${base}: an export into this folder did not finish (interrupted, or still running); `
    + 'run `vs2 export ... --force` again');
}

async function createSession(ort, graph, sessionOptions, where) {
  try {
    return await ort.InferenceSession.create(graph, sessionOptions);
  } catch (err) {
    throw new Vs2Error(`${where}: ONNX Runtime cannot load this graph: ${String(err?.message ?? err).split('\n')[0]}`);
  }
}

/** The graph's inputs and outputs must be what its manifest says (Python: session._check_graph). */
function checkGraph(session, manifest, where) {
  const e = manifest.model.embed_dim;
  const specs = { [manifest.pixel_input]: pixelSpec(manifest.pixel_input, manifest.preprocess.image_size) };
  for (const name of OVERRIDABLE) specs[name] = ['float32', []];
  if (manifest.class_embeddings) specs.class_embeddings = ['float32', [null, e]];
  const same = (a, b) => a.length === b.length && a.every((x) => b.includes(x));
  if (!same(session.outputNames, manifest.outputs)) {
    throw new Vs2Error(`${where}: graph outputs ${session.outputNames} do not match manifest outputs ${manifest.outputs}`);
  }
  if (!same(session.inputNames, Object.keys(specs))) {
    throw new Vs2Error(`${where}: expected graph inputs ${Object.keys(specs)}, got ${session.inputNames}`);
  }
  for (const meta of session.inputMetadata ?? []) {  // onnxruntime-common >= 1.22
    const [type, dims] = specs[meta.name];
    const shape = meta.shape ?? [];
    const fits = shape.length === dims.length && dims.every((d, i) => d === null || shape[i] === d);
    if (meta.type !== type || !fits) {
      const shown = dims.map((d) => (d === null ? '?' : d)).join(', ');
      throw new Vs2Error(`${where}: expected input ${meta.name} ${type} [${shown}], got ${meta.type} [${shape}]`);
    }
  }
  const columns = { embedding: e, base_embedding: e, latent_indices: manifest.sae.k, latent_values: manifest.sae.k };
  for (const meta of session.outputMetadata ?? []) {
    const want = columns[meta.name];
    const cols = meta.shape?.length === 2 ? meta.shape[1] : null;
    if (want !== undefined && typeof cols === 'number' && cols !== want) {
      throw new Vs2Error(`${where}: output ${meta.name}: expected ${want} columns (from the manifest), got ${cols} in the graph`);
    }
  }
}

/** Finite inputs give finite outputs from a sound graph: NaN or inf means a damaged weight (or
 *  pixels far outside the preprocessed range), and a NaN top-1 still reads as a class name. */
function checkFinite(outputs, where) {
  for (const [name, t] of Object.entries(outputs)) {
    if (t.type !== 'float32' && t.type !== 'float64') continue;
    const rows = t.dims[0] ?? 1;
    const width = rows ? t.data.length / rows : 0;
    const bad = [];
    for (let r = 0; r < rows; r++) {
      for (let i = r * width; i < (r + 1) * width; i++) {
        if (!Number.isFinite(t.data[i])) { bad.push(r); break; }
      }
    }
    if (bad.length) {
      throw new Vs2Error(`${where}: the graph produced NaN/inf in output ${name} (rows ${bad.slice(0, 5).join(', ')}`
        + `${bad.length > 5 ? ', ...' : ''}) from finite inputs: a damaged or tampered weight, or pixels far `
        + 'outside the preprocessed range (fp16 overflows at 65504)');
    }
  }
}

export class Vs2Model {
  constructor(ort, base, manifest, session, classEmbeddings, sessionOptions, loadMs) {
    this.ort = ort;
    this.base = base;
    this.manifest = manifest;
    this.session = session;
    this.sessionOptions = sessionOptions;
    this.loadMs = loadMs;
    this.pixelInput = manifest.pixel_input;
    this.imageSize = manifest.preprocess.image_size;
    this.embedDim = manifest.model.embed_dim;
    this.defaults = { ...manifest.inputs.overridable };
    this.defaultClasses = manifest.classes ? [...manifest.classes] : null;
    this.defaultClassEmbeddings = classEmbeddings;
    this.classes = this.defaultClasses;
    this.classEmbeddings = classEmbeddings;
    this.text = null;
    this.classCalls = 0;  // setClasses / resetClasses calls so far: the last call's classes win
  }

  /** Run the graph. image: see pixelFeed(); overrides: { steer_gamma, steer_lambda, gate_tau,
   *  class_embeddings: Float32Array [C * E] }. Returns { name: { data, dims, type } }. */
  async run(image, overrides = {}) {
    checkOverrides(overrides);
    const feeds = { [this.pixelInput]: this.pixelFeed(image) };
    for (const name of OVERRIDABLE) {
      const value = overrides[name] ?? this.defaults[name];
      if (!isFinite32(value)) {  // the graph's dtype: 1e39 would run as inf
        throw new Vs2Error(`${name}: expected a number finite in float32 (|x| < 3.4e38), got ${value}`);
      }
      feeds[name] = new this.ort.Tensor('float32', Float32Array.of(value), []);
    }
    if (this.manifest.class_embeddings) {
      const matrix = overrides.class_embeddings ?? this.classEmbeddings;
      if (!(matrix instanceof Float32Array) || matrix.length % this.embedDim !== 0 || !matrix.length) {
        throw new Vs2Error(`class_embeddings: expected a Float32Array [C * ${this.embedDim}], got `
          + `${matrix?.constructor?.name} of length ${matrix?.length}`);
      }
      feeds.class_embeddings = new this.ort.Tensor('float32', matrix, [matrix.length / this.embedDim, this.embedDim]);
    }
    const outputs = await this.session.run(feeds);
    checkFinite(outputs, join(this.base, 'model'));
    return Object.fromEntries(Object.entries(outputs).map(([name, t]) => [name, { data: t.data, dims: t.dims, type: t.type }]));
  }

  /** One image -> { top, topPlain?, steered, fvu, gate, gateScore, tau, latents, outputs } for
   *  the first row. gateScore is what the gate compared with tau: the gate_score output (issue
   *  12), or fvu in graphs without it; gate names its criterion (manifest steering.gate). */
  async classify(image, options = {}) {
    checkOverrides(options, ['topK']);
    const { topK = 5, ...overrides } = options;
    // Python's classify: a model without classes has no logits to rank (run() has the rest).
    if (!this.classes) {
      throw new Vs2Error(`${this.base}: this model was exported without class names; use run() or export with classes`);
    }
    checkTopK(topK);
    // The labels of the embeddings this run is fed: setClasses / resetClasses may finish while
    // it runs, and the logits' columns must keep the names they were computed for.
    const classes = this.classes;
    const rows = overrides.class_embeddings?.length / this.embedDim;
    if (overrides.class_embeddings instanceof Float32Array && rows !== classes.length) {
      throw new Vs2Error(`class_embeddings: expected ${classes.length} rows, one per class of model.classes, got `
        + `${overrides.class_embeddings.length} values (${rows} rows); use run() and rankClasses() for other classes`);
    }
    const outputs = await this.run(image, overrides);
    return {
      top: rankClasses(outputs.logits, classes, topK)[0],
      steered: Boolean(outputs.steered.data[0]),
      fvu: outputs.fvu.data[0],
      gate: this.manifest.steering.gate ?? 'fvu',
      gateScore: (outputs.gate_score ?? outputs.fvu).data[0],
      tau: overrides.gate_tau ?? this.defaults.gate_tau,
      latents: latents(outputs)[0],
      outputs,
    };
  }

  /** image -> the ort.Tensor for this graph's pixel input.
   *  image: { data: Uint8Array|Uint8ClampedArray, width, height, channels?: 3|4 } (decoded RGB or
   *  RGBA, e.g. ImageData; alpha is dropped like Pillow's convert('RGB')), or a ready batch
   *  { pixels_uint8: Uint8Array, dims } / { pixel_values: Float32Array, dims }. */
  pixelFeed(image) {
    const name = this.pixelInput;
    if (image?.[name]) return this.batchFeed(name, image[name], image.dims);
    const rgb = toRgb(image);
    if (name === 'image_rgb') {
      checkSides(rgb, this.manifest);
      return new this.ort.Tensor('uint8', rgb.data, [rgb.height, rgb.width, 3]);
    }
    const s = this.imageSize;
    const cropped = resizeCropExact(rgb, this.manifest.preprocess);
    if (name === 'pixels_uint8') return new this.ort.Tensor('uint8', cropped, [1, s, s, 3]);
    return new this.ort.Tensor('float32', normalise(cropped, this.manifest.preprocess), [1, 3, s, s]);
  }

  /** A ready tensor -> the ort.Tensor, by the rules of the Python runtime's _check_pixels /
   *  _check_uint8 / _check_rgb: ORT would otherwise fail with an obscure message, or run NaN. */
  batchFeed(name, data, dims) {
    const [type, pattern] = pixelSpec(name, this.imageSize);
    const float = type === 'float32';
    const free = name === 'image_rgb' ? ['H', 'W'] : ['B'];  // what the nulls stand for
    const want = `${type} [${pattern.map((d, i) => d ?? free[i]).join(', ')}]`;
    const typed = float ? data instanceof Float32Array : data instanceof Uint8Array || data instanceof Uint8ClampedArray;
    const fits = Array.isArray(dims) && dims.length === pattern.length
      && dims.every((d, i) => Number.isSafeInteger(d) && d >= 1 && (pattern[i] === null || d === pattern[i]));
    if (!typed || !fits || data.length !== dims.reduce((a, b) => a * b, 1)) {
      throw new Vs2Error(`image.${name}: expected ${want} with its dims, got ${data?.constructor?.name} of length `
        + `${data?.length} with dims ${JSON.stringify(dims)}`);
    }
    if (float && !data.every(Number.isFinite)) throw new Vs2Error(`image.${name}: expected finite values, got NaN or inf`);
    if (name === 'image_rgb') checkSides({ width: dims[1], height: dims[0] }, this.manifest);
    const bytes = float ? data : new Uint8Array(data.buffer, data.byteOffset, data.length);
    return new this.ort.Tensor(type, bytes, dims);
  }

  /** texts -> Float32Array [N * E], L2-normalised (text.onnx; tokenizer from the export). */
  async embedTexts(texts) {
    // A string would embed its characters; a number, an empty text: answers that look right.
    if (!Array.isArray(texts) || !Array.from(texts).every((t) => typeof t === 'string')) {
      throw new Vs2Error(`texts: expected a list of strings, got ${describe(texts)}`);
    }
    const text = await this.loadText();
    const out = new Float32Array(texts.length * this.embedDim);
    const chunk = 256;
    for (let start = 0; start < texts.length; start += chunk) {
      const { data, dims } = text.tokenizer.tokenize(texts.slice(start, start + chunk));
      const result = await text.session.run({ [text.input]: new this.ort.Tensor('int64', data, dims) });
      out.set(result[text.output].data, start * this.embedDim);
    }
    return out;
  }

  /** Class names (+ templates, default the manifest's) -> class embeddings used by later runs:
   *  per class the mean of the normalised prompt embeddings, renormalised. */
  async setClasses(names, templates = this.manifest.templates) {
    checkNames(names, templates);
    const call = ++this.classCalls;
    const prompts = names.flatMap((name) => templates.map((t) => pyFormat(t, name)));
    const matrix = classMeans(await this.embedTexts(prompts), names.length, templates.length, this.embedDim);
    // Calls overlap only in JS (Python's set_classes blocks): a call made later, which may finish
    // first, keeps its classes, as if the calls had run one after another.
    if (call === this.classCalls) {
      this.classEmbeddings = matrix;
      this.classes = [...names];
    }
    return matrix;
  }

  resetClasses() {
    this.classCalls++;
    this.classes = this.defaultClasses;
    this.classEmbeddings = this.defaultClassEmbeddings;
  }

  /** text.onnx (input_ids int64 [N, context_length] -> text_embedding) and its tokenizer, as
   *  the graph's manifest names them (Python: classes.TextEncoder). */
  async loadText() {
    if (this.text) return this.text;
    const spec = this.manifest.text;
    if (!spec) {
      throw new Vs2Error(`${this.base}: this export has no text graph (${TEXT_MODEL_FILE}); re-export with `
        + 'classes to name classes at run time');
    }
    const where = join(this.base, spec.model);
    const session = await createSession(this.ort, await readFile(where, graphSource), this.sessionOptions, where);
    const input = 'input_ids';
    const output = 'text_embedding';
    if (String(session.inputNames) !== input || String(session.outputNames) !== output) {
      throw new Vs2Error(`${where}: expected ${input} -> ${output}, got ${session.inputNames} -> ${session.outputNames}`);
    }
    const vocab = join(this.base, spec.vocab);
    let tokenizer;
    try {
      tokenizer = await loadTokenizer(await readFile(vocab), { contextLength: spec.context_length, clean: spec.clean });
    } catch (err) {
      if (err instanceof Vs2Error) throw err;
      throw new Vs2Error(`${vocab}: expected open_clip's BPE vocabulary (gzipped text), got a damaged file (${err.message})`);
    }
    this.text = { session, tokenizer, input, output };
    return this.text;
  }
}

/** [C*T, E] normalised prompt embeddings -> [C, E]: mean over templates, renormalised. */
export function classMeans(emb, classes, templates, dim) {
  const out = new Float32Array(classes * dim);
  const acc = new Float64Array(dim);
  for (let c = 0; c < classes; c++) {
    acc.fill(0);
    for (let t = 0; t < templates; t++) {
      const row = emb.subarray((c * templates + t) * dim, (c * templates + t + 1) * dim);
      const norm = l2(row) || 1;
      for (let j = 0; j < dim; j++) acc[j] += row[j] / norm;
    }
    const norm = l2(acc) || 1;
    for (let j = 0; j < dim; j++) out[c * dim + j] = acc[j] / norm;
  }
  return out;
}

/** logits { data, dims: [B, C] } -> per row the k most likely { label, prob, index }
 *  (softmax in float64, ties by class order: Vs2Session.top_k's rule). */
export function rankClasses(logits, classes, k = 5) {
  checkTopK(k);
  const [rows, cols] = logits.dims;
  const result = [];
  for (let r = 0; r < rows; r++) {
    const row = Array.from(logits.data.subarray(r * cols, (r + 1) * cols));
    const max = row.reduce((a, b) => Math.max(a, b), -Infinity);  // no spread: 10^5 classes overflow the stack
    const exps = row.map((v) => Math.exp(v - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    const order = exps.map((e, i) => [e / sum, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    result.push(order.slice(0, Math.min(k, cols)).map(([prob, index]) => ({ label: classes?.[index] ?? String(index), prob, index })));
  }
  return result;
}

/** Euclidean norm without Math.hypot(...v): a spread of a long vector overflows the stack. */
function l2(v) {
  let sum = 0;
  for (const x of v) sum += x * x;
  return Math.sqrt(sum);
}

/** Python's top_k rule: an int >= 1 (0, -1 or NaN would silently rank nothing or drop classes). */
function checkTopK(k) {
  if (!Number.isSafeInteger(k) || k < 1) throw new Vs2Error(`topK: expected an int >= 1, got ${describe(k)}`);
}

/** run()'s overrides / classify()'s options: a plain object of known keys (Python takes keyword
 *  arguments, so a misspelt one, steer_lamda, fails there instead of running the defaults). */
function checkOverrides(overrides, extra = []) {
  const known = [...OVERRIDABLE, 'class_embeddings', ...extra];
  if (overrides === null || typeof overrides !== 'object' || Array.isArray(overrides)) {
    throw new Vs2Error(`overrides: expected an object with some of ${known.join(', ')}, got ${describe(overrides)}`);
  }
  const unknown = Object.keys(overrides).filter((k) => !known.includes(k));
  if (unknown.length) throw new Vs2Error(`overrides: expected some of ${known.join(', ')}, got ${unknown.join(', ')}`);
}

/** A value for a one-line message: short, and never a throw of its own (BigInt, symbols). */
function describe(value) {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 37)}...` : value);
  if (value === null || typeof value !== 'object') return String(value);
  return Array.isArray(value) ? `a list of ${value.length}` : (value.constructor?.name ?? 'an object');
}

/** Outputs -> JSON-ready { name: { dims, type, data: number[] } } (int64 -> number, bool -> 0/1). */
export function toPlain(outputs) {
  return Object.fromEntries(Object.entries(outputs).map(([name, t]) => [name,
    { dims: [...t.dims], type: t.type, data: Array.from(t.data, Number) }]));
}

/** Per row the active latents [{ index, value }], largest first (the graph sorts them). */
export function latents(outputs) {
  const [rows, k] = outputs.latent_indices.dims;
  return Array.from({ length: rows }, (_, r) => Array.from({ length: k }, (_, j) => ({
    index: Number(outputs.latent_indices.data[r * k + j]),
    value: outputs.latent_values.data[r * k + j],
  })));
}

// ---- pixels: decoded bytes -> graph input, only where equal to Python's preprocessing

function toRgb(image) {
  const { data, width, height } = image ?? {};
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray) || !Number.isInteger(width)
      || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Vs2Error('image: expected { data: Uint8Array RGB or RGBA, width, height }');
  }
  if (width * height > MAX_PIXELS) {
    throw new Vs2Error(`image: ${width}x${height} is over ${MAX_PIXELS} pixels (decompression bomb guard)`);
  }
  const channels = image.channels ?? data.length / (width * height);
  if ((channels !== 3 && channels !== 4) || data.length !== width * height * channels) {
    throw new Vs2Error(`image: expected ${width}x${height}x3 or x4 bytes, got ${data.length}`);
  }
  if (channels === 3) return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width, height };
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < data.length; i += 4, j += 3) {
    rgb[j] = data[i]; rgb[j + 1] = data[i + 1]; rgb[j + 2] = data[i + 2];
  }
  return { data: rgb, width, height };
}

/** image_rgb graphs allocate for the resize: sides and resized sides are bounded by
 *  manifest.inputs.max_side (Vs2Session checks the same in Python). */
function checkSides(rgb, manifest) {
  const limit = manifest.inputs?.max_side;
  if (!Number.isInteger(limit)) return;
  const { width: w, height: h } = rgb;
  if (w > limit || h > limit) {
    throw new Vs2Error(`image: ${w}x${h} is over the graph's limit of ${limit} per side; downscale it first`);
  }
  const [rh, rw] = resizedSize(h, w, manifest.preprocess);
  if (rh > limit || rw > limit) {
    throw new Vs2Error(`image: a ${w}x${h} image resizes to ${rw}x${rh}, over the graph's limit of `
      + `${limit} per side; crop it to an aspect ratio of at most ${(limit / manifest.preprocess.image_size).toFixed(1)}:1`);
  }
}

/** [h, w] after the resize, before the crop: torchvision's int() for 'shortest', Python's
 *  round() (half to even) for 'longest', S x S for 'squash' (preprocess.py's rules). */
export function resizedSize(h, w, spec) {
  const s = spec.image_size;
  if (spec.resize_mode === 'shortest') return w <= h ? [Math.trunc(s * h / w), s] : [s, Math.trunc(s * w / h)];
  if (spec.resize_mode === 'longest') {
    const ratio = Math.max(h / s, w / s);
    return [Math.max(1, roundHalfEven(h / ratio)), Math.max(1, roundHalfEven(w / ratio))];
  }
  return [s, s];
}

function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** RGB [H, W, 3] -> [S, S, 3] like preprocess.resize_crop, for images that need NO resampling
 *  (short side = S for 'shortest', long side = S for 'longest', S x S for 'squash'): crop and
 *  pad are exact. Any other size needs Pillow's resampler: export with image_rgb input. */
export function resizeCropExact(rgb, spec) {
  const s = spec.image_size;
  const { width: w, height: h } = rgb;
  const target = resizedSize(h, w, spec);
  if (target[0] !== h || target[1] !== w) {
    throw new Vs2Error(`image: ${w}x${h} needs resampling to ${target[1]}x${target[0]}, which only `
      + `Pillow does exactly; give ${spec.resize_mode === 'longest' ? 'a long' : spec.resize_mode === 'squash' ? 'an S x S' : 'a short'} side of ${s} `
      + 'or use a model exported with the image_rgb input');
  }
  const fill = spec.resize_mode === 'longest' ? spec.fill_color : 0;
  const padW = Math.max(s - w, 0);
  const padH = Math.max(s - h, 0);
  const pw = w + padW;
  const ph = h + padH;
  const left0 = Math.floor(padW / 2);
  const top0 = Math.floor(padH / 2);
  const top = roundHalfEven((ph - s) / 2);
  const left = roundHalfEven((pw - s) / 2);
  const out = new Uint8Array(s * s * 3).fill(fill);
  for (let y = 0; y < s; y++) {
    const sy = y + top - top0;
    if (sy < 0 || sy >= h) continue;
    for (let x = 0; x < s; x++) {
      const sx = x + left - left0;
      if (sx < 0 || sx >= w) continue;
      const si = (sy * w + sx) * 3;
      const di = (y * s + x) * 3;
      out[di] = rgb.data[si]; out[di + 1] = rgb.data[si + 1]; out[di + 2] = rgb.data[si + 2];
    }
  }
  return out;
}

/** uint8 RGB [S, S, 3] -> float32 [3, S, S]: (x / 255 - mean) / std in float32 steps, bit-equal
 *  to preprocess.normalise (each float32 op rounds once, as numpy's do). */
export function normalise(pixels, spec) {
  const n = pixels.length / 3;
  const out = new Float32Array(pixels.length);
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    const mean = f(spec.mean[c]);
    const std = f(spec.std[c]);
    for (let i = 0; i < n; i++) out[c * n + i] = f(f(f(pixels[i * 3 + c] / 255) - mean) / std);
  }
  return out;
}
