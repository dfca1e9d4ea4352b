/**
 * deploy/Containerfile and deploy/compose.yaml, on a machine without a container engine (docker
 * here is only the client, and the base images cannot be pulled):
 *
 * - the Containerfile's instructions are what docs/operations.md promises (two node:20 stages,
 *   USER node, EXPOSE 3000, a /healthz HEALTHCHECK, STOPSIGNAL SIGTERM, the store on /data);
 *   every file it COPYs from the build context exists and is let through by
 *   Containerfile.dockerignore;
 * - its steps are replayed in temporary directories: the build stage's `npm run build` on
 *   exactly the files it copies (dependencies linked from this checkout instead of `npm install`),
 *   the runtime stage assembled from its COPY lines, then its ENTRYPOINT started with its ENV
 *   (as an unprivileged user when root, like USER node), its HEALTHCHECK command run as the
 *   engine would, the backup script it ships run against the live store, and SIGTERM (its
 *   STOPSIGNAL) answered with exit code 0;
 * - compose.yaml passes `docker-compose config` (Debian's docker-compose, which validates against
 *   the Compose schema without an engine) and has the two hubs and Redis it documents, and the
 *   hubs' environment passes `quicksilver check-config`.
 *
 * docker-compose comes from scripts/install-deploy-tools.sh; if it cannot be installed, the
 * compose checks are skipped with a message, unless CI is set (then they fail).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, waitUntil } from './process-helpers.js';

const run = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CONTAINERFILE = join(ROOT, 'deploy', 'Containerfile');
const IS_ROOT = process.getuid?.() === 0;

interface Instruction {
  stage: number;
  op: string;
  args: string;
}

/** Dockerfile syntax: comments, `\` continuations, one instruction per logical line. */
/** The PATH entries every user can search (the directory and all its parents world-executable). */
function searchableByAll(path: string): string {
  const ok = (dir: string): boolean => {
    for (let d = dir; ; d = dirname(d)) {
      try {
        if ((statSync(d).mode & 0o001) === 0) return false;
      } catch {
        return false;
      }
      if (d === dirname(d)) return true;
    }
  };
  return path.split(':').filter((d) => d.startsWith('/') && ok(d)).join(':');
}

function parseContainerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  const logical = text.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n').replace(/\\\n/g, ' ');
  for (const line of logical.split('\n')) {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (!m) {
      if (line.trim() !== '') throw new Error(`cannot parse: ${line}`);
      continue;
    }
    if (m[1] === 'FROM') stage++;
    out.push({ stage, op: m[1]!, args: m[2]!.trim() });
  }
  return out;
}

/** JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD. */
function execForm(args: string): string[] {
  const v = JSON.parse(args) as unknown;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`not an exec form: ${args}`);
  return v;
}

