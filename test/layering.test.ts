/**
 * The tree is the architecture: this test reads the import graph of src/ (static imports,
 * `export … from`, `import type`, dynamic `import('…')`) and fails on a file-level cycle or on an
 * import that runs against the layering written in README.md ("Layout"). Type-only imports count:
 * a cycle of types is still two files that cannot be understood one without the other.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '../src');

/** The folder (layer) of a file relative to src/: 'core', 'http', …, or 'top' for cli.ts/index.ts. */
function layerOf(rel: string): string {
  const slash = rel.indexOf('/');
  return slash === -1 ? 'top' : rel.slice(0, slash);
}

/**
 * Which layers each layer may import (its own is always allowed). `auth` may reach into core only
 * for the matchers, which grants are made of; everything else of core sits above auth.
 */
const ALLOWED: Record<string, readonly string[]> = {
  util: [],
  observability: ['util'],
  core: ['auth', 'observability', 'util'],
  auth: ['core:matchers', 'observability', 'util'],
  transports: ['core', 'observability', 'util'],
  webhooks: ['core', 'auth', 'observability', 'util'],
  http: ['core', 'auth', 'transports', 'webhooks', 'observability', 'util'],
  config: ['http', 'auth', 'core', 'webhooks', 'observability', 'util'],
  server: ['http', 'config', 'core', 'auth', 'transports', 'webhooks', 'observability', 'util'],
  commands: ['config', 'http', 'auth', 'core', 'observability', 'util', 'client'],
  client: [],
  integrations: ['client', 'http', 'core', 'observability', 'util'],
  top: ['*'],
};

/** The core files auth may import: the selector matchers and what they are built from. */
const CORE_MATCHERS = /^core\/(topic-matcher|uri-template[\w-]*)\.ts$/;

export type Graph = Map<string, string[]>;

function listSources(dir: string, base = dir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return listSources(p, base);
    return e.name.endsWith('.ts') ? [path.relative(base, p).split(path.sep).join('/')] : [];
  });
}

const SPECIFIER = /(?:^|[\s;])(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;(=])import\s*\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s+['"]([^'"]+)['"]/gm;

/** Relative imports of one source text, resolved to src-relative .ts paths. */
export function importsOf(rel: string, text: string): string[] {
  const out: string[] = [];
  // Comments may quote code ("import('/turbo.js')" in a doc comment): drop them first.
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  for (const m of code.matchAll(SPECIFIER)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (!spec || !spec.startsWith('.')) continue;
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec)).replace(/\.js$/, '.ts');
    out.push(target);
  }
  return out;
}

export function readGraph(): Graph {
  const graph: Graph = new Map();
  for (const rel of listSources(SRC)) graph.set(rel, importsOf(rel, readFileSync(path.join(SRC, rel), 'utf8')));
  return graph;
}

/** Every import that the layering forbids, as "from -> to (reason)". */
export function layeringViolations(graph: Graph): string[] {
  const bad: string[] = [];
  for (const [from, targets] of graph) {
    const fromLayer = layerOf(from);
    for (const to of targets) {
      if (!graph.has(to)) {
        bad.push(`${from} -> ${to} (no such file in src/)`);
        continue;
      }
      if (to === 'cli.ts') {
        bad.push(`${from} -> ${to} (nothing imports the CLI)`);
        continue;
      }
      const toLayer = layerOf(to);
      if (toLayer === fromLayer) continue;
      const allowed = ALLOWED[fromLayer];
      if (!allowed) {
        bad.push(`${from} -> ${to} (folder ${fromLayer}/ has no layering rule: add it to README and this test)`);
        continue;
      }
      if (allowed.includes('*') || allowed.includes(toLayer)) continue;
      if (allowed.includes(`${toLayer}:matchers`) && CORE_MATCHERS.test(to)) continue;
      bad.push(`${from} -> ${to} (${fromLayer}/ may not import ${toLayer}/)`);
    }
  }
  return bad;
}

/** Each elementary cycle found by a depth-first search, as "a -> b -> a". */
export function cycles(graph: Graph): string[] {
  const found: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (!graph.has(next)) continue;
      const s = state.get(next);
      if (s === 'open') found.push([...stack.slice(stack.indexOf(next)), next].join(' -> '));
      else if (s === undefined) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return found;
}

describe('import graph of src/', () => {
  const graph = readGraph();

  it('reads every source file and their imports', () => {
    expect(graph.size).toBeGreaterThan(40);
    expect(graph.get('cli.ts')!.length).toBeGreaterThan(3);
  });

  it('has no import cycle', () => {
    expect(cycles(graph)).toEqual([]);
  });

  it('has no import against the layering', () => {
    expect(layeringViolations(graph)).toEqual([]);
  });

  it('keeps every layer folder under a rule', () => {
    const folders = new Set([...graph.keys()].map(layerOf));
    for (const f of folders) expect(Object.keys(ALLOWED), `folder ${f}/`).toContain(f);
  });

  // The checks themselves must be able to fail: the same graph with one bad edge added.
  it('catches a core -> http import, an import of the CLI and a new cycle', () => {
    const bad: Graph = new Map([...graph].map(([k, v]) => [k, [...v]]));
    bad.get('core/hub.ts')!.push('http/handler.ts');
    bad.get('server/server.ts')!.push('cli.ts');
    expect(layeringViolations(bad)).toEqual([
      'core/hub.ts -> http/handler.ts (core/ may not import http/)',
      'server/server.ts -> cli.ts (nothing imports the CLI)',
    ]);
    expect(cycles(bad).some((c) => c.includes('core/hub.ts') && c.includes('http/handler.ts'))).toBe(true);
  });

  it('parses every import form', () => {
    const text = [
      "import { a } from './a.js';",
      "import type { B } from '../core/b.js';",
      "export { c } from './c.js';",
      "export * from './d.js';",
      "const e = await import('./e.js');",
      "import './f.js';",
      "// import { no } from './commented.js';",
      "/* import('./commented2.js') */",
      "import { x } from 'node:fs';",
    ].join('\n');
    expect(importsOf('http/z.ts', text)).toEqual(['http/a.ts', 'core/b.ts', 'http/c.ts', 'http/d.ts', 'http/e.ts', 'http/f.ts']);
  });
});
