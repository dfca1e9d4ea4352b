/**
 * Every runnable example of README.md and docs/*.md, run as a reader would paste it, against a
 * real hub: a doc example cannot rot silently.
 *
 * Convention: a fenced block is runnable when the line right before its opening fence is
 *
 *     <!-- runnable -->            or   <!-- runnable option option="value" ... -->
 *
 * (an HTML comment: invisible on GitHub and npm). Options:
 *
 *   expect="text"    the block's output (stdout and stderr together) must contain the text;
 *                    expect=/regex/ must match (multiline). Repeatable.
 *   background       the block keeps running, as in a second terminal (a subscriber): the next
 *                    runnable block of the same file runs meanwhile, then the background block's
 *                    expectations are checked and it is stopped.
 *   ready="text"     with background: the next block starts once the output shows the text (an
 *                    app that prints its URL). Without it, a background block that names ports
 *                    (an app on 3010) is up once they accept connections; one that names none
 *                    (a subscriber) gets a head start of 1.5 s.
 *   exit="28"        the exit code the block ends with, when it is not 0 (a `curl -m 1` on a stream).
 *   in="clone"       runs in this repository, as a reader of a fresh clone who ran `npm install`
 *                    (`node dist/cli.js …`). Default: a scratch project in which `npm install
 *                    quicksilver` was run, so `npx quicksilver`, `quicksilver` (on PATH) and
 *                    `import … from 'quicksilver/…'` work as they do for a package user.
 *   file="app.mjs"   the name to save a code block under (default snippet-N.mjs / snippet-N.mts).
 *   env="NAME=value" an environment variable the prose tells the reader to set for a code block
 *                    (`MERCURE_JWT_SECRET=… node app.mjs`, `PORT=3010`). Repeatable.
 *
 * Languages: `sh`/`bash`/`shell` blocks run with `bash -e -o pipefail` (a failing command fails
 * the block; a line ending in `&` runs in the background, and everything the block started is
 * stopped when the block is done). `js`/`mjs` blocks are saved as a file and run with `node`.
 * `ts` blocks are type-checked with the project's `tsc` (strict, NodeNext) and run compiled:
 * what docs tell Node 20 users to do (Node ≥ 22.18 runs them as they are).
 *
 * What the test adds to a block, and nothing else: a development hub (`node dist/cli.js --dev`,
 * as `npm start` runs it) is up; `localhost:3000` becomes that hub's port, and every other port
 * 3001–3099 (`:3001`, `port: 3010`, `listen(3010)`) a free port (the same one throughout a file); the environment is the test's minus
 * every Mercure/Quicksilver variable, so a block only has what it sets itself. Blocks that cannot
 * run here (systemd, supervisor, containers, browsers, fragments) are not marked; the summary test
 * prints how many blocks are runnable and how many are not, per file.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist', 'cli.js');
const DOCS = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
const SHELL = new Set(['sh', 'bash', 'shell', 'console']);
const JS = new Set(['js', 'mjs', 'javascript']);
const TS = new Set(['ts', 'typescript', 'mts']);

interface Block {
  file: string;
  line: number;
  lang: string;
  code: string;
  runnable: boolean;
  expects: Array<string | RegExp>;
  background: boolean;
  inClone: boolean;
  fileName: string | undefined;
  env: Record<string, string>;
  ready: string | undefined;
  exit: number;
}

/** Parses the options of a `<!-- runnable … -->` marker; throws on anything it does not know. */
function parseMarker(text: string, where: string): Pick<Block, 'expects' | 'background' | 'inClone' | 'fileName' | 'env' | 'ready' | 'exit'> {
  const out = { expects: [] as Array<string | RegExp>, background: false, inClone: false, fileName: undefined as string | undefined, env: {} as Record<string, string>, ready: undefined as string | undefined, exit: 0 };
  const token = /([a-z]+)(?:="((?:[^"\\]|\\.)*)"|=\/((?:[^/\\]|\\.)*)\/)?/y;
  let at = 0;
  for (;;) {
    while (text[at] === ' ' || text[at] === '\t') at++;
    if (at >= text.length) break;
    token.lastIndex = at;
    const m = token.exec(text);
    if (!m) throw new Error(`${where}: cannot read runnable options at '${text.slice(at)}'`);
    at = token.lastIndex;
    const [all, name, quoted, regex] = m;
    const value = quoted?.replace(/\\(.)/g, '$1');
    if (name === 'expect' && regex !== undefined) out.expects.push(new RegExp(regex, 'm'));
    else if (name === 'expect' && value !== undefined) out.expects.push(value);
    else if (name === 'background' && value === undefined && regex === undefined) out.background = true;
    else if (name === 'in' && value === 'clone') out.inClone = true;
    else if (name === 'file' && value !== undefined) out.fileName = value;
    else if (name === 'ready' && value !== undefined) out.ready = value;
    else if (name === 'exit' && value !== undefined && /^\d+$/.test(value)) out.exit = Number(value);
    else if (name === 'env' && value !== undefined && /^[A-Z_][A-Z0-9_]*=/.test(value)) out.env[value.slice(0, value.indexOf('='))] = value.slice(value.indexOf('=') + 1);
    else throw new Error(`${where}: unknown runnable option '${all}'`);
  }
  return out;
}

