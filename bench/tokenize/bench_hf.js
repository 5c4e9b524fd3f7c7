#!/usr/bin/env node
// The Hugging Face side of bench/tokenize: the same texts through HF tokenizers'
// Node binding, one encodeBatch call per pass (the binding's cheapest path: one
// crossing into Rust; run with RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false and
// taskset so that it uses one core, like kalm-bench-tokenize).
//
//   node bench_hf.js MODULE_DIR TOKENIZER_JSON TEXTS.jsonl [PASSES] [--special]
'use strict';
const fs = require('fs');
const [moduleDir, tokPath, textsPath, passesArg, specialArg] = process.argv.slice(2);
if (!moduleDir || !tokPath || !textsPath) {
  console.error('usage: node bench_hf.js MODULE_DIR TOKENIZER_JSON TEXTS.jsonl [PASSES] [--special]');
  process.exit(2);
}
const passes = Math.max(1, parseInt(passesArg || '3', 10));
const addSpecialTokens = specialArg === '--special';
const { Tokenizer } = require(moduleDir);
(async () => {
  const t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(tokPath);
  const load = Number(process.hrtime.bigint() - t0) / 1e9;
  const texts = fs.readFileSync(textsPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).text);
  const bytes = texts.reduce((n, t) => n + Buffer.byteLength(t), 0);
  let best = Infinity, tokens = 0, checksum = 0;
  for (let p = 0; p < passes; p++) {
    const s0 = process.hrtime.bigint();
    const encs = await tok.encodeBatch(texts, { addSpecialTokens });
    const s = Number(process.hrtime.bigint() - s0) / 1e9;
    best = Math.min(best, s);
    tokens = 0; checksum = 0;
    for (const e of encs) { const ids = e.getIds(); tokens += ids.length; for (const id of ids) checksum += id; }
  }
  console.log(`hf: load ${load.toFixed(2)} s, texts ${texts.length}, bytes ${bytes}, tokens ${tokens}, ` +
    `checksum ${checksum}, best of ${passes}: ${best.toFixed(3)} s, ${(tokens / best).toFixed(0)} tokens/s, ` +
    `${(bytes / best / 1e6).toFixed(2)} MB/s`);
})().catch((e) => { console.error(e); process.exit(1); });
