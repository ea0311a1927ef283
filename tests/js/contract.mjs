// The JS runtime's answers on the contract, as JSON on stdout, for tests/test_js_contract.py:
//
//   node tests/js/contract.mjs constants        manifest.js's names of the graph contract
//   node tests/js/contract.mjs manifests FILE   per manifest in FILE (a JSON list): {ok} or {error}
//   node tests/js/contract.mjs folders FILE     per {folder, model, image_size} in FILE: the stage
//                                               (load, run, classes) that refused it, or 'ok'
import { readFile } from 'node:fs/promises';

import * as contract from '../../vs2_export/web/static/manifest.js';
import { Vs2Error, loadModel } from '../../vs2_export/web/static/vs2.js';

const [command, file] = process.argv.slice(2);

function answer(err) {
  return { error: err.message, name: err.name, bug: !(err instanceof Vs2Error) };
}

async function folder({ folder, model, image_size: s }) {
  const ort = await import('onnxruntime-node');
  ort.env.logLevel = 'fatal';
  const result = { stage: 'load' };
  try {
    const loaded = await loadModel(ort, folder, { model });
    result.classes = loaded.classes;
    result.defaults = loaded.defaults;
    result.stage = 'run';
    await loaded.run({ data: new Uint8Array(s * s * 3).fill(128), width: s, height: s });
    result.stage = 'classes';
    await loaded.setClasses(['cat', 'dog']);
    result.stage = 'ok';
  } catch (err) {
    Object.assign(result, answer(err));
  }
  return result;
}

const inputs = file ? JSON.parse(await readFile(file, 'utf8')) : null;
let out;
if (command === 'constants') {
  out = Object.fromEntries(Object.entries(contract).filter(([, v]) => typeof v !== 'function'));
} else if (command === 'manifests') {
  out = inputs.map((m) => {
    try {
      contract.checkManifest(m);
      return { ok: true };
    } catch (err) {
      return answer(err);
    }
  });
} else if (command === 'folders') {
  out = [];
  for (const spec of inputs) out.push(await folder(spec));
} else {
  throw new Error(`unknown command ${command}`);
}
process.stdout.write(JSON.stringify(out));
