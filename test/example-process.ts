import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';

export { freePort } from './process-helpers.js';

const ROOT = new URL('..', import.meta.url).pathname;

/** Starts `node examples/<name>/server.mjs` (what `npm run example:<name>` runs after the build) and waits for its URL line. */
export async function startExample(name: string, env: Record<string, string>): Promise<{ child: ChildProcess; output: () => string; stop(): Promise<void> }> {
  if (!existsSync(`${ROOT}dist/integrations/turbo.js`)) throw new Error('dist/ is missing: run `npm run build` first');
  const child = spawn(process.execPath, [`examples/${name}/server.mjs`], { cwd: ROOT, env: { ...process.env, HOST: '127.0.0.1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 15 s:\n${out}`)), 15_000);
    child.stdout!.on('data', () => {
      if (/https?:\/\/\S+/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code}:\n${out}`));
    });
  });
  // An example that dies mid-suite shows up in later tests as refused connections; say why here.
  let stopping = false;
  child.once('exit', (code, signal) => {
    if (!stopping) console.error(`example ${name} exited unexpectedly (code ${code}, signal ${signal}):\n${out}`);
  });
  return {
    child,
    output: () => out,
    stop: () => new Promise<void>((resolve) => {
      stopping = true;
      if (child.exitCode !== null) return resolve();
      const kill = setTimeout(() => child.kill('SIGKILL'), 3000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    }),
  };
}

export type RunningExample = Awaited<ReturnType<typeof startExample>>;
