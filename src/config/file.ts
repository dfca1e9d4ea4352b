/**
 * The JSON config file (`--config`, QUICKSILVER_CONFIG): JSON values are turned into directives
 * and applied with the directive handlers, plus the server-level keys only the file accepts.
 */
import { readFileSync } from 'node:fs';
import { dirname, extname, resolve as resolvePath } from 'node:path';
import { type Ctx, errorMessage, type Layer, type SimpleKey, suggest, type Val } from './settings.js';
import { apply } from './values.js';
import { applyDirectives, type Directive, HUB_DIRECTIVES } from './directives.js';

/** Server-level settings accepted in the JSON config file only. */
const FILE_SERVER_KEYS: Record<string, SimpleKey> = {
  addr: 'addr',
  cert_file: 'certFile',
  key_file: 'keyFile',
  h2c: 'h2c',
  trust_proxy: 'trustProxy',
  read_timeout: 'readTimeout',
  read_header_timeout: 'readHeaderTimeout',
  shutdown_timeout: 'shutdownTimeout',
  log_level: 'logLevel',
  log_format: 'logFormat',
  metrics: 'metrics',
  tracing: 'tracing',
  workers: 'workers',
  worker_header: 'workerHeader',
  public_url: 'publicUrl',
};

function jsonArgs(v: unknown, label: string, ctx: Ctx): string[] | undefined {
  if (typeof v === 'string') return [v];
  if (typeof v === 'number' || typeof v === 'boolean') return [String(v)];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string' || typeof x === 'number')) return v.map(String);
  ctx.errors.push(`${label}: expected a string, number, boolean or list of strings`);
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], label: string, ctx: Ctx): boolean {
  let ok = true;
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) {
      ctx.errors.push(`${label}: unknown key '${k}'${suggest(k, allowed)}; expected ${allowed.join(', ')}`);
      ok = false;
    }
  }
  return ok;
}

/** `{"key": "...", "alg": "RS256", "jwks_url": "..."}` → a role block (`jwt` / `jwks_uri` lines). */
function jsonRole(v: unknown, label: string, ctx: Ctx, line: number): Directive[] | undefined {
  if (typeof v === 'string') return [{ name: 'jwt', args: [v], line }];
  if (!isObject(v) || !checkKeys(v, ['key', 'alg', 'jwks_url', 'jwks_uri'], label, ctx)) {
    if (!isObject(v)) ctx.errors.push(`${label}: expected a key string or {"key", "alg"} / {"jwks_url"}`);
    return undefined;
  }
  const out: Directive[] = [];
  if (v.key !== undefined && v.key !== null) {
    if (typeof v.key !== 'string' || (v.alg !== undefined && typeof v.alg !== 'string')) {
      ctx.errors.push(`${label}: key and alg must be strings`);
      return undefined;
    }
    out.push({ name: 'jwt', args: typeof v.alg === 'string' ? [v.key, v.alg] : [v.key], line });
  } else if (v.alg !== undefined) {
    ctx.errors.push(`${label}: alg given without key`);
    return undefined;
  }
  const jwks = v.jwks_url ?? v.jwks_uri;
  if (jwks !== undefined && jwks !== null) {
    if (typeof jwks !== 'string') {
      ctx.errors.push(`${label}: jwks_url must be a string`);
      return undefined;
    }
    out.push({ name: 'jwks_uri', args: [jwks], line });
  }
  return out;
}