/** ENV k=v k2=v2 (no quoting needed in this file). */
function envOf(ins: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of ins.filter((x) => x.op === 'ENV')) {
    for (const pair of i.args.split(/\s+/)) {
      const eq = pair.indexOf('=');
      env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return env;
}

const ins = parseContainerfile(readFileSync(CONTAINERFILE, 'utf8'));
const build = ins.filter((i) => i.stage === 0);
const runtime = ins.filter((i) => i.stage === 1);
const only = (stage: Instruction[], op: string): Instruction => {
  const found = stage.filter((i) => i.op === op);
  expect(found, op).toHaveLength(1);
  return found[0]!;
};

interface Copy { from?: string; sources: string[]; dest: string }
function copies(stage: Instruction[]): Copy[] {
  return stage.filter((i) => i.op === 'COPY').map((i) => {
    const words = i.args.split(/\s+/);
    const from = words[0]!.startsWith('--from=') ? words.shift()!.slice(7) : undefined;
    const dest = words.pop()!;
    return { ...(from ? { from } : {}), sources: words, dest };
  });
}

/** The allow-list .dockerignore: `**` then `!path` exceptions. */
function allowedByIgnore(path: string): boolean {
  const lines = readFileSync(`${CONTAINERFILE}.dockerignore`, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  expect(lines[0]).toBe('**');
  return lines.slice(1).some((l) => {
    const p = l.slice(1);
    return p === path || (p.endsWith('/**') && (path === p.slice(0, -3) || path.startsWith(p.slice(0, -2))));
  });
}

describe('deploy/Containerfile', () => {
  it('two node:20-bookworm-slim stages; runs as node with the store on /data, a /healthz check and SIGTERM', () => {
    const froms = ins.filter((i) => i.op === 'FROM').map((i) => i.args);
    expect(froms).toEqual(['node:20-bookworm-slim AS build', 'node:20-bookworm-slim']);
    expect(build.some((i) => i.op === 'RUN' && /npm run build/.test(i.args))).toBe(true);
    expect(build.some((i) => i.op === 'RUN' && /npm prune --omit=dev/.test(i.args))).toBe(true);
    expect(only(runtime, 'USER').args).toBe('node');
    expect(only(runtime, 'EXPOSE').args).toBe('3000');
    expect(only(runtime, 'STOPSIGNAL').args).toBe('SIGTERM');
    expect(execForm(only(runtime, 'VOLUME').args)).toEqual(['/data']);
    expect(envOf(runtime).MERCURE_TRANSPORT_URL).toBe('lmdb:///data/hub.lmdb');
    expect(only(runtime, 'HEALTHCHECK').args).toMatch(/127\.0\.0\.1:3000\/healthz/);
    expect(execForm(only(runtime, 'ENTRYPOINT').args)).toEqual(['node', '/app/dist/cli.js']);
    // USER comes after the RUN that gives /data to that user.
    const order = runtime.map((i) => i.op);
    expect(order.indexOf('USER')).toBeGreaterThan(order.lastIndexOf('RUN'));
    expect(runtime.find((i) => i.op === 'RUN')!.args).toMatch(/chown node:node \/data/);
  });

  it('copies only files that exist in the build context and that the ignore file lets through', () => {
    const fromContext = [...copies(build), ...copies(runtime)].filter((c) => !c.from);
    expect(fromContext.length).toBeGreaterThan(0);
    for (const c of fromContext) {
      for (const src of c.sources) {
        expect(existsSync(join(ROOT, src)), src).toBe(true);
        expect(allowedByIgnore(src.replace(/\/$/, '')), `${src} in Containerfile.dockerignore`).toBe(true);
      }
    }
    // What the runtime stage takes from the build stage, the build stage has made.
    for (const c of copies(runtime).filter((x) => x.from === 'build')) {
      for (const src of c.sources) expect(src, src).toMatch(/^\/src\/(package\.json|node_modules|dist)$/);
    }
  });

  describe('replayed without an engine', () => {
    let dir: string;
    let app: string;
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'qs-image-'));
      chmodSync(dir, 0o755);
      // Build stage: WORKDIR /src, its COPYs, dependencies from this checkout, its build command.
      const src = join(dir, 'src');
      mkdirSync(src);
      for (const c of copies(build)) {
        for (const s of c.sources) {
          const target = c.dest === './' ? join(src, s) : join(src, c.dest.replace(/^\.\//, ''));
          cpSync(join(ROOT, s), target, { recursive: true });
        }
      }
      symlinkSync(join(ROOT, 'node_modules'), join(src, 'node_modules'));
      await run('npm', ['run', 'build'], { cwd: src, timeout: 120_000 });
      // Runtime stage: WORKDIR /app and its COPYs.
      app = join(dir, 'app');
      mkdirSync(app);
      for (const c of copies(runtime)) {
        for (const s of c.sources) {
          const from = c.from === 'build' ? join(dir, s) : join(ROOT, s);
          const to = join(app, c.dest.replace(/^\.\//, ''));
          mkdirSync(dirname(to), { recursive: true });
          cpSync(from, to, { recursive: true, verbatimSymlinks: true });
        }
      }
      mkdirSync(join(dir, 'data'));
      if (IS_ROOT) chownSync(join(dir, 'data'), 65534, 65534);
    }, 180_000);
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('the build stage compiles the CLI from the copied files alone', () => {
      expect(statSync(join(dir, 'src', 'dist', 'cli.js')).isFile()).toBe(true);
      expect(statSync(join(app, 'dist', 'cli.js')).isFile()).toBe(true);
    });

    it('ENTRYPOINT starts with the image ENV; HEALTHCHECK passes; the shipped backup script copies the live store; SIGTERM exits 0', async () => {
      const port = await freePort();
      const env = envOf(runtime);
      // The image's paths, moved into the temporary "image".
      const transport = env.MERCURE_TRANSPORT_URL!.replace('/data/', `${dir}/data/`);
      const rewrite = (a: string) => a.replace('/app/', `${app}/`).replace('127.0.0.1:3000', `127.0.0.1:${port}`);
      const asUser = IS_ROOT ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'] : [];
      const entry = [...execForm(only(runtime, 'ENTRYPOINT').args), ...execForm(only(runtime, 'CMD').args)].map(rewrite);
      const child = spawn(asUser[0] ?? entry[0]!, [...asUser.slice(1), ...(asUser.length ? entry : entry.slice(1))], {
        cwd: app,
        env: {
          // The image's user must be able to run `node` (and the hub's workers, forked from the
          // same binary): a Node installed under root's home (npx node@24) is not for it.
          PATH: asUser.length ? searchableByAll(process.env.PATH ?? '') : process.env.PATH ?? '',
          ...env,
          ADDR: `127.0.0.1:${port}`,
          MERCURE_TRANSPORT_URL: transport,
          MERCURE_PUBLISHER_JWT_KEY: 'container-test-publisher-key-0123456789abcdef',
          MERCURE_SUBSCRIBER_JWT_KEY: 'container-test-subscriber-key-0123456789abcdef',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      try {
        await waitUntil(() => out.includes('Quicksilver hub ready'), 10_000, `the hub: ${out}`);
        // HEALTHCHECK [options] CMD ["node", "-e", ...]: exit code 0 is healthy.
        const hc = execForm(/CMD\s+(\[.*\])$/.exec(only(runtime, 'HEALTHCHECK').args)![1]!).map(rewrite);
        await run(hc[0]!, hc.slice(1), { timeout: 3000 });

        // docker exec hub node /app/scripts/lmdb-backup.mjs /data/hub.lmdb /data/backup.lmdb
        const backup = join(dir, 'data', 'backup.lmdb');
        const storePath = transport.replace(/^lmdb:\/\//, '');
        const backupArgv = [...asUser, process.execPath, join(app, 'scripts', 'lmdb-backup.mjs'), storePath, backup];
        const r = await run(backupArgv[0]!, backupArgv.slice(1), { cwd: '/' });
        expect(r.stdout).toContain('->');
        expect(statSync(backup).size).toBeGreaterThan(0);

        child.kill(only(runtime, 'STOPSIGNAL').args as NodeJS.Signals);
        expect(await exited).toBe(0);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    });
  });
});

async function composeTool(): Promise<string | null> {
  try {
    await run('bash', [join(ROOT, 'scripts', 'install-deploy-tools.sh'), 'docker-compose'], { timeout: 600_000 });
    return null;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const why = `docker-compose not installable: ${(e.stderr || e.message).trim()}`;
    if (process.env.CI) throw new Error(why);
    console.warn(`deploy-container: skipping the compose checks: ${why}`);
    return why;
  }
}
const noCompose = await composeTool();

describe.skipIf(noCompose !== null)('deploy/compose.yaml', () => {
  const keys = { MERCURE_PUBLISHER_JWT_KEY: 'compose-test-publisher-key-0123456789abcdef', MERCURE_SUBSCRIBER_JWT_KEY: 'compose-test-subscriber-key-0123456789abcdef' };
  const config = async (env: Record<string, string>): Promise<Record<string, unknown>> => {
    const { stdout } = await run('docker-compose', ['-f', join(ROOT, 'deploy', 'compose.yaml'), 'config'], {
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    // docker-compose prints the resolved file as YAML; Python's yaml (its own dependency) reads it.
    const json = execFileSync('python3', ['-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))'],
      { input: stdout, encoding: 'utf8' });
    return JSON.parse(json) as Record<string, unknown>;
  };

  it('passes `docker-compose config`: two hubs on Redis, healthchecks, a stop grace above the drain time', async () => {
    const c = await config(keys) as { services: Record<string, Record<string, any>> };
    expect(Object.keys(c.services).sort()).toEqual(['hub-1', 'hub-2', 'redis']);
    for (const name of ['hub-1', 'hub-2']) {
      const s = c.services[name]!;
      expect(s.build.dockerfile).toBe('deploy/Containerfile');
      expect(existsSync(join(s.build.context, s.build.dockerfile))).toBe(true);
      expect(s.environment.MERCURE_TRANSPORT_URL).toMatch(/^redis:\/\/redis:6379\//);
      expect(s.environment.MERCURE_PUBLISHER_JWT_KEY).toBe(keys.MERCURE_PUBLISHER_JWT_KEY);
      expect(s.healthcheck.test.join(' ')).toMatch(/127\.0\.0\.1:3000\/readyz/);
      expect(s.depends_on.redis.condition).toBe('service_healthy');
      expect(s.stop_grace_period).toBe('30s');
      expect(s.ulimits.nofile.hard).toBeGreaterThanOrEqual(65536);
      expect(s.ports[0].target).toBe(3000);
    }
    expect(c.services.redis!.healthcheck.test).toEqual(['CMD', 'redis-cli', 'ping']);
  });

  it('refuses to start without the keys', async () => {
    await expect(config({})).rejects.toThrow(/MERCURE_PUBLISHER_JWT_KEY/);
  });

  it("the hubs' environment and command pass quicksilver check-config", async () => {
    const c = await config(keys) as { services: Record<string, Record<string, any>> };
    const hub = c.services['hub-1']!;
    const env = Object.fromEntries(Object.entries(hub.environment as Record<string, string>).map(([k, v]) =>
      [k, k === 'MERCURE_TRANSPORT_URL' ? v.replace('redis://redis:', 'redis://127.0.0.1:') : v]));
    const { stdout } = await run(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'check-config', ...(hub.command as string[])], {
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    expect(stdout).toContain('configuration OK');
  });
});