function extractBlocks(file: string): Block[] {
  const lines = readFileSync(join(ROOT, file), 'utf8').split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const marker = /^\s*<!--\s*runnable\b(.*?)-->\s*$/.exec(line);
    if (marker && !/^\s*(```|~~~)/.test(lines[i + 1] ?? '')) {
      throw new Error(`${file}:${i + 1}: a runnable marker must be right before a fenced block`);
    }
    const fence = /^(\s*)(```+|~~~+)\s*([\w-]*)/.exec(line);
    if (!fence) continue;
    const [, indent, ticks, lang] = fence;
    const start = i;
    const code: string[] = [];
    for (i++; i < lines.length && !lines[i]!.trimStart().startsWith(ticks!); i++) code.push(lines[i]!.slice(indent!.length));
    const prev = /^\s*<!--\s*runnable\b(.*?)-->\s*$/.exec(lines[start - 1] ?? '');
    const where = `${file}:${start + 1}`;
    const options = prev ? parseMarker(prev[1]!, where) : { expects: [], background: false, inClone: false, fileName: undefined, env: {}, ready: undefined, exit: 0 };
    blocks.push({ file, line: start + 1, lang: lang!.toLowerCase(), code: code.join('\n') + '\n', runnable: prev !== null, ...options });
  }
  return blocks;
}

const ALL = DOCS.flatMap(extractBlocks);

// ---- the scratch project, the hub, the ports ----

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
  });
}

let scratch: string;
let project: string;
let hub: ChildProcess | undefined;
let hubPort: number;
let hubLog = '';
const portsByFile = new Map<string, Map<string, number>>();

/** `npm install quicksilver` without the network: node_modules links to this checkout's. */
function makeProject(dir: string): void {
  mkdirSync(join(dir, 'node_modules', '.bin'), { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'docs-reader', private: true, type: 'module', dependencies: { quicksilver: '*' } }, null, 2));
  for (const entry of readdirSync(join(ROOT, 'node_modules'))) {
    if (entry === '.bin' || entry.startsWith('.')) continue;
    symlinkSync(join(ROOT, 'node_modules', entry), join(dir, 'node_modules', entry));
  }
  symlinkSync(ROOT, join(dir, 'node_modules', 'quicksilver'));
  // What npm's bin link does (the built cli.js is not executable in the checkout).
  const bin = join(dir, 'node_modules', '.bin', 'quicksilver');
  writeFileSync(bin, `#!/bin/sh\nexec node ${JSON.stringify(CLI)} "$@"\n`);
  chmodSync(bin, 0o755);
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(MERCURE_|QUICKSILVER_|JWT_|PUBLISHER_|SUBSCRIBER_|TRANSPORT_URL$|ADDR$|SERVER_NAME$|ALLOW_ANONYMOUS$|CORS_|PUBLISH_ALLOWED|DEMO$|DEBUG$|GLOBAL_OPTIONS$|SUBSCRIPTIONS$|TOKEN$|NODE_OPTIONS$|VITEST)/.test(k)) continue;
    env[k] = v;
  }
  env['PATH'] = `${join(project, 'node_modules', '.bin')}:${env['PATH'] ?? ''}`;
  env['NO_COLOR'] = '1';
  env['npm_config_update_notifier'] = 'false';
  env['npm_config_fund'] = 'false';
  env['npm_config_audit'] = 'false';
  return env;
}

