// Classify a PNG with an exported model in Node, with and without steering, and with class
// names typed on the command line (run-time classes through text.onnx). After `npm ci`:
//   node docs/examples/node_classify.mjs exported/NAME photo.png [class ...]
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';

import { decodePng } from '../../vs2_export/web/static/png.js';
import { loadModel } from '../../vs2_export/web/static/vs2.js';

const [folder, imagePath, ...classes] = process.argv.slice(2);
const model = await loadModel(ort, folder);
const image = await decodePng(await readFile(imagePath));  // { data: RGB bytes, width, height }
const show = (top) => top.map((t) => `${t.label} ${(100 * t.prob).toFixed(1)}%`).join(', ');

const steered = await model.classify(image, { topK: 3 });
const plain = await model.classify(image, { topK: 3, steer_lambda: 0 });  // plain CLIP
console.log(`steered: ${steered.steered ? 'yes' : 'no'} (fvu ${steered.fvu.toFixed(4)}, tau ${steered.tau.toFixed(4)})`);
console.log(`with steering: ${show(steered.top)}`);
console.log(`plain CLIP: ${show(plain.top)}`);
if (classes.length) {
  await model.setClasses(classes);  // manifest templates, tokenizer.js, text.onnx
  console.log(`${classes.join(' or ')}: ${show((await model.classify(image, { topK: 3 })).top)}`);
}
