/**
 * Configuration loading: environment variables, command-line flags and an optional JSON config
 * file become one validated {@link Config}, or a list of problems (one clear line each, naming the
 * setting the way the user wrote it).
 *
 * Precedence, lowest to highest:
 *
 *   built-in defaults < `--dev` profile < config file < environment < command-line flags
 *
 * Inside the environment: legacy names (`JWT_KEY`, `ADDR`, ...) < official-image names
 * (`MERCURE_PUBLISHER_JWT_KEY`, `SERVER_NAME`, ...) < `MERCURE_EXTRA_DIRECTIVES` (as in the
 * official Caddyfile, where the extra directives come last and win). Inside one source, a
 * role-specific key (`PUBLISHER_JWT_KEY`, `--publisher-jwt-key`) wins over the both-roles one
 * (`JWT_KEY`, `--jwt-key`). List flags (`--cors-origins`, ...) may be repeated and accumulate;
 * any other setting given twice at the same level keeps the last value.
 *
 * The module is pure: the environment and the arguments are parameters, and the only I/O is
 * reading the config file, key files (`@/path`) and checking that TLS files are readable.
 */
import { parseDuration } from '../util/duration.js';
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { dirname, extname, resolve as resolvePath } from 'node:path';
import { JWT_ALGORITHMS, type HubOptions, type IssuerOptions, type JwtAlgorithm, type KeyOptions } from '../http/options.js';
import type { LogLevel } from '../observability/logger.js';
import { defaultWorkerCount } from './cpus.js';

// ---------------------------------------------------------------------------------------------
// Public types and constants
// ---------------------------------------------------------------------------------------------

/** The well-known development key of the reference hub's official image (HS256). Never use it in production. */
export const DEV_KEY = '!ChangeThisMercureHubJWTSecretKey!';

/**
 * The embedded, persistent store in `./.quicksilver/` (relative to the working directory), with
 * bounded history: 100 000 updates and 7 days, whichever is reached first.
 */
export const DEFAULT_TRANSPORT_URL = 'lmdb://./.quicksilver/hub.lmdb';

export type LogFormat = 'json' | 'pretty';

export interface ServerConfig {
  /**
   * Listen address: `host:port`, `:port` (all interfaces) or `[ipv6]:port`; port 0 picks a free
   * port. Default `:3000`, or `localhost:3000` with `--dev`. Use {@link parseAddr} to split it.
   */
  addr: string;
  /** PEM certificate chain (absolute path). With `keyFile`: HTTPS + HTTP/2 (ALPN h2, http/1.1). */
  certFile?: string;
  /** PEM private key of `certFile` (absolute path). */
  keyFile?: string;
  /** Cleartext HTTP/2 (prior knowledge) alongside HTTP/1.1. Ignored (false) with TLS. Default false. */
  h2c: boolean;
  /** Trust `X-Forwarded-*` / `Forwarded` headers from the proxy in front. Default false. */
  trustProxy: boolean;
  /** Longest time to receive a whole request, in ms (legacy `READ_TIMEOUT`). Default: server's choice. */
  readTimeout?: number;
  /** Longest time to receive the request headers, in ms. Default: server's choice. */
  readHeaderTimeout?: number;
  /** How long to drain connections on SIGTERM/SIGINT before closing them, in ms. Default 10 000. */
  shutdownTimeout: number;
}

export interface Config {
  /** Hub options, ready for the hub (add a `transport` built from `transportUrl` and a `logger`). */
  hub: Omit<HubOptions, 'transport' | 'logger'>;
  /**
   * Transport URL. Default {@link DEFAULT_TRANSPORT_URL} (embedded LMDB store). Legacy `null` and `local://...` map to `memory://`;
   * `bolt://...` and other schemes are kept as given (the transport factory validates them).
   */
  transportUrl: string;
  server: ServerConfig;
  /** Default `info`; `debug` with `DEBUG=1`, `GLOBAL_OPTIONS=debug` or `--debug`. */
  logLevel: LogLevel;
  /** Default `json`. */
  logFormat: LogFormat;
  /** Prometheus metrics endpoint. Default true. */
  metrics: boolean;
  /** OpenTelemetry spans through `@opentelemetry/api` (an SDK must be registered). Default false. */
  tracing: boolean;
  /** `--dev` was given. */
  dev: boolean;
  /**
   * Worker processes (`--workers n|auto`, directive `workers`, `QUICKSILVER_WORKERS`); undefined
   * when not set, which the CLI takes as one per core ({@link defaultWorkerCount}). 1 = a single
   * process, without a cluster primary.
   */
  workers?: number;
}

export type ConfigResult =
  | { ok: true; config: Config; warnings: string[] }
  | { ok: false; errors: string[] };

export interface ConfigInput {
  /** The environment (e.g. `process.env`). Empty values count as unset. */
  env: Record<string, string | undefined>;
  /** Command-line arguments without the node binary and script (`process.argv.slice(2)`). */
  argv: readonly string[];
  /** Directory relative paths given in the environment or flags are resolved against. */
  cwd?: string;
}

// ---------------------------------------------------------------------------------------------
// Small parsers (exported: the CLI and other modules reuse them)
// ---------------------------------------------------------------------------------------------


export { parseDuration } from '../util/duration.js';

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  ki: 1024, kib: 1024, mi: 1024 ** 2, mib: 1024 ** 2, gi: 1024 ** 3, gib: 1024 ** 3, ti: 1024 ** 4, tib: 1024 ** 4,
};

/**
 * Parses a byte size like Caddy does: a bare integer is bytes; `kB`/`MB`/`GB` are powers of 1000,
 * `KiB`/`MiB`/`GiB` powers of 1024 (case-insensitive, `K`/`M` accepted). Null if invalid or negative.
 */
export function parseSize(value: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  if (!m) return null;
  const unit = SIZE_UNITS[(m[2] as string).toLowerCase()];
  if (unit === undefined) return null;
  const n = Math.floor(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : null;
}

const PORT_NAMES: Record<string, number> = { http: 80, https: 443 };

/**
 * Splits a listen address: `:3000`, `localhost:3000`, `0.0.0.0:80`, `[::1]:3000`, `:http`, or a
 * bare port `3000`. The host is undefined for "all interfaces". Null if invalid.
 */
export function parseAddr(addr: string): { host: string | undefined; port: number } | null {
  const s = addr.trim();
  let host: string | undefined;
  let portText: string;
  if (/^\d+$/.test(s)) {
    portText = s;
  } else {
    const m = /^(?:\[([0-9a-fA-F:.%\w]+)\]|([A-Za-z0-9._-]*)):([A-Za-z0-9]+)$/.exec(s);
    if (!m) return null;
    host = m[1] ?? (m[2] === '' ? undefined : m[2]);
    portText = m[3] as string;
  }
  const port = /^\d+$/.test(portText) ? Number(portText) : PORT_NAMES[portText.toLowerCase()];
  if (port === undefined || port > 65_535) return null;
  return { host, port };
}

/** Booleans as written in environments: 1/0, true/false, yes/no, on/off (any case). */
export function parseBool(value: string): boolean | undefined {
  const s = value.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on', 'y', 't'].includes(s)) return true;
  if (['0', 'false', 'no', 'off', 'n', 'f'].includes(s)) return false;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Internal model: every source fills a Layer of settings; layers are merged by precedence.
// ---------------------------------------------------------------------------------------------

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const WELL_KNOWN_KEYS = [DEV_KEY, '!ChangeMe!'];

interface RawKey {
  key?: Val<string>;
  alg?: Val<JwtAlgorithm>;
  jwksUrl?: Val<string>;
}

interface RawIssuer {
  issuer: string;
  authorizationServer: boolean;
  publisher?: RawKey;
  subscriber?: RawKey;
  source: string;
}

interface Settings {
  publisherKey: string;
  publisherAlg: JwtAlgorithm;
  publisherJwksUrl: string;
  subscriberKey: string;
  subscriberAlg: JwtAlgorithm;
  subscriberJwksUrl: string;
  issuers: RawIssuer[];
  trustedIssuers: string[];
  resourceIdentifier: string;
  anonymous: boolean;
  corsOrigins: string[];
  publishOrigins: string[];
  cookieName: string;
  subscriptions: boolean;
  heartbeat: number;
  writeTimeout: number;
  dispatchTimeout: number;
  transportUrl: string;
  historySize: number;
  ui: boolean;
  demo: boolean;
  maxBodySize: number;
  publicUrl: string;
  subscriberBufferSize: number;
  maxTopics: number;
  maxConnectionsPerIp: number;
  maxConnections: number;
  publishRateLimit: number;
  publishBurst: number;
  tokenCacheSize: number;
  addr: string;
  certFile: string;
  keyFile: string;
  h2c: boolean;
  trustProxy: boolean;
  readTimeout: number;
  readHeaderTimeout: number;
  shutdownTimeout: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  metrics: boolean;
  tracing: boolean;
  workers: number;
}

type SettingKey = keyof Settings;
type SimpleKey = Exclude<SettingKey, 'issuers'>;

/** A value with where it came from (for error lines) and the directory relative paths resolve against. */
interface Val<T> {
  value: T;
  source: string;
  dir: string;
  /** `addr` from a SERVER_NAME host name: only usable with TLS configured. */
  needsTls?: boolean;
  raw?: string;
}

type Layer = { [K in SettingKey]?: Val<Settings[K]> };

interface Ctx {
  errors: string[];
  warnings: string[];
  env: Record<string, string | undefined>;
  cwd: string;
}

function put<K extends SettingKey>(layer: Layer, key: K, value: Settings[K] | undefined, source: string, dir: string, extra?: Partial<Val<unknown>>): void {
  if (value === undefined) return;
  (layer as Record<string, Val<unknown>>)[key] = { ...extra, value, source, dir };
}

function errorMessage(e: unknown): string {
  if (e && typeof e === 'object' && 'code' in e && typeof (e as { code: unknown }).code === 'string') {
    const code = (e as { code: string }).code;
    if (code === 'ENOENT') return 'no such file';
    if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
    if (code === 'EISDIR') return 'is a directory';
    return code;
  }
  return e instanceof Error ? e.message : String(e);
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0] as number;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j] as number;
      d[j] = Math.min((d[j] as number) + 1, (d[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length] as number;
}

function suggest(name: string, candidates: Iterable<string>, prefix = ''): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const c of candidates) {
    const dist = levenshtein(name, c);
    if (dist < bestDistance) { best = c; bestDistance = dist; }
  }
  return best === undefined ? '' : `; did you mean '${prefix}${best}'?`;
}