/** A port number as docs write it: `:3001`, `port: 3010`, `listen(3010)`. */
const PORT = /(?<=:\s?|\()(30\d\d)(?!\d)/g;

/**
 * `localhost:3000` → the hub; every other 30xx port → a free port, one per number and file. The
 * same in the block's expected output.
 */
async function rewritePorts(block: Block): Promise<{ code: string; expects: Array<string | RegExp>; env: Record<string, string>; listens: number[] }> {
  let ports = portsByFile.get(block.file);
  if (!ports) portsByFile.set(block.file, (ports = new Map()));
  const texts = [block.code, ...block.expects.filter((e): e is string => typeof e === 'string'), ...Object.values(block.env).map((v) => `:${v}`)];
  for (const text of texts) {
    for (const [, port] of text.matchAll(PORT)) {
      if (port !== '3000' && !ports.has(port!)) ports.set(port!, await freePort());
    }
  }
  const map = (text: string): string => text.replace(PORT, (port: string) => String(port === '3000' ? hubPort : ports.get(port)));
  const env = Object.fromEntries(Object.entries(block.env).map(([k, v]) => [k, /^30\d\d$/.test(v) ? map(`:${v}`).slice(1) : v]));
  const listens = [...new Set([...texts.join(' ').matchAll(PORT)].map((m) => m[1]!).filter((p) => p !== '3000'))].map((p) => ports.get(p)!);
  return { code: map(block.code), expects: block.expects.map((e) => (typeof e === 'string' ? map(e) : e)), env, listens };
}

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'qs-docs-'));
  project = join(scratch, 'project');
  mkdirSync(project);
  makeProject(project);
  hubPort = await freePort();
  const hubDir = join(scratch, 'hub');
  mkdirSync(hubDir);
  // What `npm start` runs, on a free port, in a directory of its own (its store stays there).
  hub = spawn(process.execPath, [CLI, '--dev', '--addr', `127.0.0.1:${hubPort}`, '--workers', '1'], { cwd: hubDir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  hub.stdout!.on('data', (d: Buffer) => { hubLog += d.toString(); });
  hub.stderr!.on('data', (d: Buffer) => { hubLog += d.toString(); });
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${hubPort}/readyz`)).ok) break;
    } catch { /* not yet */ }
    if (Date.now() > deadline || hub.exitCode !== null) throw new Error(`the development hub did not start:\n${hubLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}, 30_000);

afterAll(async () => {
  if (hub && hub.exitCode === null) {
    const exited = new Promise((r) => hub!.once('exit', r));
    hub.kill('SIGTERM');
    await exited;
  }
  rmSync(scratch, { recursive: true, force: true });
});

// ---- running a block ----

interface Run {
  block: Block;
  child: ChildProcess;
  output: () => string;
  exit: Promise<number | null>;
  expects: Array<string | RegExp>;
  /** The (rewritten) ports other than the hub's that the block names: a background app listens there. */
  listens: number[];
}

let runCount = 0;

async function start(block: Block): Promise<Run> {
  const { code, expects, env, listens } = await rewritePorts(block);
  const dir = block.inClone ? ROOT : project;
  const work = join(scratch, `block-${++runCount}`);
  mkdirSync(work);
  let command: string;
  let args: string[];
  if (SHELL.has(block.lang)) {
    const script = join(work, 'block.sh');
    writeFileSync(script, code);
    command = 'bash';
    args = ['-e', '-o', 'pipefail', script];
  } else if (JS.has(block.lang)) {
    // Saved in the scratch project, where `quicksilver` is installed.
    const file = join(project, block.fileName ?? `snippet-${runCount}.mjs`);
    writeFileSync(file, code);
    command = process.execPath;
    args = [file];
  } else if (TS.has(block.lang)) {
    const name = block.fileName ?? `snippet-${runCount}.mts`;
    const file = join(project, name);
    writeFileSync(file, code);
    const outDir = join(project, `out-${runCount}`);
    // Type-check and compile as a Node 20 user would (what README.md says), then run the output.
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const compile = spawnSync(process.execPath, [tsc, '--strict', '--module', 'nodenext', '--target', 'es2022', '--types', 'node', '--skipLibCheck', '--outDir', outDir, file], { cwd: project, encoding: 'utf8' });
    expect(compile.status, `${block.file}:${block.line}: tsc refuses the block\n--- block\n${code}--- tsc\n${compile.stdout}${compile.stderr}`).toBe(0);
    command = process.execPath;
    args = [join(outDir, name.replace(/\.m?ts$/, (ext) => (ext === '.mts' ? '.mjs' : '.js')))];
  } else {
    throw new Error(`${block.file}:${block.line}: a '${block.lang}' block cannot be marked runnable`);
  }
  // A process group of its own, so that whatever the block starts is stopped with it.
  const child = spawn(command, args, { cwd: dir, env: { ...cleanEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exit = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
  return { block, child, output: () => out, exit, expects, listens };
}

function stopGroup(run: Run): Promise<void> {
  const pid = run.child.pid!;
  const alive = (): boolean => { try { process.kill(-pid, 0); return true; } catch { return false; } };
  try { process.kill(-pid, 'SIGTERM'); } catch { return Promise.resolve(); }
  return new Promise((ok) => {
    const began = Date.now();
    const tick = (): void => {
      if (!alive()) return ok();
      if (Date.now() - began > 5_000) { try { process.kill(-pid, 'SIGKILL'); } catch { /* gone */ } return ok(); }
      setTimeout(tick, 50);
    };
    tick();
  });
}

function matched(run: Run): boolean {
  const out = run.output();
  return run.expects.every((e) => (typeof e === 'string' ? out.includes(e) : e.test(out)));
}

/** Waits up to `ms` for the output to show what the block expects (events arrive asynchronously). */
async function waitForExpectations(run: Run, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!matched(run) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

function describeRun(run: Run, code: number | null | 'running'): string {
  return `${run.block.file}:${run.block.line} (${run.block.lang}${run.block.background ? ', background' : ''}) exit ${code}\n` +
    `--- block\n${run.block.code}--- output\n${run.output()}--- expected\n${run.expects.map(String).join('\n')}`;
}

function checkExpectations(run: Run, code: number | null | 'running'): void {
  const out = run.output();
  for (const e of run.expects) {
    const ok = typeof e === 'string' ? out.includes(e) : e.test(out);
    expect(ok, `output does not show ${String(e)}\n${describeRun(run, code)}`).toBe(true);
  }
}

function accepts(port: number): Promise<boolean> {
  const attempt = (host: string): Promise<boolean> => new Promise((ok) => {
    const socket = connect({ port, host });
    socket.once('connect', () => { socket.destroy(); ok(true); });
    socket.once('error', () => ok(false));
  });
  return attempt('127.0.0.1').then((v) => v || attempt('::1'));
}

/** A background block gets this long to be up, as a reader switching terminals would give it. */
const BACKGROUND_HEAD_START_MS = 1_500;
const BLOCK_TIMEOUT_MS = 120_000;

async function runGroup(group: Block[]): Promise<void> {
  const background: Run[] = [];
  try {
    for (const block of group.slice(0, -1)) {
      const run = await start(block);
      background.push(run);
      if (block.ready === undefined && run.listens.length > 0) {
        // An app: up once the ports it names accept connections (a loaded machine may take a while).
        const deadline = Date.now() + BLOCK_TIMEOUT_MS;
        for (const port of run.listens) {
          while (!(await accepts(port)) && run.child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        }
      } else if (block.ready === undefined) await new Promise((r) => setTimeout(r, BACKGROUND_HEAD_START_MS));
      else {
        const deadline = Date.now() + BLOCK_TIMEOUT_MS;
        while (!run.output().includes(block.ready) && run.child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      }
      const early = await Promise.race([run.exit, new Promise<'running'>((r) => setTimeout(() => r('running'), 0))]);
      expect(early, `a background block ended early\n${describeRun(run, early)}`).toBe('running');
    }
    const run = await start(group.at(-1)!);
    try {
      const code = await Promise.race([run.exit, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), BLOCK_TIMEOUT_MS))]);
      await waitForExpectations(run, 3_000);
      expect(code, `the block did not succeed\n${describeRun(run, code === 'timeout' ? 'running' : code)}`).toBe(run.block.exit);
      checkExpectations(run, code === 'timeout' ? 'running' : code);
      for (const bg of background) {
        await waitForExpectations(bg, 3_000);
        checkExpectations(bg, 'running');
      }
    } finally {
      await stopGroup(run);
    }
  } finally {
    for (const bg of background) await stopGroup(bg);
  }
}

/** Runnable blocks of a file, grouped: background blocks with the block that follows them. */
function groups(file: string): Block[][] {
  const out: Block[][] = [];
  let pending: Block[] = [];
  for (const b of ALL.filter((x) => x.file === file && x.runnable)) {
    pending.push(b);
    if (!b.background) { out.push(pending); pending = []; }
  }
  if (pending.length > 0) throw new Error(`${file}:${pending[0]!.line}: a background block must be followed by a runnable block`);
  return out;
}

describe('documentation examples', () => {
  it('lists what is runnable and what is not', () => {
    const rows = DOCS.map((file) => {
      const blocks = ALL.filter((b) => b.file === file);
      const notRunnable = blocks.filter((b) => !b.runnable);
      const kinds = [...new Set(notRunnable.map((b) => b.lang || 'text'))].join(', ');
      return `${file}: ${blocks.length - notRunnable.length} runnable, ${notRunnable.length} not${kinds ? ` (${kinds})` : ''}`;
    });
    const runnable = ALL.filter((b) => b.runnable).length;
    console.log(`docs examples: ${runnable} of ${ALL.length} blocks runnable\n  ${rows.join('\n  ')}`);
    for (const b of ALL.filter((x) => x.runnable)) {
      expect(SHELL.has(b.lang) || JS.has(b.lang) || TS.has(b.lang), `${b.file}:${b.line}: '${b.lang}' cannot be runnable`).toBe(true);
    }
    // Markers must not vanish unnoticed: at least this many examples run.
    expect(runnable).toBeGreaterThanOrEqual(16);
  });

  it("README's relative links and images resolve inside the npm package (docs/ and deploy/ are packed)", () => {
    const pack = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
    expect(pack.status, pack.stderr).toBe(0);
    const files = new Set((JSON.parse(pack.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path));
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const targets = [...readme.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)].map((m) => m[1]!).filter((t) => !/^[a-z]+:/.test(t));
    expect(targets.length).toBeGreaterThan(5);
    for (const target of targets) {
      const path = target.replace(/^\.\//, '').replace(/\/$/, '');
      const packed = files.has(path) || [...files].some((f) => f.startsWith(`${path}/`));
      expect(packed, `README links to ${target}, which the package does not contain`).toBe(true);
    }
    expect(files.has('LICENSE')).toBe(true);
  });

  it('docs/migrating.md says automatic HTTPS is missing exactly while the hub has no ACME option', () => {
    const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' }).stdout;
    const hubHasAcme = /--acme/.test(help);
    const docSaysMissing = /\*\*not yet available\*\*/.test(readFileSync(join(ROOT, 'docs', 'migrating.md'), 'utf8'));
    expect(docSaysMissing, hubHasAcme ? 'the hub has --acme options now: document them in docs/migrating.md' : 'docs/migrating.md must say that automatic HTTPS is not available').toBe(!hubHasAcme);
  });

  for (const file of DOCS) {
    for (const group of groups(file)) {
      const title = `${file}:${group.map((b) => b.line).join('+')} (${group.map((b) => b.lang).join(' + ')})`;
      it(title, () => runGroup(group), BLOCK_TIMEOUT_MS + 30_000 + group.length * BACKGROUND_HEAD_START_MS);
    }
  }
});
