// Tokenize a corpus with tokenizer.js and write the ids as JSON; tests/test_js_tokenizer.py
// compares them with open_clip.
//   node tests/js/tokenize.mjs VOCAB CORPUS.json OUT.json [LENGTH/CLEAN ...]   (default 77/lower)
import { readFile, writeFile } from 'node:fs/promises';
import { loadTokenizer, looksLikeMojibake } from '../../vs2_export/web/static/tokenizer.js';

const [vocab, corpusPath, outPath, ...variants] = process.argv.slice(2);
const { texts } = JSON.parse(await readFile(corpusPath, 'utf-8'));
const out = { ids: {}, ms: {}, mojibake: texts.map(looksLikeMojibake) };
for (const variant of variants.length ? variants : ['77/lower']) {
  const [length, clean = 'lower'] = variant.split('/');
  const t0 = performance.now();
  const tokenizer = await loadTokenizer(vocab, { contextLength: Number(length), clean });
  const t1 = performance.now();
  const { data, dims } = tokenizer.tokenize(texts);
  out.ms[variant] = { load: t1 - t0, tokenize: performance.now() - t1 };
  out.ids[variant] = Array.from({ length: dims[0] },
    (_, r) => Array.from(data.subarray(r * dims[1], (r + 1) * dims[1]), Number));
}
await writeFile(outPath, JSON.stringify(out));