function splitList(args: readonly string[]): string[] {
  return args.flatMap((a) => a.split(/[\s,]+/)).filter((s) => s !== '');
}

// ---------------------------------------------------------------------------------------------
// Value parsers, one per setting. Each takes the arguments as written and reports its own errors.
// ---------------------------------------------------------------------------------------------

type Parser<T> = (args: readonly string[], src: string, ctx: Ctx) => T | undefined;

function single(args: readonly string[], src: string, ctx: Ctx): string | undefined {
  if (args.length === 1 && (args[0] as string).trim() !== '') return args[0] as string;
  ctx.errors.push(args.length > 1 ? `${src}: expected one value, got ${args.length}` : `${src}: missing value`);
  return undefined;
}

function parseAlgorithm(value: string): JwtAlgorithm | undefined {
  const s = value.trim();
  return JWT_ALGORITHMS.find((a) => a === s) ?? JWT_ALGORITHMS.find((a) => a.toLowerCase() === s.toLowerCase());
}

const keyP: Parser<string> = (args, src, ctx) => single(args, src, ctx);

const algP: Parser<JwtAlgorithm> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  const alg = parseAlgorithm(v);
  if (!alg) ctx.errors.push(`${src}: unknown algorithm '${v}'; expected one of ${JWT_ALGORITHMS.join(', ')}`);
  return alg;
};

const boolP: Parser<boolean> = (args, src, ctx) => {
  if (args.length === 0) return true;
  if (args.length > 1) {
    ctx.errors.push(`${src}: expected at most one value (true or false), got ${args.length}`);
    return undefined;
  }
  const b = parseBool(args[0] as string);
  if (b === undefined) ctx.errors.push(`${src}: invalid boolean '${args[0]}'; expected 1/0, true/false, yes/no or on/off`);
  return b;
};

const durationP: Parser<number> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  const ms = parseDuration(v);
  if (ms === null) {
    ctx.errors.push(v.trim().startsWith('-')
      ? `${src}: invalid duration '${v}': must not be negative (use 0s to disable)`
      : `${src}: invalid duration '${v}'; expected e.g. 40s, 1m30s, 500ms, or 0s to disable`);
    return undefined;
  }
  return ms;
};

const sizeP: Parser<number> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  const n = parseSize(v);
  if (n === null) {
    ctx.errors.push(v.trim().startsWith('-')
      ? `${src}: invalid size '${v}': must not be negative`
      : `${src}: invalid size '${v}'; expected bytes or a unit, e.g. 1048576, 512kB, 1MiB`);
    return undefined;
  }
  return n;
};

function intP(min: number): Parser<number> {
  return (args, src, ctx) => {
    const v = single(args, src, ctx);
    if (v === undefined) return undefined;
    const s = v.trim();
    if (/^-\d+$/.test(s) && min >= 0) {
      ctx.errors.push(`${src}: invalid number '${v}': must not be negative`);
      return undefined;
    }
    if (!/^\d+$/.test(s) || !Number.isSafeInteger(Number(s)) || Number(s) < min) {
      ctx.errors.push(`${src}: invalid number '${v}'; expected an integer ≥ ${min}`);
      return undefined;
    }
    return Number(s);
  };
}

const workersP: Parser<number> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  if (v.trim().toLowerCase() === 'auto') return defaultWorkerCount();
  return intP(1)([v], src, ctx);
};

const stringP: Parser<string> = (args, src, ctx) => single(args, src, ctx);

const cookieNameP: Parser<string> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(v)) {
    ctx.errors.push(`${src}: invalid cookie name '${v}'; use letters, digits and !#$%&'*+-.^_\`|~ only`);
    return undefined;
  }
  return v;
};

function urlP(schemes: readonly string[] | undefined, what: string): Parser<string> {
  return (args, src, ctx) => {
    const v = single(args, src, ctx);
    if (v === undefined) return undefined;
    let u: URL;
    try {
      u = new URL(v.trim());
    } catch {
      ctx.errors.push(`${src}: invalid ${what} '${v}'; expected an absolute URL${schemes ? ` (${schemes.map((s) => `${s}//`).join(', ')})` : ''}`);
      return undefined;
    }
    if (schemes && !schemes.includes(u.protocol)) {
      ctx.errors.push(`${src}: invalid ${what} '${v}'; expected ${schemes.map((s) => `${s}//`).join(', ')}`);
      return undefined;
    }
    return v.trim();
  };
}

const jwksP = urlP(['https:', 'http:', 'file:'], 'JWKS URL');
const resourceIdP = urlP(undefined, 'resource identifier');
const publicUrlP = urlP(['https:', 'http:'], 'public URL');

const listP: Parser<string[]> = (args, src, ctx) => {
  const list = splitList(args);
  if (list.length === 0) ctx.errors.push(`${src}: missing value`);
  return list.length === 0 ? undefined : list;
};

/**
 * Checks one origin: `*`, `null` or `scheme://host[:port]` (one `*` in the host only when
 * `wildcard`). Returns the normalised origin (lower-case, default port dropped) or an error text.
 */
function checkOrigin(o: string, wildcard: boolean): { origin: string } | { error: string } {
  if (o === '*' || o === 'null') return { origin: o };
  const expected = wildcard
    ? "expected scheme://host[:port] (one '*' allowed in the host, e.g. https://*.example.com), '*' or 'null'"
    : "expected scheme://host[:port], '*' or 'null'";
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/s.exec(o);
  if (!m) return { error: `invalid origin '${o}'; ${expected}` };
  const scheme = (m[1] as string).toLowerCase();
  const hostPort = m[2] as string;
  const rest = m[3] as string;
  if (rest === '/') return { error: `invalid origin '${o}': an origin has no trailing slash; use '${scheme}://${hostPort}'` };
  if (rest !== '') return { error: `invalid origin '${o}': an origin has no path, query or fragment; use '${scheme}://${hostPort}'` };
  if (hostPort.includes('@')) return { error: `invalid origin '${o}': an origin has no user name or password` };
  const hp = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._*-]+)(?::(\d{1,5}))?$/.exec(hostPort);
  if (!hp) return { error: `invalid origin '${o}'; ${expected}` };
  const host = (hp[1] as string).toLowerCase();
  const port = hp[2];
  if (port !== undefined && Number(port) > 65_535) return { error: `invalid origin '${o}': invalid port ${port}` };
  const stars = host.split('*').length - 1;
  if (stars > 0 && !wildcard) return { error: `invalid origin '${o}': wildcards are only allowed in publish origins; use '*' to allow any origin` };
  if (stars > 1) return { error: `invalid origin '${o}': at most one '*' is allowed` };
  const defaultPort = (scheme === 'https' && port === '443') || (scheme === 'http' && port === '80');
  return { origin: `${scheme}://${host}${port !== undefined && !defaultPort ? `:${port}` : ''}` };
}

function originsP(wildcard: boolean): Parser<string[]> {
  return (args, src, ctx) => {
    const list = splitList(args);
    if (list.length === 0) {
      ctx.errors.push(`${src}: expected at least one origin`);
      return undefined;
    }
    const out: string[] = [];
    let bad = false;
    for (const o of list) {
      const r = checkOrigin(o, wildcard);
      if ('error' in r) { ctx.errors.push(`${src}: ${r.error}`); bad = true; } else if (!out.includes(r.origin)) out.push(r.origin);
    }
    return bad ? undefined : out;
  };
}

const transportUrlP: Parser<string> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  const s = v.trim();
  if (s.toLowerCase() === 'null' || /^local:/i.test(s)) return 'memory://';
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    ctx.errors.push(`${src}: invalid transport URL '${v}'; expected a URL such as memory:// or bolt://updates.db`);
    return undefined;
  }
  const size = u.searchParams.get('size');
  if (size !== null && !/^\d+$/.test(size)) {
    ctx.errors.push(`${src}: invalid transport URL '${v}': size must be a non-negative integer, got '${size}'`);
    return undefined;
  }
  return s;
};

