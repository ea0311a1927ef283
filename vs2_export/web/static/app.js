// The page: pick or drop an image -> top classes with and without VS2 steering (plain CLIP is
// the same graph with steer_lambda = 0), the gate (fvu vs tau), the top active latents, and
// run-time class names through text.onnx. Static files only, no build step.
//
// Layout (what `vs2 web EXPORTED --out DIR` writes): DIR/index.html, app.js, vs2.js,
// decode.js, tokenizer.js, html_entities.js, style.css; DIR/ort/ (onnxruntime-web dist files);
// DIR/model/ (the export folder). ?model=URL loads another export folder.
// For tests, window.vs2 exposes the model, the last outputs and timings.

import * as ort from './ort/ort.wasm.bundle.min.mjs';
import { decodeImage } from './decode.js';
import { OVERRIDABLE, Vs2Error, latents, loadModel, rankClasses, toPlain } from './vs2.js';
import { looksLikeMojibake } from './tokenizer.js';

const $ = (id) => document.getElementById(id);
const state = { model: null, image: null, busy: false, again: false };
const vs2 = { model: null, runs: 0, last: null, error: null, timings: {}, ready: null };
window.vs2 = vs2;

// Threads need SharedArrayBuffer, which browsers give only to cross-origin-isolated pages
// (COOP: same-origin + COEP: require-corp headers). A plain static server gets one thread.
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
ort.env.logLevel = 'error';
vs2.threads = ort.env.wasm.numThreads;

vs2.ready = init().catch((err) => { fail(err); throw err; });

async function init() {
  const modelUrl = new URLSearchParams(location.search).get('model') ?? './model/';
  const t0 = performance.now();
  const model = await loadModel(ort, modelUrl, { sessionOptions: { executionProviders: ['wasm'] } });
  vs2.timings.load_ms = performance.now() - t0;
  state.model = model;
  vs2.model = model;
  const m = model.manifest;
  $('model-info').textContent = `Model ${m.model.id} (${m.model.source}) · input ${model.pixelInput}`
    + ` · ${model.imageSize}px · SAE ${m.sae.n} latents, k = ${m.sae.k} · loaded in ${ms(vs2.timings.load_ms)}`;
  $('backend').textContent = `onnxruntime-web ${ort.env.versions?.web ?? ''}, wasm, `
    + `${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads === 1 ? '' : 's'}`;
  resetSteering();
  $('classes').value = (model.defaultClasses ?? []).join('\n');
  $('classes-info').textContent = model.defaultClasses
    ? `${model.defaultClasses.length} classes from the export · templates: ${m.templates.join(' | ')}`
    : 'This export has no classes (no logits head): it shows the gate and the latents.';
  wire();
}

function wire() {
  $('file').addEventListener('change', (e) => e.target.files[0] && openFile(e.target.files[0]));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files[0]) openFile(e.dataTransfer.files[0]);
  });
  for (const name of OVERRIDABLE) $(name).addEventListener('change', analyse);
  $('reset-steering').addEventListener('click', () => { resetSteering(); analyse(); });
  $('apply-classes').addEventListener('click', applyClasses);
  $('reset-classes').addEventListener('click', () => {
    state.model.resetClasses();
    $('classes').value = (state.model.defaultClasses ?? []).join('\n');
    $('classes-info').textContent = 'Back to the classes of the export.';
    analyse();
  });
}

function resetSteering() {
  for (const name of OVERRIDABLE) $(name).value = state.model.defaults[name] ?? '';
}

/** Decode with the browser (decode.js: the pixels Pillow gives) and show what the model sees. */
async function decode(file) {
  const image = await decodeImage(file);
  const canvas = $('preview');
  canvas.width = image.width;
  canvas.height = image.height;
  const rgba = new Uint8ClampedArray(image.data.buffer, image.data.byteOffset, image.data.length);
  canvas.getContext('2d').putImageData(new ImageData(rgba, image.width, image.height), 0, 0);
  canvas.hidden = false;
  $('drop-text').hidden = true;
  return image;
}

async function openFile(file) {
  try {
    status(`Decoding ${file.name}…`);
    state.image = await decode(file);
    state.image.name = file.name;
    vs2.image = state.image;
    $('image-info').textContent = `${file.name} · ${state.image.width} × ${state.image.height}`;
    await analyse();
  } catch (err) {
    fail(err);
  }
}

function overrides() {
  const out = {};
  for (const name of OVERRIDABLE) {
    const value = parseFloat($(name).value);
    if (Number.isFinite(value)) out[name] = value;
  }
  return out;
}

async function analyse() {
  if (!state.image || !state.model) return;
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  try {
    do {
      state.again = false;
      await analyseOnce();
    } while (state.again);
  } catch (err) {
    fail(err);
  } finally {
    state.busy = false;
  }
}

async function analyseOnce() {
  const model = state.model;
  status('Running…');
  const options = overrides();
  // Both runs and the labels use the classes of this moment: "Apply" may finish setClasses
  // between the two awaits, and new names over old logits would be wrong labels.
  const classes = model.classes;
  const fixed = { ...options, class_embeddings: model.classEmbeddings ?? undefined };
  const t0 = performance.now();
  const steered = await model.run(state.image, fixed);
  const runMs = performance.now() - t0;
  const plain = await model.run(state.image, { ...fixed, steer_lambda: 0 });
  vs2.timings[vs2.runs === 0 ? 'first_run_ms' : 'warm_run_ms'] = runMs;
  vs2.last = { image: state.image.name, classes, overrides: options,
    steered: toPlain(steered), plain: toPlain(plain) };
  vs2.error = null;
  render(steered, plain, options, runMs, classes);
  vs2.runs += 1;
}

