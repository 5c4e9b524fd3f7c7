#!/usr/bin/env node
// A multilingual benchmark corpus from text Debian ships: the translations of every
// gettext catalogue under /usr/share/locale, grouped per locale into documents of
// about 2 KB, written as JSONL ({"text": ...}) up to MAX_BYTES of text.
//
//   node make_corpus.js OUT.jsonl [MAX_BYTES]
'use strict';
const fs = require('fs');
const path = require('path');
const [out, maxArg] = process.argv.slice(2);
if (!out) { console.error('usage: node make_corpus.js OUT.jsonl [MAX_BYTES]'); process.exit(2); }
const maxBytes = Number(maxArg || 8e6);

function readMo(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 28) return [];
  const magic = buf.readUInt32LE(0);
  const le = magic === 0x950412de;
  if (!le && magic !== 0xde120495) return [];
  const u32 = (o) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const n = u32(8), table = u32(16), res = [];
  for (let i = 0; i < n; i++) {
    const len = u32(table + 8 * i), off = u32(table + 8 * i + 4);
    if (off + len > buf.length) break;
    const s = buf.slice(off, off + len).toString('utf8');
    if (!s.includes('\ufffd')) for (const f of s.split('\0')) if (f) res.push(f);
  }
  return res;
}

const root = '/usr/share/locale';
const perLocale = [];
for (const lang of fs.readdirSync(root).sort()) {
  const dir = path.join(root, lang, 'LC_MESSAGES');
  if (!fs.existsSync(dir)) continue;
  const docs = [];
  let doc = '';
  const seen = new Set();
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.mo')).sort()) {
    for (const m of readMo(path.join(dir, f))) {
      if (seen.has(m)) continue;
      seen.add(m);
      doc += (doc ? '\n' : '') + m;
      if (Buffer.byteLength(doc) >= 2000) { docs.push(doc); doc = ''; }
    }
  }
  if (doc) docs.push(doc);
  perLocale.push(docs);
}
// Round-robin over locales so that any prefix of the file is multilingual.
const lines = [];
let bytes = 0;
for (let i = 0; bytes < maxBytes; i++) {
  let any = false;
  for (const docs of perLocale) {
    if (i < docs.length && bytes < maxBytes) {
      lines.push(JSON.stringify({ text: docs[i] }));
      bytes += Buffer.byteLength(docs[i]);
      any = true;
    }
  }
  if (!any) break;
}
fs.writeFileSync(out, lines.join('\n') + '\n');
console.error(`make_corpus: ${lines.length} texts, ${bytes} bytes of text, ${perLocale.length} locales`);