const addrP: Parser<string> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  const a = parseAddr(v);
  if (!a) {
    ctx.errors.push(`${src}: invalid address '${v}'; expected host:port, :port or [ipv6]:port`);
    return undefined;
  }
  const host = a.host === undefined ? '' : a.host.includes(':') ? `[${a.host}]` : a.host;
  return `${host}:${a.port}`;
};

const logLevelP: Parser<LogLevel> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  const s = v.trim().toLowerCase();
  const level = LOG_LEVELS.find((l) => l === s) ?? (s === 'warning' ? 'warn' : undefined);
  if (!level) ctx.errors.push(`${src}: unknown log level '${v}'; expected one of ${LOG_LEVELS.join(', ')}`);
  return level;
};

const logFormatP: Parser<LogFormat> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  const s = v.trim().toLowerCase();
  if (s === 'json') return 'json';
  if (s === 'pretty' || s === 'text' || s === 'console') return 'pretty';
  if (s === 'fluentd') {
    ctx.warnings.push(`${src}: the FLUENTD log format is not supported; using json`);
    return 'json';
  }
  ctx.errors.push(`${src}: unknown log format '${v}'; expected json or pretty`);
  return undefined;
};

const PARSERS: { [K in SimpleKey]: Parser<Settings[K]> } = {
  publisherKey: keyP,
  publisherAlg: algP,
  publisherJwksUrl: jwksP,
  subscriberKey: keyP,
  subscriberAlg: algP,
  subscriberJwksUrl: jwksP,
  trustedIssuers: listP,
  resourceIdentifier: resourceIdP,
  anonymous: boolP,
  corsOrigins: originsP(false),
  publishOrigins: originsP(true),
  cookieName: cookieNameP,
  subscriptions: boolP,
  heartbeat: durationP,
  writeTimeout: durationP,
  dispatchTimeout: durationP,
  transportUrl: transportUrlP,
  historySize: intP(0),
  ui: boolP,
  demo: boolP,
  maxBodySize: sizeP,
  publicUrl: publicUrlP,
  subscriberBufferSize: intP(1),
  maxTopics: intP(1),
  maxConnectionsPerIp: intP(0),
  maxConnections: intP(0),
  publishRateLimit: intP(0),
  publishBurst: intP(0),
  tokenCacheSize: intP(0),
  addr: addrP,
  certFile: stringP,
  keyFile: stringP,
  h2c: boolP,
  trustProxy: boolP,
  readTimeout: durationP,
  readHeaderTimeout: durationP,
  shutdownTimeout: durationP,
  logLevel: logLevelP,
  logFormat: logFormatP,
  metrics: boolP,
  tracing: boolP,
  workers: workersP,
};

function apply<K extends SimpleKey>(layer: Layer, key: K, args: readonly string[], src: string, ctx: Ctx, dir: string): void {
  const parser = PARSERS[key] as Parser<Settings[K]>;
  put(layer, key, parser(args, src, ctx), src, dir);
}

// ---------------------------------------------------------------------------------------------
// Caddyfile-style directives (MERCURE_EXTRA_DIRECTIVES, GLOBAL_OPTIONS) and their handlers,
// shared with the JSON config file (same names).
// ---------------------------------------------------------------------------------------------

interface Directive {
  name: string;
  args: string[];
  block?: Directive[];
  line: number;
}

/** `nl`: a line break (outside quotes) separates this token from the previous one. */
interface Token { text: string; line: number; quoted: boolean; nl: boolean }

