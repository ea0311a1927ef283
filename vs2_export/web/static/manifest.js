// manifest.js: what an exported graph says about itself, read from the graph and checked by the
// rules the Python runtime applies (vs2_export/runtime/manifest.py, schema 2), torch- and
// dependency-free for Node 20 and the browser.
//
// The manifest that counts is the one inside model.onnx (ModelProto.metadata_props, key
// 'vs2_export', read by onnx_metadata.js): manifest.json beside it is a copy for people, and a
// copy can be edited without the graph knowing.
//
// checkManifest() refuses the manifests Python's Manifest.from_json refuses (tests/test_js_contract.py
// holds the two to the same answers on thousands of edited manifests), with two known differences
// in what no runtime computes with: JSON has one number type in JS, so an integral float (64.0
// where an int is expected) passes here and not in Python; and `created` only has to be a string
// here (Python also parses it as an ISO 8601 timestamp, which the page never reads).

import { Vs2Error } from './errors.js';
import { metadataProps } from './onnx_metadata.js';
import { sha256Hex } from './sha256.js';
import { VOCAB_FILE, pyStrip } from './tokenizer.js';

// Names of the graph contract (runtime/contract.py; tests/test_js_contract.py compares them).
export const METADATA_KEY = 'vs2_export';
export const SCHEMA_VERSION = 2;
export const PIXEL_INPUTS = ['pixel_values', 'pixels_uint8', 'image_rgb'];
export const OVERRIDABLE = ['steer_gamma', 'steer_lambda', 'gate_tau'];
export const REQUIRED_OUTPUTS = ['embedding', 'base_embedding', 'fvu', 'steered', 'latent_indices', 'latent_values'];
export const OPTIONAL_OUTPUTS = ['logits', 'gate_score'];
export const GATE_CRITERIA = ['fvu', 'rel_err', 'err'];
export const PRECISIONS = ['fp32', 'fp16', 'int8'];
export const CLEAN_MODES = ['lower', 'whitespace', 'canonicalize'];
export const MAX_SIDE = 8192;
export const MIN_STD = 1e-3;
export const CLASS_EMBEDDINGS_FILE = 'class_embeddings.f32';
export const TEXT_MODEL_FILE = 'text.onnx';
export const INCOMPLETE_MARKER = '.vs2-export-incomplete';
export { VOCAB_FILE, Vs2Error };

// ---- reading: model.onnx (a Node path or the file's bytes) -> manifest object

/** The manifest in a graph's metadata, checked. source: a path (Node) or Uint8Array;
 *  where: the name used in error messages. */
export async function readManifest(source, where = String(source)) {
  const props = await metadataProps(source, where);
  // The last entry of a repeated key wins, as in ONNX Runtime's custom_metadata_map (Python).
  const found = props.filter(([key]) => key === METADATA_KEY).at(-1);
  if (!found) throw new Vs2Error(`${where}: expected '${METADATA_KEY}' metadata (written by vs2 export), got none`);
  let manifest;
  try {
    manifest = JSON.parse(found[1]);
  } catch (err) {
    throw new Vs2Error(`${where}: invalid '${METADATA_KEY}' metadata: manifest: expected a JSON document, `
      + `got invalid JSON (${err.message})`);
  }
  try {
    return checkManifest(manifest);
  } catch (err) {
    if (err instanceof Vs2Error) throw new Vs2Error(`${where}: invalid '${METADATA_KEY}' metadata: ${err.message}`);
    throw err;
  }
}

// ---- files the manifest describes

/** class_embeddings.f32 bytes -> Float32Array [C * E], refused unless size and SHA-256 are the
 *  manifest's: logits from a swapped matrix would look plausible and be wrong. */
