#!/usr/bin/env node
// Summarises V8 CPU profiles (.cpuprofile, as written by `node --cpu-prof`): self time per
// function and per file, so that a benchmark run with
//   node bench/run.mjs --scenario publish --hub-node-args "--cpu-prof --cpu-prof-dir=prof"
// can be read without a browser:  node bench/profile-summary.mjs prof/*.cpuprofile [--top 30]
import { readFileSync } from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const topIdx = args.indexOf('--top');
const top = topIdx >= 0 ? Number(args[topIdx + 1]) : 25;
const files = args.filter((a, i) => !a.startsWith('--') && (topIdx < 0 || i !== topIdx + 1));
if (files.length === 0) {
  process.stderr.write('usage: node bench/profile-summary.mjs FILE.cpuprofile... [--top N]\n');
  process.exit(2);
}

for (const file of files) {
  /** @type {{ nodes: { id: number, callFrame: { functionName: string, url: string, lineNumber: number }, hitCount?: number, children?: number[] }[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }} */
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i];
    const dt = prof.timeDeltas[i + 1] ?? 0;
    self.set(id, (self.get(id) ?? 0) + dt);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0) || 1;
  const fn = new Map();
  const byFile = new Map();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    const short = url ? url.replace(/^file:\/\//, '').replace(process.cwd() + '/', '') : '';
    const key = `${functionName || '(anonymous)'} ${short ? `${short}:${lineNumber + 1}` : ''}`.trim();
    fn.set(key, (fn.get(key) ?? 0) + us);
    const fk = short ? (short.includes('node_modules/') ? short.replace(/.*node_modules\/((@[^/]+\/)?[^/]+).*/, 'npm:$1') : short.startsWith('node:') ? short : path.basename(short)) : `(${functionName || 'native'})`;
    byFile.set(fk, (byFile.get(fk) ?? 0) + us);
  }
  const pct = (us) => `${((us / total) * 100).toFixed(1).padStart(5)} %`;
  process.stdout.write(`\n${file}: ${(total / 1e6).toFixed(2)} s sampled\n\nself time by function:\n`);
  for (const [k, us] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${pct(us)}  ${k}\n`);
  process.stdout.write('\nself time by file / package:\n');
  for (const [k, us] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${pct(us)}  ${k}\n`);
}