function substitutePlaceholders(text: string, env: Record<string, string | undefined>): string {
  return text
    .replace(/\{\$([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}/g, (_, name: string, def?: string) => env[name] || def || '')
    .replace(/\{env\.([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => env[name] ?? '');
}

/**
 * Lexes and parses Caddyfile-style directives: one per line, arguments separated by blanks,
 * "double" or `backtick` quotes, `# comments`, `name args {` ... `}` blocks, `{$VAR}`,
 * `{$VAR:default}` and `{env.VAR}` placeholders. A literal two-character `\n` outside quotes is a
 * line break (for .env files that cannot hold real newlines).
 */
export function parseDirectives(text: string, env: Record<string, string | undefined> = {}): { directives: Directive[]; errors: string[] } {
  const tokens: Token[] = [];
  const errors: string[] = [];
  let line = 1;
  let i = 0;
  let nl = true;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === '\n') { line++; i++; nl = true; continue; }
    if (c === '\\' && text[i + 1] === 'n') { line++; i += 2; nl = true; continue; }
    if (/\s/.test(c)) { i++; continue; }
    if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
      continue;
    }
    if (c === '"' || c === '`') {
      const start = line;
      let out = '';
      i++;
      while (i < text.length && text[i] !== c) {
        if (c === '"' && text[i] === '\\' && (text[i + 1] === '"' || text[i + 1] === '\\')) { out += text[i + 1]; i += 2; continue; }
        if (text[i] === '\n') line++;
        out += text[i];
        i++;
      }
      if (i >= text.length) errors.push(`line ${start}: unterminated quoted string`);
      i++;
      tokens.push({ text: substitutePlaceholders(out, env), line: start, quoted: true, nl });
      nl = false;
      continue;
    }
    let word = '';
    while (i < text.length && !/\s/.test(text[i] as string) && !(text[i] === '\\' && text[i + 1] === 'n')) {
      word += text[i];
      i++;
    }
    tokens.push({ text: word === '{' || word === '}' ? word : substitutePlaceholders(word, env), line, quoted: false, nl });
    nl = false;
  }

  let pos = 0;
  const isOpen = (t: Token | undefined): boolean => t !== undefined && !t.quoted && t.text === '{';
  const isClose = (t: Token | undefined): boolean => t !== undefined && !t.quoted && t.text === '}';
  const parseBlock = (depth: number): Directive[] => {
    const out: Directive[] = [];
    while (pos < tokens.length) {
      const t = tokens[pos] as Token;
      if (isClose(t)) {
        if (depth > 0) return out;
        errors.push(`line ${t.line}: unexpected '}'`);
        pos++;
        continue;
      }
      if (isOpen(t)) {
        errors.push(`line ${t.line}: unexpected '{'`);
        pos++;
        continue;
      }
      const d: Directive = { name: t.text, args: [], line: t.line };
      pos++;
      while (pos < tokens.length && !(tokens[pos] as Token).nl && !isOpen(tokens[pos]) && !isClose(tokens[pos])) {
        d.args.push((tokens[pos] as Token).text);
        pos++;
      }
      if (isOpen(tokens[pos]) && !(tokens[pos] as Token).nl) {
        pos++;
        d.block = parseBlock(depth + 1);
        if (isClose(tokens[pos])) pos++;
        else errors.push(`line ${t.line}: missing '}' closing the '${d.name}' block`);
      }
      out.push(d);
    }
    return out;
  };
  const directives = parseBlock(0);
  return { directives, errors };
}

type Handler = (d: Directive, label: string, layer: Layer, ctx: Ctx, dir: string) => void;

function noBlock(d: Directive, label: string, ctx: Ctx): boolean {
  if (d.block) { ctx.errors.push(`${label}: does not take a block`); return false; }
  return true;
}

function simple(key: SimpleKey): Handler {
  return (d, label, layer, ctx, dir) => {
    if (noBlock(d, label, ctx)) apply(layer, key, d.args, label, ctx, dir);
  };
}

/** `publisher_jwt <key> [alg]`: the algorithm defaults to HS256 when omitted, as in the reference. */
function jwtHandler(role: 'publisher' | 'subscriber'): Handler {
  return (d, label, layer, ctx, dir) => {
    if (!noBlock(d, label, ctx)) return;
    if (d.args.length < 1 || d.args.length > 2 || (d.args[0] as string).trim() === '') {
      ctx.errors.push(`${label}: expected a key and an optional algorithm`);
      return;
    }
    put(layer, role === 'publisher' ? 'publisherKey' : 'subscriberKey', d.args[0] as string, label, dir);
    const alg = d.args.length === 2 ? algP([d.args[1] as string], label, ctx) : 'HS256';
    put(layer, role === 'publisher' ? 'publisherAlg' : 'subscriberAlg', alg, label, dir);
  };
}

function ignored(hint: string): Handler {
  return (_d, label, _layer, ctx) => {
    ctx.warnings.push(`${label}: not supported by Quicksilver; ignored${hint ? ` (${hint})` : ''}`);
  };
}

/**
 * `transport local` → `memory://`; `transport bolt { path p; size n; ... }` → `bolt://p?size=n&...`
 * (path default `mercure.db`); another name → `<name>://<path>?<options>`, or its `url` option
 * with the other options appended.
 */
const transportHandler: Handler = (d, label, layer, ctx, dir) => {
  if (d.args.length !== 1) {
    ctx.errors.push(`${label}: expected a transport name (local, bolt, ...)`);
    return;
  }
  const name = (d.args[0] as string).toLowerCase();
  const options = new URLSearchParams();
  let path: string | undefined;
  let url: string | undefined;
  for (const sub of d.block ?? []) {
    if (sub.args.length !== 1 || sub.block) {
      ctx.errors.push(`${label}: '${sub.name}' expects one value`);
      continue;
    }
    if (sub.name === 'path') path = sub.args[0];
    else if (sub.name === 'url') url = sub.args[0];
    else options.append(sub.name, sub.args[0] as string);
  }
  let result: string;
  if (name === 'local' || name === 'memory') {
    result = `memory://${options.size ? `?${options}` : ''}`;
  } else {
    const base = url ?? `${name}://${path ?? (name === 'bolt' ? 'mercure.db' : '')}`;
    result = options.size ? `${base}${base.includes('?') ? '&' : '?'}${options}` : base;
  }
  apply(layer, 'transportUrl', [result], label, ctx, dir);
};

const protocolHandler: Handler = (d, label, _layer, ctx) => {
  if (!noBlock(d, label, ctx)) return;
  if (d.args.length !== 1 || !['7', '8'].includes(d.args[0] as string)) {
    ctx.errors.push(`${label}: expected 7 or 8`);
  }
  // Quicksilver speaks both protocol versions; nothing to switch.
};

const publicUrlsHandler: Handler = (d, label, layer, ctx, dir) => {
  if (!noBlock(d, label, ctx)) return;
  const urls = splitList(d.args);
  if (urls.length === 0) {
    ctx.errors.push(`${label}: missing value`);
    return;
  }
  if (urls.length > 1) ctx.warnings.push(`${label}: only one public URL is supported; using '${urls[0]}'`);
  apply(layer, 'publicUrl', [urls[0] as string], label, ctx, dir);
};

function parseRoleBlock(d: Directive, label: string, ctx: Ctx, dir: string): RawKey | undefined {
  if (d.args.length > 0 || !d.block) {
    ctx.errors.push(`${label}: expected a block with 'jwt <key> [alg]' or 'jwks_uri <url>'`);
    return undefined;
  }
  const raw: RawKey = {};
  for (const sub of d.block) {
    const subLabel = `${label} ${sub.name}`;
    if (sub.name === 'jwt') {
      if (sub.args.length < 1 || sub.args.length > 2) {
        ctx.errors.push(`${subLabel}: expected a key and an optional algorithm`);
        continue;
      }
      raw.key = { value: sub.args[0] as string, source: subLabel, dir };
      const alg = sub.args.length === 2 ? algP([sub.args[1] as string], subLabel, ctx) : 'HS256';
      if (alg) raw.alg = { value: alg, source: subLabel, dir };
    } else if (sub.name === 'jwks_uri' || sub.name === 'jwks_url') {
      const url = jwksP(sub.args, subLabel, ctx);
      if (url) raw.jwksUrl = { value: url, source: subLabel, dir };
    } else {
      ctx.errors.push(`${label}: unknown option '${sub.name}'; expected jwt or jwks_uri`);
    }
  }
  return raw;
}

/** `issuer <iss> { authorization_server; publisher { jwt <key> [alg] | jwks_uri <url> }; subscriber { ... } }` */
const issuerHandler: Handler = (d, label, layer, ctx, dir) => {
  if (d.args.length !== 1 || (d.args[0] as string).trim() === '') {
    ctx.errors.push(`${label}: expected one issuer identifier`);
    return;
  }
  const raw: RawIssuer = { issuer: d.args[0] as string, authorizationServer: false, source: label };
  for (const sub of d.block ?? []) {
    if (sub.name === 'authorization_server') raw.authorizationServer = sub.args.length === 0 || parseBool(sub.args[0] as string) === true;
    else if (sub.name === 'publisher' || sub.name === 'subscriber') {
      const k = parseRoleBlock(sub, `${label} ${sub.name}`, ctx, dir);
      if (k) raw[sub.name] = k;
    } else ctx.errors.push(`${label}: unknown option '${sub.name}'; expected authorization_server, publisher or subscriber`);
  }
  const existing = layer.issuers?.value ?? [];
  put(layer, 'issuers', [...existing.filter((i) => i.issuer !== raw.issuer), raw], label, dir);
};

/** Directives of the reference `mercure { }` block (plus a few of ours); also JSON config file keys. */
const HUB_DIRECTIVES: Record<string, Handler> = {
  publisher_jwt: jwtHandler('publisher'),
  subscriber_jwt: jwtHandler('subscriber'),
  publisher_jwks_url: simple('publisherJwksUrl'),
  subscriber_jwks_url: simple('subscriberJwksUrl'),
  anonymous: simple('anonymous'),
  publish_origins: simple('publishOrigins'),
  cors_origins: simple('corsOrigins'),
  cookie_name: simple('cookieName'),
  subscriptions: simple('subscriptions'),
  heartbeat: simple('heartbeat'),
  write_timeout: simple('writeTimeout'),
  dispatch_timeout: simple('dispatchTimeout'),
  transport: transportHandler,
  transport_url: simple('transportUrl'),
  ui: simple('ui'),
  demo: simple('demo'),
  debugger: simple('ui'),
  playground: simple('demo'),
  max_request_body_size: simple('maxBodySize'),
  resource_identifier: simple('resourceIdentifier'),
  trusted_issuers: simple('trustedIssuers'),
  issuer: issuerHandler,
  public_urls: publicUrlsHandler,
  protocol_version_compatibility: protocolHandler,
  topic_selector_cache: ignored('the matcher cache is managed internally'),
  topic_matcher_cache: ignored('the matcher cache is managed internally'),
  subscriber_list_cache_size: ignored(''),
  name: ignored(''),
  subscriber_buffer_size: simple('subscriberBufferSize'),
  max_topics: simple('maxTopics'),
  max_connections_per_ip: simple('maxConnectionsPerIp'),
  max_connections: simple('maxConnections'),
  publish_rate_limit: simple('publishRateLimit'),
  publish_burst: simple('publishBurst'),
  token_cache_size: simple('tokenCacheSize'),
  workers: simple('workers'),
};

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
  public_url: 'publicUrl',
};

function applyDirectives(directives: Directive[], labelOf: (d: Directive) => string, layer: Layer, ctx: Ctx, dir: string): void {
  for (const d of directives) {
    const handler = HUB_DIRECTIVES[d.name];
    if (!handler) {
      ctx.errors.push(`${labelOf(d)}: unknown directive '${d.name}'${suggest(d.name, Object.keys(HUB_DIRECTIVES))}`);
      continue;
    }
    handler(d, labelOf(d), layer, ctx, dir);
  }
}

// ---------------------------------------------------------------------------------------------
// JSON config file
// ---------------------------------------------------------------------------------------------

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

function loadConfigFile(path: Val<string>, ctx: Ctx): Layer {
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

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

/** Legacy (pre-Caddy) variables, in application order: both-roles names first so specific ones win. */
const LEGACY_ENV: ReadonlyArray<readonly [string, readonly SimpleKey[]]> = [
  ['JWT_KEY', ['publisherKey', 'subscriberKey']],
  ['JWT_ALGORITHM', ['publisherAlg', 'subscriberAlg']],
  ['PUBLISHER_JWT_KEY', ['publisherKey']],
  ['PUBLISHER_JWT_ALGORITHM', ['publisherAlg']],
  ['SUBSCRIBER_JWT_KEY', ['subscriberKey']],
  ['SUBSCRIBER_JWT_ALGORITHM', ['subscriberAlg']],
  ['ADDR', ['addr']],
  ['ALLOW_ANONYMOUS', ['anonymous']],
  ['CORS_ALLOWED_ORIGINS', ['corsOrigins']],
  ['PUBLISH_ALLOWED_ORIGINS', ['publishOrigins']],
  ['HEARTBEAT_INTERVAL', ['heartbeat']],
  ['WRITE_TIMEOUT', ['writeTimeout']],
  ['DISPATCH_TIMEOUT', ['dispatchTimeout']],
  ['READ_TIMEOUT', ['readTimeout']],
  ['READ_HEADER_TIMEOUT', ['readHeaderTimeout']],
  ['DEMO', ['demo']],
  ['DISPATCH_SUBSCRIPTIONS', ['subscriptions']],
  ['SUBSCRIPTIONS', ['subscriptions']],
  ['CERT_FILE', ['certFile']],
  ['KEY_FILE', ['keyFile']],
  ['USE_FORWARDED_HEADERS', ['trustProxy']],
  ['TRANSPORT_URL', ['transportUrl']],
  ['METRICS_ENABLED', ['metrics']],
  ['LOG_FORMAT', ['logFormat']],
  ['HISTORY_SIZE', ['historySize']],
];

/** Quicksilver's own variables (besides QUICKSILVER_CONFIG), at the precedence of the legacy ones. */
const OWN_ENV: ReadonlyArray<readonly [string, readonly SimpleKey[]]> = [
  ['QUICKSILVER_WORKERS', ['workers']],
];

/** Variables of the official image, except SERVER_NAME, GLOBAL_OPTIONS and MERCURE_EXTRA_DIRECTIVES. */
const OFFICIAL_ENV: ReadonlyArray<readonly [string, readonly SimpleKey[]]> = [
  ['MERCURE_PUBLISHER_JWT_KEY', ['publisherKey']],
  ['MERCURE_PUBLISHER_JWT_ALG', ['publisherAlg']],
  ['MERCURE_SUBSCRIBER_JWT_KEY', ['subscriberKey']],
  ['MERCURE_SUBSCRIBER_JWT_ALG', ['subscriberAlg']],
  ['MERCURE_TRANSPORT_URL', ['transportUrl']],
  ['MERCURE_TRUSTED_ISSUERS', ['trustedIssuers']],
];

/** Set but not supported: each gets a warning so a silently ignored setting does not surprise. */
const UNSUPPORTED_ENV: Record<string, string> = {
  ACME_HOSTS: 'automatic HTTPS is not supported; use CERT_FILE and KEY_FILE',
  ACME_CERT_DIR: 'automatic HTTPS is not supported; use CERT_FILE and KEY_FILE',
  ACME_HTTP01_ADDR: 'automatic HTTPS is not supported; use CERT_FILE and KEY_FILE',
  COMPRESS: 'event streams are never compressed',
  METRICS_ADDR: 'metrics are served by the hub itself',
  TCSZ: 'the matcher cache is managed internally',
  DB_PATH: 'use TRANSPORT_URL=bolt://<path>',
  HISTORY_CLEANUP_FREQUENCY: 'use the transport URL options',
  SUBSCRIPTIONS_INCLUDE_IP: 'removed from the reference hub in 0.10',
  CADDY_EXTRA_CONFIG: 'there is no Caddy',
  CADDY_SERVER_EXTRA_DIRECTIVES: 'there is no Caddy',
  CADDY_GLOBAL_OPTIONS: 'there is no Caddy',
};

function envValue(env: Record<string, string | undefined>, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === '' ? undefined : v;
}

function applyEnvTable(table: ReadonlyArray<readonly [string, readonly SimpleKey[]]>, layer: Layer, ctx: Ctx): void {
  for (const [name, keys] of table) {
    const v = envValue(ctx.env, name);
    if (v === undefined) continue;
    for (const key of keys) apply(layer, key, [v], name, ctx, ctx.cwd);
  }
}

interface SiteAddress { addr: string; needsTls: boolean; raw: string }

/**
 * A Caddy site address from SERVER_NAME: `:80` / `:port` and `http://host[:port]` are plain HTTP;
 * `host`, `host:port` (port ≠ 80) and `https://host[:port]` ask for HTTPS (default port 443).
 * Like Caddy, the hub listens on all interfaces: the host name is not a bind address.
 */
function parseSiteAddress(entry: string): SiteAddress | undefined {
  let rest = entry;
  let tls: boolean | undefined;
  let defaultPort = 443;
  if (/^https:\/\//i.test(rest)) { tls = true; rest = rest.slice(8); } else if (/^http:\/\//i.test(rest)) { tls = false; defaultPort = 80; rest = rest.slice(7); }
  rest = rest.replace(/\/.*$/, '');
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._*-]*)(?::(\d+))?$/.exec(rest);
  if (!m || (m[1] === '' && m[2] === undefined)) return undefined;
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (port > 65_535) return undefined;
  if (m[1] === '') tls ??= false;
  tls ??= port !== 80;
  return { addr: `:${port}`, needsTls: tls, raw: entry };
}

function loadEnv(ctx: Ctx): Layer[] {
  const { env } = ctx;
  const legacy: Layer = {};
  applyEnvTable(LEGACY_ENV, legacy, ctx);
  applyEnvTable(OWN_ENV, legacy, ctx);
  const debug = envValue(env, 'DEBUG');
  if (debug !== undefined) {
    const b = boolP([debug], 'DEBUG', ctx);
    if (b) put(legacy, 'logLevel', 'debug', 'DEBUG', ctx.cwd);
  }
  for (const [name, hint] of Object.entries(UNSUPPORTED_ENV)) {
    if (envValue(env, name) !== undefined) ctx.warnings.push(`${name}: not supported by Quicksilver; ignored (${hint})`);
  }

  const official: Layer = {};
  applyEnvTable(OFFICIAL_ENV, official, ctx);
  const serverName = envValue(env, 'SERVER_NAME');
  if (serverName !== undefined) {
    const entries = serverName.split(/[\s,]+/).filter((s) => s !== '');
    const sites: SiteAddress[] = [];
    for (const e of entries) {
      const site = parseSiteAddress(e);
      if (site) sites.push(site);
      else ctx.errors.push(`SERVER_NAME: invalid site address '${e}'; expected e.g. :80, example.com or https://example.com:8443`);
    }
    const chosen = sites.find((s) => !s.needsTls) ?? sites[0];
    if (chosen) {
      if (entries.length > 1) ctx.warnings.push(`SERVER_NAME: only one site address is supported; using '${chosen.raw}'`);
      put(official, 'addr', chosen.addr, 'SERVER_NAME', ctx.cwd, { needsTls: chosen.needsTls, raw: chosen.raw });
    }
  }
  const globalOptions = envValue(env, 'GLOBAL_OPTIONS');
  if (globalOptions !== undefined) {
    const { directives } = parseDirectives(globalOptions, env);
    const others: string[] = [];
    for (const d of directives) {
      if (d.name === 'debug') put(official, 'logLevel', 'debug', 'GLOBAL_OPTIONS', ctx.cwd);
      else others.push(d.name);
    }
    if (others.length > 0) ctx.warnings.push(`GLOBAL_OPTIONS: Caddy global options other than 'debug' are ignored: ${others.join(', ')}`);
  }

  const extra: Layer = {};
  const extraText = env['MERCURE_EXTRA_DIRECTIVES'];
  if (extraText !== undefined && extraText.trim() !== '') {
    const { directives, errors } = parseDirectives(extraText, env);
    for (const e of errors) ctx.errors.push(`MERCURE_EXTRA_DIRECTIVES ${e}`);
    applyDirectives(directives, (d) => `MERCURE_EXTRA_DIRECTIVES line ${d.line} (${d.name})`, extra, ctx, ctx.cwd);
  }
  return [legacy, official, extra];
}

// ---------------------------------------------------------------------------------------------
// Command-line flags
// ---------------------------------------------------------------------------------------------

interface FlagSpec {
  names: readonly string[];
  /** Boolean flags take no value (`--ui`, `--ui=false`, `--no-ui`). */
  bool?: boolean;
  targets?: readonly SimpleKey[];
  special?: 'config' | 'dev' | 'debug';
  /** Sets both roles; applied before role-specific flags so those win. */
  generic?: boolean;
  /** Repeatable; values accumulate. */
  list?: boolean;
  arg?: string;
  help: string;
}

const FLAGS: readonly FlagSpec[] = [
  { names: ['config'], special: 'config', arg: 'file.json', help: 'JSON config file (or QUICKSILVER_CONFIG)' },
  { names: ['dev'], bool: true, special: 'dev', help: 'development profile: dev key, anonymous, subscriptions, CORS *, UI + demo, localhost:3000' },
  { names: ['addr'], targets: ['addr'], arg: 'host:port', help: 'listen address (default :3000)' },
  { names: ['jwt-key'], targets: ['publisherKey', 'subscriberKey'], generic: true, arg: 'key', help: 'key for both roles (secret, PEM, or @file)' },
  { names: ['jwt-alg', 'jwt-algorithm'], targets: ['publisherAlg', 'subscriberAlg'], generic: true, arg: 'alg', help: 'algorithm for both roles (default HS256)' },
  { names: ['publisher-jwt-key'], targets: ['publisherKey'], arg: 'key', help: 'publisher key (secret, PEM, or @file)' },
  { names: ['publisher-jwt-alg', 'publisher-jwt-algorithm'], targets: ['publisherAlg'], arg: 'alg', help: 'publisher algorithm (default HS256)' },
  { names: ['subscriber-jwt-key'], targets: ['subscriberKey'], arg: 'key', help: 'subscriber key (default: the publisher key)' },
  { names: ['subscriber-jwt-alg', 'subscriber-jwt-algorithm'], targets: ['subscriberAlg'], arg: 'alg', help: 'subscriber algorithm (default HS256)' },
  { names: ['publisher-jwks-url'], targets: ['publisherJwksUrl'], arg: 'url', help: 'publisher JWK Set URL (https://, http://, file://)' },
  { names: ['subscriber-jwks-url'], targets: ['subscriberJwksUrl'], arg: 'url', help: 'subscriber JWK Set URL' },
  { names: ['trusted-issuers'], targets: ['trustedIssuers'], list: true, arg: 'iss...', help: 'accepted draft-08 token issuers' },
  { names: ['resource-identifier'], targets: ['resourceIdentifier'], arg: 'url', help: 'required audience of draft-08 tokens' },
  { names: ['anonymous', 'allow-anonymous'], bool: true, targets: ['anonymous'], help: 'allow subscribers without a token' },
  { names: ['cors-origins', 'cors-allowed-origins'], targets: ['corsOrigins'], list: true, arg: 'origins', help: 'allowed CORS origins (repeatable, space/comma list, *)' },
  { names: ['publish-origins', 'publish-allowed-origins'], targets: ['publishOrigins'], list: true, arg: 'origins', help: 'origins allowed to publish with a cookie (https://*.example.com allowed)' },
  { names: ['subscriptions'], bool: true, targets: ['subscriptions'], help: 'subscription events and API' },
  { names: ['heartbeat', 'heartbeat-interval'], targets: ['heartbeat'], arg: 'duration', help: 'heartbeat interval (default 40s, 0s disables)' },
  { names: ['write-timeout'], targets: ['writeTimeout'], arg: 'duration', help: 'maximum connection lifetime (default 600s, 0s disables)' },
  { names: ['dispatch-timeout'], targets: ['dispatchTimeout'], arg: 'duration', help: 'maximum time to write one update (default 5s, 0s disables)' },
  { names: ['read-timeout'], targets: ['readTimeout'], arg: 'duration', help: 'maximum time to read a request' },
  { names: ['read-header-timeout'], targets: ['readHeaderTimeout'], arg: 'duration', help: 'maximum time to read request headers' },
  { names: ['shutdown-timeout'], targets: ['shutdownTimeout'], arg: 'duration', help: 'graceful shutdown drain time (default 10s)' },
  { names: ['cookie-name'], targets: ['cookieName'], arg: 'name', help: 'authorization cookie name' },
  { names: ['transport-url'], targets: ['transportUrl'], arg: 'url', help: 'transport (default lmdb://./.quicksilver/hub.lmdb)' },
  { names: ['max-body-size'], targets: ['maxBodySize'], arg: 'size', help: 'largest publish body (default 1MiB)' },
  { names: ['max-connections-per-ip'], targets: ['maxConnectionsPerIp'], arg: 'n', help: 'subscriber connections per client address (default 0: no limit; 429 beyond)' },
  { names: ['max-connections'], targets: ['maxConnections'], arg: 'n', help: 'subscriber connections in total (default 0: no limit; 429 beyond)' },
  { names: ['publish-rate-limit'], targets: ['publishRateLimit'], arg: 'n', help: 'publishes per second per token subject or address (default 0: no limit; 429 beyond)' },
  { names: ['publish-burst'], targets: ['publishBurst'], arg: 'n', help: 'publishes allowed in a burst above the rate (default: the rate)' },
  { names: ['public-url'], targets: ['publicUrl'], arg: 'url', help: 'public URL of the hub' },
  { names: ['cert-file'], targets: ['certFile'], arg: 'file', help: 'TLS certificate (PEM); enables HTTPS and HTTP/2' },
  { names: ['key-file'], targets: ['keyFile'], arg: 'file', help: 'TLS private key (PEM)' },
  { names: ['h2c'], bool: true, targets: ['h2c'], help: 'cleartext HTTP/2 alongside HTTP/1.1' },
  { names: ['trust-proxy', 'use-forwarded-headers'], bool: true, targets: ['trustProxy'], help: 'trust X-Forwarded-* headers' },
  { names: ['ui'], bool: true, targets: ['ui'], help: 'debugging UI at /.well-known/mercure/ui/' },
  { names: ['demo'], bool: true, targets: ['demo'], help: 'insecure demo endpoint (implies --ui)' },
  { names: ['metrics', 'metrics-enabled'], bool: true, targets: ['metrics'], help: 'Prometheus metrics (default on; --no-metrics)' },
  { names: ['tracing'], bool: true, targets: ['tracing'], help: 'OpenTelemetry spans (needs @opentelemetry/api and an SDK registered with --import)' },
  { names: ['debug'], bool: true, special: 'debug', help: 'same as --log-level=debug' },
  { names: ['log-level'], targets: ['logLevel'], arg: 'level', help: 'fatal, error, warn, info (default), debug, trace, silent' },
  { names: ['log-format'], targets: ['logFormat'], arg: 'format', help: 'json (default) or pretty' },
  { names: ['workers'], targets: ['workers'], arg: 'n|auto', help: 'hub processes sharing the port (default: one per core; 1 = a single process)' },
];

const FLAG_BY_NAME = new Map<string, FlagSpec>(FLAGS.flatMap((f) => f.names.map((n) => [n, f] as const)));

/** One line per flag, for `--help`. */
export function configUsage(): string {
  const rows = FLAGS.map((f) => {
    const names = f.names.map((n) => `--${n}`).join(', ');
    return [`${names}${f.arg ? ` <${f.arg}>` : ''}`, f.help] as const;
  });
  const width = Math.max(...rows.map(([a]) => a.length)) + 2;
  return rows.map(([a, h]) => `  ${a.padEnd(width)}${h}`).join('\n');
}

interface ParsedArgv {
  generic: Layer;
  specific: Layer;
  config?: Val<string>;
  dev: boolean;
}

function parseArgv(argv: readonly string[], ctx: Ctx): ParsedArgv {
  const out: ParsedArgv = { generic: {}, specific: {}, dev: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      for (const rest of argv.slice(i + 1)) ctx.errors.push(`unexpected argument '${rest}'`);
      break;
    }
    if (!arg.startsWith('--')) {
      ctx.errors.push(arg.startsWith('-') && arg.length > 1 ? `unknown flag '${arg}'` : `unexpected argument '${arg}'`);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const inline = eq === -1 ? undefined : arg.slice(eq + 1);
    let spec = FLAG_BY_NAME.get(name);
    let negated = false;
    if (!spec && name.startsWith('no-')) {
      const base = FLAG_BY_NAME.get(name.slice(3));
      if (base?.bool) { spec = base; negated = true; }
    }
    const src = `--${name}`;
    if (!spec) {
      ctx.errors.push(`unknown flag '${src}'${suggest(name, FLAG_BY_NAME.keys(), '--')}`);
      continue;
    }
    let args: string[];
    if (spec.bool) {
      if (negated && inline !== undefined) {
        ctx.errors.push(`${src}: does not take a value`);
        continue;
      }
      args = negated ? ['false'] : inline === undefined ? [] : [inline];
    } else if (inline !== undefined) {
      args = [inline];
    } else if (i + 1 < argv.length && !(argv[i + 1] as string).startsWith('--')) {
      args = [argv[++i] as string];
    } else {
      ctx.errors.push(`${src}: missing value`);
      continue;
    }

    if (spec.special === 'config') {
      const v = single(args, src, ctx);
      if (v !== undefined) out.config = { value: v, source: src, dir: ctx.cwd };
      continue;
    }
    if (spec.special === 'dev' || spec.special === 'debug') {
      const b = boolP(args, src, ctx);
      if (spec.special === 'dev' && b !== undefined) out.dev = b;
      if (spec.special === 'debug' && b) put(out.specific, 'logLevel', 'debug', src, ctx.cwd);
      continue;
    }
    const layer = spec.generic ? out.generic : out.specific;
    for (const key of spec.targets ?? []) {
      if (spec.list) {
        const parsed = PARSERS[key](args, src, ctx) as string[] | undefined;
        if (parsed === undefined) continue;
        const prev = (layer[key] as Val<string[]> | undefined)?.value ?? [];
        put(layer, key, [...prev, ...parsed.filter((o) => !prev.includes(o))] as Settings[typeof key], src, ctx.cwd);
      } else {
        apply(layer, key, args, src, ctx, ctx.cwd);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

const HMAC_MIN_BYTES: Partial<Record<JwtAlgorithm, number>> = { HS256: 32, HS384: 48, HS512: 64 };
const EC_CURVES: Partial<Record<JwtAlgorithm, string>> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' };
const CURVE_NAMES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

function looksLikePem(s: string): boolean {
  return /-----BEGIN [A-Z0-9 ]+-----/.test(s);
}

function describeKey(k: KeyObject): string {
  const type = k.asymmetricKeyType;
  if (type === 'ec') {
    const curve = k.asymmetricKeyDetails?.namedCurve ?? '';
    return `EC ${CURVE_NAMES[curve] ?? curve}`;
  }
  if (type === 'rsa' || type === 'rsa-pss') return 'RSA';
  if (type === 'ed25519') return 'Ed25519';
  if (type === 'ed448') return 'Ed448';
  return type ?? 'unknown';
}

function keyFits(k: KeyObject, alg: JwtAlgorithm): boolean {
  const type = k.asymmetricKeyType;
  if (alg.startsWith('RS')) return type === 'rsa';
  if (alg.startsWith('PS')) return type === 'rsa' || type === 'rsa-pss';
  if (alg.startsWith('ES')) return type === 'ec' && k.asymmetricKeyDetails?.namedCurve === EC_CURVES[alg];
  return type === 'ed25519';
}

/**
 * Turns a configured key into what the hub verifies with. `@path` reads a file (trailing newlines
 * dropped; `@@...` is a literal key starting with '@'); PEM with literal `\n` escapes is unescaped.
 * Asymmetric keys (PEM public key, certificate, private key, or a JWK as JSON) are checked against
 * the algorithm and returned as an SPKI PEM public key.
 */
function resolveKey(raw: Val<string>, alg: JwtAlgorithm, algSource: string | undefined, ctx: Ctx, production: boolean): string | undefined {
  const src = raw.source;
  let key = raw.value;
  if (key.startsWith('@@')) {
    key = key.slice(1);
  } else if (key.startsWith('@')) {
    const path = key.slice(1);
    try {
      key = readFileSync(resolvePath(raw.dir, path), 'utf8').replace(/(?:\r?\n)+$/, '');
    } catch (e) {
      ctx.errors.push(`${src}: cannot read key file '${path}': ${errorMessage(e)} (write '@@' for a literal key starting with '@')`);
      return undefined;
    }
    if (key.trim() === '') {
      ctx.errors.push(`${src}: key file '${path}' is empty`);
      return undefined;
    }
  }
  if (looksLikePem(key) && key.includes('\\n')) key = key.replace(/\\r\\n|\\n/g, '\n');
  const algNote = algSource && algSource !== src ? ` (${algSource})` : '';

  if (alg.startsWith('HS')) {
    if (looksLikePem(key)) {
      ctx.warnings.push(`${src}: looks like a PEM key but the algorithm is ${alg}${algNote}, so it is used as an HMAC secret; set the algorithm (e.g. RS256) if that is not intended`);
    } else if (/^eyJ[\w-]*\.[\w-]+\.[\w-]*$/.test(key)) {
      ctx.warnings.push(`${src}: looks like a JWT; the hub needs the secret the tokens are signed with, not a token`);
    }
    const min = HMAC_MIN_BYTES[alg] ?? 32;
    if (production && WELL_KNOWN_KEYS.includes(key)) {
      ctx.warnings.push(`${src}: is a well-known example key: anyone can sign tokens for this hub; use a long random secret in production`);
    } else if (Buffer.byteLength(key) < min) {
      ctx.warnings.push(`${src}: the ${alg} key is only ${Buffer.byteLength(key)} bytes long; use at least ${min} random bytes`);
    }
    return key;
  }

  const text = key.trim();
  let publicKey: KeyObject;
  let isPrivate = false;
  try {
    if (text.startsWith('{')) {
      const jwk = JSON.parse(text) as Record<string, unknown>;
      isPrivate = 'd' in jwk;
      publicKey = createPublicKey({ key: jwk as never, format: 'jwk' });
    } else if (looksLikePem(text)) {
      isPrivate = /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
      publicKey = createPublicKey(text);
    } else {
      ctx.errors.push(`${src}: algorithm ${alg}${algNote} needs a PEM public key ('-----BEGIN PUBLIC KEY-----...' or a certificate), or @/path/to/key.pem`);
      return undefined;
    }
  } catch (e) {
    ctx.errors.push(`${src}: invalid ${alg} key: ${errorMessage(e)}`);
    return undefined;
  }
  if (!keyFits(publicKey, alg)) {
    ctx.errors.push(`${src}: an ${describeKey(publicKey)} key cannot verify ${alg}${algNote} tokens`);
    return undefined;
  }
  const bits = publicKey.asymmetricKeyDetails?.modulusLength;
  if (bits !== undefined && bits < 2048) {
    ctx.errors.push(`${src}: the RSA key is ${bits} bits; ${alg} needs at least 2048`);
    return undefined;
  }
  if (isPrivate) ctx.warnings.push(`${src}: is a private key; the hub only needs (and only keeps) the public key`);
  return publicKey.export({ type: 'spki', format: 'pem' }) as string;
}

function resolveRawKey(raw: RawKey | undefined, ctx: Ctx, production: boolean): KeyOptions | undefined {
  if (!raw || (!raw.key && !raw.jwksUrl)) return undefined;
  const out: KeyOptions = {};
  const alg = raw.alg?.value ?? 'HS256';
  if (raw.key) {
    const key = resolveKey(raw.key, alg, raw.alg?.source, ctx, production);
    if (key !== undefined) out.key = key;
    out.algorithm = alg;
  } else if (raw.alg) {
    out.algorithm = alg;
  }
  if (raw.jwksUrl) out.jwksUrl = raw.jwksUrl.value;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Assembly
// ---------------------------------------------------------------------------------------------

function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/**
 * The `--dev` profile, applied above the built-in defaults and below every explicit setting:
 *
 * - publisher key: {@link DEV_KEY} (HS256) when no publisher key or JWKS URL is configured;
 *   the subscriber key then defaults to the publisher key, as always;
 * - `anonymous`: true;
 * - `subscriptions`: true;
 * - `cors_origins`: `*`;
 * - `publish_origins`: `*`;
 * - `ui` and `demo`: true;
 * - `addr`: `localhost:3000` (only reachable from this machine; use `--addr :3000` in a container).
 */
function devLayer(): Layer {
  const src = '--dev';
  const layer: Layer = {};
  put(layer, 'anonymous', true, src, '');
  put(layer, 'subscriptions', true, src, '');
  put(layer, 'corsOrigins', ['*'], src, '');
  put(layer, 'publishOrigins', ['*'], src, '');
  put(layer, 'ui', true, src, '');
  put(layer, 'demo', true, src, '');
  put(layer, 'addr', 'localhost:3000', src, '');
  return layer;
}

function checkReadable(v: Val<string>, ctx: Ctx): string | undefined {
  const file = resolvePath(v.dir, v.value);
  try {
    if (!statSync(file).isFile()) throw Object.assign(new Error('not a file'), { code: 'EISDIR' });
    accessSync(file, fsConstants.R_OK);
  } catch (e) {
    ctx.errors.push(`${v.source}: cannot read '${v.value}': ${errorMessage(e)}`);
    return undefined;
  }
  return file;
}

/**
 * Builds the configuration from the environment, the command-line arguments and the config file
 * they name. Every problem found is reported (not only the first), one line each, prefixed with
 * the setting as written (`MERCURE_PUBLISHER_JWT_ALG`, `--heartbeat`,
 * `MERCURE_EXTRA_DIRECTIVES line 2 (cors_origins)`, `hub.json (heartbeat)`).
 *
 * Sources (lowest to highest): defaults < `--dev` < config file < legacy env < official env <
 * `MERCURE_EXTRA_DIRECTIVES` < flags.
 *
 * - Config file: `--config <file.json>` or `QUICKSILVER_CONFIG`; keys are the directive names
 *   below plus `addr`, `cert_file`, `key_file`, `h2c`, `trust_proxy`, `read_timeout`,
 *   `read_header_timeout`, `shutdown_timeout`, `log_level`, `log_format`, `metrics`, `workers`,
 *   `public_url`; `publisher_jwt`/`subscriber_jwt` are `"key"` or `{"key", "alg"}`, `transport` is
 *   a name or `{"name", ...options}`, `issuers` a list of `{"issuer", "authorization_server",
 *   "publisher": {"key", "alg"} | {"jwks_url"}, "subscriber": ...}`. JSON numbers for durations
 *   are seconds. Unknown keys are errors. Relative paths (`@key.pem`, `cert_file`) are relative
 *   to the file's directory.
 * - Official image environment: `MERCURE_PUBLISHER_JWT_KEY`, `MERCURE_PUBLISHER_JWT_ALG`,
 *   `MERCURE_SUBSCRIBER_JWT_KEY`, `MERCURE_SUBSCRIBER_JWT_ALG`, `MERCURE_TRANSPORT_URL`,
 *   `MERCURE_TRUSTED_ISSUERS`, `MERCURE_EXTRA_DIRECTIVES`, `SERVER_NAME` (`:80`, `:port`,
 *   `http://host[:port]` → plain HTTP on that port; a host name or `https://` → HTTPS on :443 or
 *   the given port, which needs CERT_FILE/KEY_FILE: without them a warning and the next address
 *   setting or the default is used), `GLOBAL_OPTIONS` (`debug`).
 * - Directives (`MERCURE_EXTRA_DIRECTIVES`, one per line): `publisher_jwt <key> [alg]`,
 *   `subscriber_jwt <key> [alg]`, `publisher_jwks_url`, `subscriber_jwks_url`, `anonymous`,
 *   `subscriptions`, `ui`, `demo`, `debugger` (= ui), `playground` (= demo), `cors_origins`,
 *   `publish_origins`, `cookie_name`, `heartbeat`, `write_timeout`, `dispatch_timeout`,
 *   `transport <local|bolt|name> { ... }`, `transport_url`, `max_request_body_size`,
 *   `resource_identifier`, `trusted_issuers`, `public_urls`, `issuer <iss> { ... }`,
 *   `protocol_version_compatibility 7|8`, `subscriber_buffer_size`, `max_topics`,
 *   `token_cache_size`, `workers <n|auto>`; accepted with a warning: `topic_selector_cache`, `topic_matcher_cache`,
 *   `subscriber_list_cache_size`, `name`.
 * - Legacy environment: `JWT_KEY`, `JWT_ALGORITHM` (both roles), `PUBLISHER_JWT_KEY`,
 *   `PUBLISHER_JWT_ALGORITHM`, `SUBSCRIBER_JWT_KEY`, `SUBSCRIBER_JWT_ALGORITHM`, `ADDR`,
 *   `ALLOW_ANONYMOUS`, `CORS_ALLOWED_ORIGINS`, `PUBLISH_ALLOWED_ORIGINS` (space- or
 *   comma-separated), `HEARTBEAT_INTERVAL`, `WRITE_TIMEOUT`, `DISPATCH_TIMEOUT`, `READ_TIMEOUT`,
 *   `READ_HEADER_TIMEOUT`, `DEMO`, `DEBUG`, `SUBSCRIPTIONS` (`DISPATCH_SUBSCRIPTIONS`), `CERT_FILE`,
 *   `KEY_FILE`, `USE_FORWARDED_HEADERS`, `TRANSPORT_URL`, `METRICS_ENABLED`, `LOG_FORMAT`
 *   (JSON/TEXT/FLUENTD), `HISTORY_SIZE` (appended as `size=` to a memory:// or bolt:// URL).
 *   Booleans accept 1/0, true/false, yes/no, on/off. Set-but-unsupported legacy variables
 *   (`ACME_*`, `COMPRESS`, `DB_PATH`, `METRICS_ADDR`, `CADDY_*`, ...) give a warning.
 * - Quicksilver's environment, at the legacy variables' precedence: `QUICKSILVER_WORKERS`.
 * - Flags: see {@link configUsage}; `--flag value` or `--flag=value`, `--no-<flag>` for booleans.
 */
export function loadConfig(input: ConfigInput): ConfigResult {
  const cwd = input.cwd ?? '.';
  const ctx: Ctx = { errors: [], warnings: [], env: input.env, cwd };

  const flags = parseArgv(input.argv, ctx);
  const dev = flags.dev;
  const production = !dev;

  const configEnv = envValue(input.env, 'QUICKSILVER_CONFIG');
  const configPath = flags.config ?? (configEnv === undefined ? undefined : { value: configEnv, source: 'QUICKSILVER_CONFIG', dir: cwd });
  const fileLayer = configPath ? loadConfigFile(configPath, ctx) : {};
  const envLayers = loadEnv(ctx);

  const layers: Layer[] = [dev ? devLayer() : {}, fileLayer, ...envLayers, flags.generic, flags.specific];
  const s: Layer = Object.assign({}, ...layers) as Layer;

  // --- keys -------------------------------------------------------------------------------
  const roleRaw = (role: 'publisher' | 'subscriber'): RawKey => {
    const raw: RawKey = {};
    const key = s[`${role}Key`];
    const alg = s[`${role}Alg`];
    const jwksUrl = s[`${role}JwksUrl`];
    if (key) raw.key = key;
    if (alg) raw.alg = alg;
    if (jwksUrl) raw.jwksUrl = jwksUrl;
    return raw;
  };
  const pubRaw = roleRaw('publisher');
  const subRaw = roleRaw('subscriber');
  if (dev && !pubRaw.key && !pubRaw.jwksUrl) pubRaw.key = { value: DEV_KEY, source: '--dev', dir: cwd };
  const publisher = resolveRawKey(pubRaw, ctx, production);
  let subscriber = resolveRawKey(subRaw, ctx, production);

  const issuers: IssuerOptions[] = [];
  const authorizationServers: string[] = [];
  for (const raw of s.issuers?.value ?? []) {
    const issuer: IssuerOptions = { issuer: raw.issuer };
    const pub = resolveRawKey(raw.publisher, ctx, production);
    const sub = resolveRawKey(raw.subscriber, ctx, production);
    if (pub) issuer.publisher = pub;
    if (sub) issuer.subscriber = sub;
    if (!pub && !sub) ctx.errors.push(`${raw.source}: an issuer needs a publisher or subscriber key`);
    issuers.push(issuer);
    if (raw.authorizationServer) authorizationServers.push(raw.issuer);
  }

  const anonymous = s.anonymous?.value ?? false;
  if (!publisher && !issuers.some((i) => i.publisher)) {
    ctx.errors.push('no publisher key: set MERCURE_PUBLISHER_JWT_KEY (or JWT_KEY), or use --dev for a development hub');
  }
  if (!subscriber && publisher) {
    if (subRaw.alg && subRaw.alg.source !== pubRaw.alg?.source) ctx.warnings.push(`${subRaw.alg.source}: ignored, there is no subscriber key`);
    subscriber = { ...publisher };
    if (!anonymous && production) {
      ctx.warnings.push('no subscriber key: subscribers\' tokens are verified with the publisher key; set MERCURE_SUBSCRIBER_JWT_KEY (or JWT_KEY for both roles) to make this explicit');
    }
  }

  // --- TLS and address ----------------------------------------------------------------------
  let certFile: string | undefined;
  let keyFile: string | undefined;
  if (s.certFile && !s.keyFile) ctx.errors.push(`${s.certFile.source}: a certificate needs its private key too (KEY_FILE or --key-file)`);
  if (s.keyFile && !s.certFile) ctx.errors.push(`${s.keyFile.source}: a private key needs its certificate too (CERT_FILE or --cert-file)`);
  if (s.certFile) certFile = checkReadable(s.certFile, ctx);
  if (s.keyFile) keyFile = checkReadable(s.keyFile, ctx);
  const tls = s.certFile !== undefined && s.keyFile !== undefined;

  const addrCandidates = layers.map((l) => l.addr).filter((v): v is Val<string> => v !== undefined).reverse();
  const chosenAddr = addrCandidates.find((c) => !c.needsTls || tls);
  const addr = chosenAddr?.value ?? ':3000';
  for (const c of addrCandidates) {
    if (c === chosenAddr) break;
    if (c.needsTls) {
      ctx.warnings.push(`${c.source}: '${c.raw}' asks for automatic HTTPS, which Quicksilver does not provide; set CERT_FILE and KEY_FILE to serve HTTPS on ${c.value}, or use SERVER_NAME=:80 behind a TLS-terminating proxy; listening on ${addr} (plain HTTP) instead`);
    }
  }

  let h2c = s.h2c?.value ?? false;
  if (h2c && tls) {
    ctx.warnings.push(`${s.h2c?.source}: ignored with TLS (HTTPS already negotiates HTTP/2)`);
    h2c = false;
  }

  // --- transport --------------------------------------------------------------------------
  let transportUrl = s.transportUrl?.value ?? DEFAULT_TRANSPORT_URL;
  if (s.historySize) {
    const scheme = transportUrl.slice(0, transportUrl.indexOf(':')).toLowerCase();
    const query = transportUrl.includes('?') ? transportUrl.slice(transportUrl.indexOf('?') + 1) : '';
    const sized = scheme === 'memory' || scheme === 'bolt' || scheme === 'lmdb';
    if (sized && !new URLSearchParams(query).has('size')) {
      const sep = !transportUrl.includes('?') ? '?' : /[?&]$/.test(transportUrl) ? '' : '&';
      transportUrl += `${sep}size=${s.historySize.value}`;
    } else {
      ctx.warnings.push(`${s.historySize.source}: ignored (${sized ? 'the transport URL already sets size' : `not applicable to ${scheme}://`})`);
    }
  }

  // --- warnings for risky production settings ---------------------------------------------
  const demo = s.demo?.value ?? false;
  if (production && demo) ctx.warnings.push(`${s.demo?.source}: the demo endpoint is insecure (it echoes anything and sets any cookie); do not enable it in production`);

  const warnings = [...new Set(ctx.warnings)];
  if (ctx.errors.length > 0) return { ok: false, errors: [...new Set(ctx.errors)] };

  const hub: Config['hub'] = compact({
    publisher,
    subscriber,
    issuers: issuers.length > 0 ? issuers : undefined,
    trustedIssuers: s.trustedIssuers?.value,
    resourceIdentifier: s.resourceIdentifier?.value,
    authorizationServers: authorizationServers.length > 0 ? authorizationServers : undefined,
    anonymous,
    corsOrigins: s.corsOrigins?.value ?? [],
    publishOrigins: s.publishOrigins?.value ?? [],
    cookieName: s.cookieName?.value,
    subscriptions: s.subscriptions?.value ?? false,
    heartbeat: s.heartbeat?.value ?? 40_000,
    writeTimeout: s.writeTimeout?.value ?? 600_000,
    dispatchTimeout: s.dispatchTimeout?.value ?? 5_000,
    subscriberBufferSize: s.subscriberBufferSize?.value,
    maxBodySize: s.maxBodySize?.value,
    maxTopics: s.maxTopics?.value,
    maxConnectionsPerIp: s.maxConnectionsPerIp?.value,
    maxConnections: s.maxConnections?.value,
    publishRateLimit: s.publishRateLimit?.value,
    publishBurst: s.publishBurst?.value,
    ui: s.ui?.value ?? false,
    demo,
    trustProxy: s.trustProxy?.value ?? false,
    publicUrl: s.publicUrl?.value,
    tokenCacheSize: s.tokenCacheSize?.value,
  });

  const server: ServerConfig = compact({
    addr,
    certFile,
    keyFile,
    h2c,
    trustProxy: s.trustProxy?.value ?? false,
    readTimeout: s.readTimeout?.value,
    readHeaderTimeout: s.readHeaderTimeout?.value,
    shutdownTimeout: s.shutdownTimeout?.value ?? 10_000,
  });

  const config: Config = compact({
    hub,
    transportUrl,
    server,
    logLevel: s.logLevel?.value ?? 'info',
    logFormat: s.logFormat?.value ?? 'json',
    metrics: s.metrics?.value ?? true,
    tracing: s.tracing?.value ?? false,
    dev,
    workers: s.workers?.value,
  });
  return { ok: true, config, warnings };
}