export async function classEmbeddingsFrom(bytes, manifest, where) {
  const [rows, cols] = manifest.class_embeddings.shape;
  if (bytes.byteLength !== rows * cols * 4) {
    throw new Vs2Error(`${where}: expected ${rows} x ${cols} float32 (${rows * cols * 4} bytes, from the manifest), `
      + `got ${bytes.byteLength} bytes`);
  }
  const digest = await sha256Hex(bytes);
  if (digest !== manifest.class_embeddings.sha256) {
    throw new Vs2Error(`${where}: SHA-256 ${digest.slice(0, 12)} differs from the manifest's `
      + `${manifest.class_embeddings.sha256.slice(0, 12)}: the file was changed after export`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);  // little-endian
  return out;
}

/** Class names and templates by the manifest's rules (Python: classes.check_names). */
export function checkNames(names, templates) {
  if (!Array.isArray(names) || !names.length) throw new Vs2Error(`classes: expected a non-empty list of names, got ${show(names)}`);
  if (!Array.isArray(templates) || !templates.length) {
    throw new Vs2Error(`templates: expected a non-empty list of templates, got ${show(templates)}`);
  }
  // Index loops, not forEach: forEach skips the holes of [, 'cat'], which would embed 'undefined'.
  for (let i = 0; i < names.length; i++) {
    expect(typeof names[i] === 'string' && pyStrip(names[i]) !== '', `classes[${i}]`, 'a non-empty string', names[i]);
  }
  const dupes = duplicates(names);
  expect(!dupes.length, 'classes', 'unique names', `duplicates ${show(dupes)}`);
  for (let i = 0; i < templates.length; i++) expect(isTemplate(templates[i]), `templates[${i}]`, TEMPLATE_RULE, templates[i]);
}

// ---- checking: the rules of runtime/manifest.py (_parse and _check_*), in its order

const TOP_KEYS = ['schema_version', 'model', 'preprocess', 'sae', 'steering', 'classes', 'templates',
  'logit_scale', 'precision', 'opset', 'pixel_input', 'inputs', 'class_embeddings', 'text', 'outputs',
  'versions', 'tolerances', 'created'];
const OPTIONAL_TOP_KEYS = ['card', 'int8_recheck'];
const SECTIONS = {  // [required keys, optional keys] of each section (the dataclass fields)
  model: [['id', 'source', 'width', 'embed_dim'], ['weights_sha256']],
  sae: [['d', 'n', 'k', 'sha256'], []],
  steering: [['gamma', 'lambda', 'quantile', 'tau', 'sae_sha256'], ['gate', 'gate_stats']],
  class_embeddings: [['file', 'shape', 'sha256'], []],
  text: [['model', 'vocab', 'context_length', 'clean'], []],
  int8_recheck: [['margin', 'gate_band', 'estimated_disagreement', 'rerun_rate', 'images'], []],
  preprocess: [['image_size', 'mean', 'std', 'interpolation', 'resize_mode', 'fill_color'], []],
};

/** A parsed manifest -> itself, or Vs2Error naming the key, what was expected and what came. */
export function checkManifest(m) {
  expect(isObject(m), 'manifest', 'a JSON object', m);
  expect(m.schema_version === SCHEMA_VERSION, 'schema_version',
    `${SCHEMA_VERSION} (this runtime reads schema ${SCHEMA_VERSION} only)`, m.schema_version);
  keys(m, TOP_KEYS, 'manifest', OPTIONAL_TOP_KEYS);
  for (const name of ['model', 'sae', 'steering']) section(m[name], name);
  for (const name of ['class_embeddings', 'text']) if (m[name] !== null) section(m[name], name);
  checkInputKeys(m);
  section(m.preprocess, 'preprocess');
  checkPreprocess(m.preprocess);
  if (m.int8_recheck !== undefined && m.int8_recheck !== null) section(m.int8_recheck, 'int8_recheck');
  expect(Array.isArray(m.templates), 'templates', 'a list', m.templates);
  expect(Array.isArray(m.outputs), 'outputs', 'a list', m.outputs);
  expect(m.classes === null || Array.isArray(m.classes), 'classes', 'a list', m.classes);
  checkModelAndSae(m);
  checkSteering(m);
  checkClasses(m);
  checkIo(m);
  checkClassInputs(m);
  checkGate(m);
  expect(PRECISIONS.includes(m.precision), 'precision', `one of ${show(PRECISIONS)}`, m.precision);
  expect(isInt(m.opset) && m.opset >= 7, 'opset', 'an int >= 7', m.opset);
  expect(isObject(m.versions) && Object.values(m.versions).every((v) => typeof v === 'string'),
    'versions', 'an object of strings', m.versions);
  expect(isObject(m.tolerances), 'tolerances', 'an object', m.tolerances);
  expect(typeof m.created === 'string', 'created', 'an ISO 8601 timestamp string', m.created);
  return m;
}

function checkInputKeys(m) {
  const inputs = m.inputs;
  expect(isObject(inputs), 'inputs', 'an object', inputs);
  const pixel = PIXEL_INPUTS.filter((k) => k in inputs);
  expect(pixel.length === 1, 'inputs', `exactly one of ${show(PIXEL_INPUTS)}`, Object.keys(inputs).sort());
  expect(m.pixel_input === pixel[0], 'pixel_input', `the pixel key of inputs, '${pixel[0]}'`, m.pixel_input);
  keys(inputs, [pixel[0], ...(pixel[0] === 'image_rgb' ? ['max_side'] : []), 'overridable'], 'inputs');
  expect(Array.isArray(inputs[pixel[0]]), `inputs.${pixel[0]}`, 'a list', inputs[pixel[0]]);
}

function checkPreprocess(p) {
  for (const key of ['mean', 'std']) {
    expect(Array.isArray(p[key]) && p[key].every(isFiniteNumber), `preprocess.${key}`, '3 finite numbers', p[key]);
  }
  expect(isInt(p.image_size) && p.image_size >= 1 && p.image_size <= 4096, 'preprocess.image_size',
    'an int in [1, 4096]', p.image_size);
  expect(p.mean.length === 3 && p.mean.every((v) => v >= 0 && v <= 1), 'preprocess.mean', '3 values in [0, 1]', p.mean);
  expect(p.std.length === 3 && p.std.every((v) => v >= MIN_STD && v <= 10), 'preprocess.std',
    `3 values in [${MIN_STD}, 10]`, p.std);
  expect(['bicubic', 'bilinear'].includes(p.interpolation), 'preprocess.interpolation', 'bicubic or bilinear',
    p.interpolation);
  expect(['shortest', 'longest', 'squash'].includes(p.resize_mode), 'preprocess.resize_mode',
    'shortest, longest or squash', p.resize_mode);
  expect(isInt(p.fill_color) && p.fill_color >= 0 && p.fill_color <= 255, 'preprocess.fill_color',
    'an int in [0, 255]', p.fill_color);
}

function checkModelAndSae({ model, sae }) {
  for (const key of ['id', 'source']) {
    expect(typeof model[key] === 'string' && model[key] !== '', `model.${key}`, 'a non-empty string', model[key]);
  }
  for (const key of ['width', 'embed_dim']) expect(isInt(model[key]) && model[key] >= 1, `model.${key}`, 'an int >= 1', model[key]);
  const weights = model.weights_sha256 ?? null;
  expect(weights === null || isSha256(weights), 'model.weights_sha256', 'null or 64 lowercase hex digits', weights);
  for (const key of ['d', 'n', 'k']) expect(isInt(sae[key]) && sae[key] >= 1, `sae.${key}`, 'an int >= 1', sae[key]);
  expect(sae.k <= sae.n, 'sae.k', `<= sae.n = ${sae.n}`, sae.k);
  expect(sae.d === model.width, 'sae.d', `model.width = ${model.width}`, sae.d);
  expect(isSha256(sae.sha256), 'sae.sha256', '64 lowercase hex digits', sae.sha256);
}

function checkSteering(m) {
  const s = m.steering;
  // gamma, lambda and tau are fed to the graph as float32: 1e39 would run as inf.
  expect(isFinite32(s.gamma) && s.gamma > 0, 'steering.gamma', 'a number > 0, finite in float32', s.gamma);
  expect(isFinite32(s.lambda) && s.lambda >= 0, 'steering.lambda', 'a number >= 0, finite in float32', s.lambda);
  expect(isFiniteNumber(s.quantile) && s.quantile > 0 && s.quantile <= 1, 'steering.quantile', 'a number in (0, 1]',
    s.quantile);
  expect(isFinite32(s.tau) && s.tau >= 0, 'steering.tau', 'a number >= 0, finite in float32', s.tau);
  expect(s.sae_sha256 === m.sae.sha256, 'steering.sae_sha256', `sae.sha256 = '${m.sae.sha256}'`, s.sae_sha256);
  expect(isFinite32(m.logit_scale) && m.logit_scale > 0, 'logit_scale',
    'a number > 0, finite in float32 (the graph\'s constant)', m.logit_scale);
}

function checkClasses(m) {
  if (m.classes !== null) {
    expect(m.classes.length >= 1, 'classes', 'null or a non-empty list', m.classes);
    m.classes.forEach((name, i) => {
      expect(typeof name === 'string' && pyStrip(name) !== '', `classes[${i}]`, 'a non-empty string', name);
    });
    const dupes = duplicates(m.classes);
    expect(!dupes.length, 'classes', 'unique names', `duplicates ${show(dupes)}`);
    expect(m.templates.length >= 1, 'templates', 'at least one template when classes are given', m.templates);
  }
  m.templates.forEach((t, i) => expect(isTemplate(t), `templates[${i}]`, TEMPLATE_RULE, t));
}

/** [ORT type, dims (null: any size)] of a pixel input for image size s: the one table of them
 *  (Python: session._input_specs and manifest._check_io). */
export function pixelSpec(name, s) {
  return { pixel_values: ['float32', [null, 3, s, s]], pixels_uint8: ['uint8', [null, s, s, 3]],
    image_rgb: ['uint8', [null, null, 3]] }[name];
}

function checkIo(m) {
  const s = m.preprocess.image_size;
  const name = m.pixel_input;
  const shape = pixelSpec(name, s)[1];
  const value = m.inputs[name];
  expect(value.length === shape.length && value.every((v, i) => v === shape[i]), `inputs.${name}`,
    `${show(shape)} (preprocess.image_size = ${s})`, value);
  if (name === 'image_rgb') {
    const side = m.inputs.max_side;
    expect(isInt(side) && side >= s && side <= MAX_SIDE, 'inputs.max_side', `an int in [${s}, ${MAX_SIDE}]`, side);
  }
  const over = m.inputs.overridable;
  expect(isObject(over), 'inputs.overridable', 'an object', over);
  // Every steering scalar is a required graph input, so every one needs its default.
  const names = Object.keys(over);
  expect(names.length === OVERRIDABLE.length && OVERRIDABLE.every((k) => names.includes(k)), 'inputs.overridable',
    `exactly the keys ${show(OVERRIDABLE)}`, names.sort());
  const calibrated = { steer_gamma: m.steering.gamma, steer_lambda: m.steering.lambda, gate_tau: m.steering.tau };
  for (const key of OVERRIDABLE) {
    // The graph default must be the calibrated value (float32 rounding allowed).
    expect(isFiniteNumber(over[key]) && isClose(over[key], calibrated[key]), `inputs.overridable.${key}`,
      `the steering value ${calibrated[key]}`, over[key]);
  }
  const outs = m.outputs;
  expect(outs.every((o) => typeof o === 'string') && new Set(outs).size === outs.length, 'outputs',
    'unique output names', outs);
  const known = [...REQUIRED_OUTPUTS, ...OPTIONAL_OUTPUTS];
  expect(outs.every((o) => known.includes(o)), 'outputs', `names among ${show([...known].sort())}`,
    outs.filter((o) => !known.includes(o)));
  expect(REQUIRED_OUTPUTS.every((o) => outs.includes(o)), 'outputs', `to include ${show(REQUIRED_OUTPUTS)}`, outs);
  const hasClasses = m.classes !== null;
  expect(outs.includes('logits') === hasClasses, 'outputs',
    `'logits' listed if and only if classes are given (classes ${hasClasses ? 'given' : 'null'})`, outs);
}

/** class_embeddings and text are there exactly when classes are (logits need the input,
 *  run-time class names need the text graph); their files have fixed names in the folder. */
function checkClassInputs(m) {
  const hasClasses = m.classes !== null;
  const ce = m.class_embeddings;
  expect((ce !== null) === hasClasses, 'class_embeddings',
    `${hasClasses ? 'an object' : 'null'} (classes ${hasClasses ? 'given' : 'null'})`, ce);
  if (ce !== null) {
    expect(ce.file === CLASS_EMBEDDINGS_FILE, 'class_embeddings.file', `'${CLASS_EMBEDDINGS_FILE}'`, ce.file);
    const want = [m.classes.length, m.model.embed_dim];
    expect(Array.isArray(ce.shape) && ce.shape.length === 2 && ce.shape.every((v, i) => v === want[i]),
      'class_embeddings.shape', `${show(want)} (classes x model.embed_dim)`, ce.shape);
    expect(isSha256(ce.sha256), 'class_embeddings.sha256', '64 lowercase hex digits', ce.sha256);
  }
  const text = m.text;
  if (text === null) return;
  expect(hasClasses, 'text', 'null when classes are null (no logits to classify with)', 'an object');
  expect(text.model === TEXT_MODEL_FILE, 'text.model', `'${TEXT_MODEL_FILE}'`, text.model);
  expect(text.vocab === VOCAB_FILE, 'text.vocab', `'${VOCAB_FILE}'`, text.vocab);
  expect(isInt(text.context_length) && text.context_length >= 2 && text.context_length <= 4096,
    'text.context_length', 'an int in [2, 4096]', text.context_length);
  expect(CLEAN_MODES.includes(text.clean), 'text.clean', `one of ${show(CLEAN_MODES)}`, text.clean);
}

function checkGate(m) {
  const s = m.steering;
  const gate = 'gate' in s ? s.gate : 'fvu';
  expect(GATE_CRITERIA.includes(gate), 'steering.gate', `one of ${show(GATE_CRITERIA)}`, gate);
  // An app must be able to see what the gate compared with tau.
  expect(gate === 'fvu' || m.outputs.includes('gate_score'), 'outputs',
    `to include 'gate_score' (the gate is '${gate}', not fvu)`, m.outputs);
  const stats = s.gate_stats ?? null;
  expect(stats === null || (isObject(stats) && Object.values(stats).every((v) => isFinite32(v) && v >= 0)),
    'steering.gate_stats', 'null or an object of numbers >= 0, finite in float32', stats);
  expect(stats === null || !('pass_rate' in stats) || stats.pass_rate <= 1, 'steering.gate_stats.pass_rate',
    'a share in [0, 1]', stats?.pass_rate);
  expect(m.card === undefined || m.card === null || isObject(m.card), 'card', 'null or an object', m.card);
  checkRecheck(m);
}

function checkRecheck(m) {
  const r = m.int8_recheck;
  if (r === undefined || r === null) return;
  expect(m.precision === 'int8', 'int8_recheck', 'only in an int8 manifest', m.precision);
  for (const key of ['margin', 'gate_band']) {
    expect(isFiniteNumber(r[key]) && r[key] >= 0, `int8_recheck.${key}`, 'a finite number >= 0', r[key]);
  }
  expect(r.margin > 0 || r.gate_band > 0, 'int8_recheck', 'margin or gate_band > 0', r);
  expect(r.margin === 0 || m.classes !== null, 'int8_recheck.margin', '0 without classes', r.margin);
  for (const key of ['estimated_disagreement', 'rerun_rate']) {
    expect(r[key] === null || (isFiniteNumber(r[key]) && r[key] >= 0 && r[key] <= 1), `int8_recheck.${key}`,
      'null or a number in [0, 1]', r[key]);
  }
  expect(isInt(r.images) && r.images >= 0, 'int8_recheck.images', 'an int >= 0', r.images);
}

// ---- small rules, each the Python one of the same name

export const TEMPLATE_RULE = "a string with exactly one '{}' and no other '{...}' field ('{{' and '}}' for braces)";

/** Whether Python's str.format(name) fills the template with the name exactly once and cannot
 *  fail: one bare field, '{}' or its equal '{:}', and literal braces doubled. */
export function isTemplate(value) {
  if (typeof value !== 'string') return false;
  const fields = value.match(/\{\{|\}\}|\{[^{}]*\}|[{}]/g) ?? [];
  const bare = fields.filter((f) => f === '{}' || f === '{:}').length;
  return bare === 1 && fields.every((f) => f === '{{' || f === '}}' || f === '{}' || f === '{:}');
}

/** Python str.format with the one bare field of a template ('{{' and '}}' are literal braces). */
export function pyFormat(template, value) {
  return template.replace(/\{\{|\}\}|\{:?\}/g, (m) => (m === '{{' || m === '}}' ? m[0] : value));
}

/** The values listed more than once, sorted. One pass over a Set: indexOf per name was
 *  quadratic, and a 64 MB manifest of short class names (millions) would never finish loading. */
function duplicates(list) {
  const seen = new Set();
  const dupes = new Set();
  for (const item of list) (seen.has(item) ? dupes : seen).add(item);
  return [...dupes].sort();
}

function isObject(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }
function isInt(v) { return Number.isSafeInteger(v); }  // 1e39 parses as an integral double
function isFiniteNumber(v) { return typeof v === 'number' && Number.isFinite(v); }
export function isFinite32(v) { return isFiniteNumber(v) && Number.isFinite(Math.fround(v)); }
function isSha256(v) { return typeof v === 'string' && /^[0-9a-f]{64}$/.test(v); }

/** Python's math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9). */
function isClose(a, b) {
  return Math.abs(a - b) <= Math.max(1e-6 * Math.max(Math.abs(a), Math.abs(b)), 1e-9);
}

function keys(data, expected, where, optional = []) {
  const missing = expected.filter((k) => !(k in data));
  if (missing.length) throw new Vs2Error(`${where}: required key(s) ${show(missing)} missing; expected keys ${show(expected)}`);
  const unknown = Object.keys(data).filter((k) => !expected.includes(k) && !optional.includes(k)).sort();
  if (unknown.length) throw new Vs2Error(`${where}: unknown key(s) ${show(unknown)}; expected only ${show(expected)}`);
}

function section(value, where) {
  expect(isObject(value), where, 'an object', value);
  const [required, optional] = SECTIONS[where];
  keys(value, required, where, optional);
}

function expect(ok, key, expected, got) {
  if (ok) return;
  let shown = typeof got === 'string' ? `'${got}'` : show(got);
  if (shown.length > 80) shown = `${shown.slice(0, 77)}...`;
  throw new Vs2Error(`${key}: expected ${expected}, got ${shown}`);
}

function show(value) {
  if (value === undefined) return 'None';
  return JSON.stringify(value) ?? String(value);
}