function jsonToDirective(key: string, v: unknown, label: string, ctx: Ctx): Directive[] | undefined {
  const line = 0;
  if (key === 'publisher_jwt' || key === 'subscriber_jwt') {
    if (typeof v === 'string') return [{ name: key, args: [v], line }];
    if (!isObject(v) || !checkKeys(v, ['key', 'alg'], label, ctx)) {
      if (!isObject(v)) ctx.errors.push(`${label}: expected a key string or {"key": "...", "alg": "HS256"}`);
      return undefined;
    }
    if (typeof v.key !== 'string' || (v.alg !== undefined && typeof v.alg !== 'string')) {
      ctx.errors.push(`${label}: expected {"key": "...", "alg": "HS256"} with string values`);
      return undefined;
    }
    return [{ name: key, args: typeof v.alg === 'string' ? [v.key, v.alg] : [v.key], line }];
  }
  if (key === 'transport') {
    if (typeof v === 'string') return [{ name: key, args: [v], line }];
    if (!isObject(v) || typeof (v.name ?? v.type) !== 'string') {
      ctx.errors.push(`${label}: expected a transport name or {"name": "bolt", "path": "...", ...}`);
      return undefined;
    }
    const block: Directive[] = [];
    for (const [k, x] of Object.entries(v)) {
      if (k === 'name' || k === 'type' || x === null) continue;
      const args = jsonArgs(x, `${label}.${k}`, ctx);
      if (!args) return undefined;
      block.push({ name: k, args, line });
    }
    return [{ name: key, args: [String(v.name ?? v.type)], block, line }];
  }
  if (key === 'webhooks' && (Array.isArray(v) || isObject(v))) return jsonWebhooks(v, label, ctx);
  if (key === 'issuer' || key === 'issuers') {
    const list = Array.isArray(v) ? v : [v];
    const out: Directive[] = [];
    for (const [i, item] of list.entries()) {
      const itemLabel = Array.isArray(v) ? `${label}[${i}]` : label;
      if (!isObject(item) || !checkKeys(item, ['issuer', 'authorization_server', 'publisher', 'subscriber'], itemLabel, ctx)) {
        if (!isObject(item)) ctx.errors.push(`${itemLabel}: expected {"issuer": "...", "publisher": {...}, "subscriber": {...}}`);
        continue;
      }
      if (typeof item.issuer !== 'string') {
        ctx.errors.push(`${itemLabel}: missing "issuer"`);
        continue;
      }
      const block: Directive[] = [];
      if (item.authorization_server === true) block.push({ name: 'authorization_server', args: [], line });
      for (const role of ['publisher', 'subscriber'] as const) {
        if (item[role] === undefined || item[role] === null) continue;
        const roleBlock = jsonRole(item[role], `${itemLabel}.${role}`, ctx, line);
        if (roleBlock) block.push({ name: role, args: [], block: roleBlock, line });
      }
      out.push({ name: 'issuer', args: [item.issuer], block, line });
    }
    return out;
  }
  const args = jsonArgs(v, label, ctx);
  return args && [{ name: key, args, line }];
}

/**
 * `"webhooks": [{"name", "url", "topic": [...], "match": ..., "token", "secret", "batch"}]` (or one
 * object) → `webhook <name> { … }` blocks; `"webhooks": true` alone only turns them on.
 */
function jsonWebhooks(v: unknown[] | Record<string, unknown>, label: string, ctx: Ctx): Directive[] {
  const list = Array.isArray(v) ? v : [v];
  const out: Directive[] = [{ name: 'webhooks', args: ['true'], line: 0 }];
  for (const [i, item] of list.entries()) {
    const itemLabel = Array.isArray(v) ? `${label}[${i}]` : label;
    const keys = ['name', 'url', 'topic', 'match', 'match_exact', 'match_urlpattern', 'token', 'secret', 'batch'];
    if (!isObject(item) || !checkKeys(item, keys, itemLabel, ctx)) {
      if (!isObject(item)) ctx.errors.push(`${itemLabel}: expected {"name": "...", "url": "...", "topic": [...], "secret": "..."}`);
      continue;
    }
    if (typeof item.name !== 'string') {
      ctx.errors.push(`${itemLabel}: missing "name"`);
      continue;
    }
    const block: Directive[] = [];
    for (const k of keys.slice(1)) {
      if (item[k] === undefined || item[k] === null) continue;
      const args = jsonArgs(item[k], `${itemLabel}.${k}`, ctx);
      if (args) block.push({ name: k, args, line: 0 });
    }
    out.push({ name: 'webhook', args: [item.name], block, line: 0 });
  }
  return out;
}

export function loadConfigFile(path: Val<string>, ctx: Ctx): Layer {
  const layer: Layer = {};
  const file = resolvePath(path.dir, path.value);
  const ext = extname(file).toLowerCase();
  if (ext !== '.json') {
    ctx.errors.push(`${path.source}: unsupported config file '${path.value}'; only JSON (.json) files are supported`);
    return layer;
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    ctx.errors.push(`${path.source}: cannot read config file '${path.value}': ${errorMessage(e)}`);
    return layer;
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    ctx.errors.push(`${path.value}: invalid JSON: ${errorMessage(e)}`);
    return layer;
  }
  if (!isObject(data)) {
    ctx.errors.push(`${path.value}: expected a JSON object`);
    return layer;
  }
  const dir = dirname(file);
  const known = [...Object.keys(HUB_DIRECTIVES), 'issuers', ...Object.keys(FILE_SERVER_KEYS)];
  for (const [key, value] of Object.entries(data)) {
    if (key === '$schema' || value === null) continue;
    const label = `${path.value} (${key})`;
    const serverKey = FILE_SERVER_KEYS[key];
    if (serverKey) {
      const args = jsonArgs(value, label, ctx);
      if (args) apply(layer, serverKey, args, label, ctx, dir);
      continue;
    }
    if (!HUB_DIRECTIVES[key] && key !== 'issuers') {
      ctx.errors.push(`${path.value}: unknown key '${key}'${suggest(key, known)}`);
      continue;
    }
    const directives = jsonToDirective(key, value, label, ctx);
    if (directives) applyDirectives(directives, () => label, layer, ctx, dir);
  }
  return layer;
}