function render(steered, plain, options, runMs, classes) {
  const model = state.model;
  if (steered.logits) {
    bars($('top-steered'), rankClasses(steered.logits, classes, 5)[0]);
    bars($('top-plain'), rankClasses(plain.logits, classes, 5)[0]);
    const a = rankClasses(steered.logits, classes, 1)[0][0].label;
    const b = rankClasses(plain.logits, classes, 1)[0][0].label;
    status(a === b ? `Top prediction: ${a}` : `Top prediction: ${a} (plain CLIP says ${b})`);
  } else {
    status('No classes in this export: the gate and the latents only.');
  }
  // The gate compares gate_score (fvu in graphs from before issue 12) with tau.
  const fvu = (steered.gate_score ?? steered.fvu).data[0];
  const gate = model.manifest.steering?.gate ?? 'fvu';
  const tau = options.gate_tau ?? model.defaults.gate_tau;
  const on = Boolean(steered.steered.data[0]);
  $('gate').innerHTML = '';
  $('gate').append(badge(on), ` ${gate} ${fvu.toPrecision(4)} ${on ? '≤' : '>'} τ ${tau.toPrecision(4)}: `
    + (on ? 'the SAE reconstructs this image well, so it is steered.'
      : 'the SAE reconstructs this image poorly, so it falls back to plain CLIP.'));
  const scale = Math.max(fvu, tau) * 1.25 || 1;
  $('gauge-fvu').style.width = `${(100 * fvu) / scale}%`;
  $('gauge-tau').style.left = `${(100 * tau) / scale}%`;
  const rows = latents(steered)[0];
  const top = Math.max(...rows.map((r) => r.value), 1e-12);
  $('latents').tBodies[0].replaceChildren(...rows.map(({ index, value }) => {
    const tr = document.createElement('tr');
    tr.innerHTML = `<td>#${index}</td><td>${value.toFixed(4)}</td>`
      + `<td style="width:50%"><div class="act" style="width:${(100 * Math.max(value, 0)) / top}%"></div></td>`;
    return tr;
  }));
  const t = vs2.timings;
  $('timings').textContent = `model load ${ms(t.load_ms)} · this run ${ms(runMs)}`
    + (t.first_run_ms !== undefined ? ` · first run ${ms(t.first_run_ms)}` : '');
}

function bars(list, entries) {
  list.replaceChildren(...entries.map(({ label, prob }, i) => {
    const li = document.createElement('li');
    if (i === 0) li.className = 'first';
    const fill = document.createElement('div');
    fill.className = 'fill';
    fill.style.width = `${(100 * prob).toFixed(1)}%`;
    const name = document.createElement('span');
    name.textContent = label;
    const p = document.createElement('span');
    p.className = 'p';
    p.textContent = `${(100 * prob).toFixed(1)}%`;
    li.append(fill, name, p);
    return li;
  }));
}

function badge(on) {
  const b = document.createElement('span');
  b.className = `badge ${on ? 'yes' : 'no'}`;
  b.textContent = on ? 'steered' : 'not steered';
  return b;
}

function parseClasses(text) {
  const lines = text.split('\n').map((s) => s.trim()).filter(Boolean);
  const names = lines.length === 1 ? lines[0].split(',').map((s) => s.trim()).filter(Boolean) : lines;
  const seen = new Set();
  for (const name of names) {
    if (seen.has(name)) throw new Vs2Error(`class "${name}" is listed twice`);
    seen.add(name);
  }
  return names;
}

async function applyClasses() {
  const button = $('apply-classes');
  try {
    const names = parseClasses($('classes').value);
    if (!names.length) throw new Vs2Error('type at least one class name');
    button.disabled = true;
    $('classes-info').textContent = `Encoding ${names.length} classes with the text tower…`;
    const t0 = performance.now();
    const pending = state.model.setClasses(names);
    const call = state.model.classCalls;  // counted when called, as vs2.js decides who wins
    await pending;
    // Reset (or another Apply) clicked meanwhile wins, as in vs2.js: nothing to report here.
    if (state.model.classCalls !== call) return;
    vs2.timings.set_classes_ms = performance.now() - t0;
    const odd = names.filter(looksLikeMojibake);
    $('classes-info').textContent = `${names.length} classes encoded in ${ms(vs2.timings.set_classes_ms)}`
      + (odd.length ? ` · note: ${odd.join(', ')} look like mis-decoded text (Python would repair it)` : '');
    vs2.classesApplied = (vs2.classesApplied ?? 0) + 1;
    await analyse();
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
  }
}

function status(text) {
  $('status').textContent = text;
  $('status').classList.remove('error');
}

function fail(err) {
  if (err instanceof Vs2Error) console.warn(err.message);  // the user's input: shown on the page
  else console.error(err);
  vs2.error = String(err?.message ?? err);
  $('status').textContent = vs2.error;
  $('status').classList.add('error');
  if (!state.model) $('model-info').textContent = `Could not load the model: ${vs2.error}`;
}

function ms(x) { return x === undefined ? '–' : `${Math.round(x)} ms`; }
