#!/usr/bin/env node
// Summarises a V8 heap snapshot (.heapsnapshot): self size and count per constructor, so the
// per-connection cost of a hub holding N idle subscribers can be broken down. Take one with
//   node bench/run.mjs --scenario idle --idle 10000 --workers 1 --targets quicksilver \
//     --hub-node-args "--heapsnapshot-signal=SIGUSR2"      (then kill -USR2 <hub pid>)
// and read it with:  node bench/heap-summary.mjs FILE.heapsnapshot [--per N] [--top 40]
// --per N divides every figure by N (the number of subscribers) to show bytes per subscriber.
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const per = opt('per', 0);
const top = opt('top', 40);
const file = args.find((a) => a.endsWith('.heapsnapshot'));
if (!file) {
  process.stderr.write('usage: node bench/heap-summary.mjs FILE.heapsnapshot [--per N] [--top N]\n');
  process.exit(2);
}
const snap = JSON.parse(readFileSync(file, 'utf8'));
const meta = snap.snapshot.meta;
const F = meta.node_fields.length;
const iType = meta.node_fields.indexOf('type');
const iName = meta.node_fields.indexOf('name');
const iSize = meta.node_fields.indexOf('self_size');
const types = meta.node_types[0];
const { nodes, strings } = snap;
const groups = new Map();
let total = 0;
for (let i = 0; i < nodes.length; i += F) {
  const type = types[nodes[i + iType]];
  const size = nodes[i + iSize];
  total += size;
  let name = strings[nodes[i + iName]];
  if (type === 'string' || type === 'concatenated string' || type === 'sliced string') name = '(string)';
  else if (type === 'code') name = '(code)';
  else if (type === 'number') name = '(heap number)';
  else if (type === 'array') name = `(array) ${name.length > 40 ? '' : name}`;
  else if (type === 'closure') name = `(closure) ${name}`;
  else if (type === 'hidden' || type === 'object shape') name = `(${type}) ${name.slice(0, 40)}`;
  else name = `${name.slice(0, 60)}${type === 'object' ? '' : ` [${type}]`}`;
  const g = groups.get(name) ?? { count: 0, size: 0 };
  g.count++;
  g.size += size;
  groups.set(name, g);
}
const fmt = (n) => (per ? (n / per).toFixed(per > 1 ? 1 : 0) : String(n)).padStart(10);
process.stdout.write(`${file}: ${(total / 1048576).toFixed(1)} MiB in ${nodes.length / F} objects${per ? `; figures per subscriber (÷ ${per})` : ''}\n`);
process.stdout.write(`${'bytes'.padStart(10)} ${'count'.padStart(10)}  constructor\n`);
for (const [name, g] of [...groups].sort((a, b) => b[1].size - a[1].size).slice(0, top)) {
  process.stdout.write(`${fmt(g.size)} ${fmt(g.count)}  ${name}\n`);
}
