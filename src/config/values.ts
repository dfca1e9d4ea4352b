/**
 * Value parsers: the exported ones (parseSize, parseAddr, parseBool) for the CLI and other
 * modules, and one parser per setting, shared by every source so a heartbeat is read the same way
 * from a flag, a variable, a directive or the JSON file. Each reports its own errors.
 */
import { parseMultiHostUrl } from '../util/multi-host-url.js';
import { parseDuration } from '../util/duration.js';
import { JWT_ALGORITHMS, type JwtAlgorithm } from '../http/options.js';
import type { LogLevel } from '../observability/logger.js';
import { defaultWorkerCount } from './cpus.js';
import type { LogFormat } from './types.js';
import { type Ctx, type Layer, put, type Settings, type SimpleKey, splitList } from './settings.js';

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

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

type Parser<T> = (args: readonly string[], src: string, ctx: Ctx) => T | undefined;

export function single(args: readonly string[], src: string, ctx: Ctx): string | undefined {
  if (args.length === 1 && (args[0] as string).trim() !== '') return args[0] as string;
  ctx.errors.push(args.length > 1 ? `${src}: expected one value, got ${args.length}` : `${src}: missing value`);
  return undefined;
}

function parseAlgorithm(value: string): JwtAlgorithm | undefined {
  const s = value.trim();
  return JWT_ALGORITHMS.find((a) => a === s) ?? JWT_ALGORITHMS.find((a) => a.toLowerCase() === s.toLowerCase());
}

const keyP: Parser<string> = (args, src, ctx) => single(args, src, ctx);

export const algP: Parser<JwtAlgorithm> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  const alg = parseAlgorithm(v);
  if (!alg) ctx.errors.push(`${src}: unknown algorithm '${v}'; expected one of ${JWT_ALGORITHMS.join(', ')}`);
  return alg;
};

export const boolP: Parser<boolean> = (args, src, ctx) => {
  if (args.length === 0) return true;
  if (args.length > 1) {
    ctx.errors.push(`${src}: expected at most one value (true or false), got ${args.length}`);
    return undefined;
  }
  const b = parseBool(args[0] as string);
  if (b === undefined) ctx.errors.push(`${src}: invalid boolean '${args[0]}'; expected 1/0, true/false, yes/no or on/off`);
  return b;
};

/** A duration or a size: both read the same way and differ only in the parser and the hints. */
function measureP(parse: (v: string) => number | null, what: string, negative: string, expected: string): Parser<number> {
  return (args, src, ctx) => {
    const v = single(args, src, ctx);
    if (v === undefined) return undefined;
    const n = parse(v);
    if (n === null) {
      ctx.errors.push(v.trim().startsWith('-')
        ? `${src}: invalid ${what} '${v}': ${negative}`
        : `${src}: invalid ${what} '${v}'; ${expected}`);
      return undefined;
    }
    return n;
  };
}

const durationP = measureP(parseDuration, 'duration', 'must not be negative (use 0s to disable)', 'expected e.g. 40s, 1m30s, 500ms, or 0s to disable');
const sizeP = measureP(parseSize, 'size', 'must not be negative', 'expected bytes or a unit, e.g. 1048576, 512kB, 1MiB');

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

export const jwksP = urlP(['https:', 'http:', 'file:'], 'JWKS URL');
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
    u = parseMultiHostUrl(s);
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

/** Let's Encrypt's directories, by the names `--acme-directory` accepts for them. */
export const ACME_DIRECTORIES: Record<string, string> = {
  production: 'https://acme-v02.api.letsencrypt.org/directory',
  letsencrypt: 'https://acme-v02.api.letsencrypt.org/directory',
  staging: 'https://acme-staging-v02.api.letsencrypt.org/directory',
};

/** A DNS name a CA can validate over HTTP-01 or TLS-ALPN-01: no wildcard, no IP address. */
export function acmeDomainProblem(d: string): string | undefined {
  if (d.startsWith('*.')) return 'a wildcard certificate needs the DNS-01 challenge, which Quicksilver does not support; list each name';
  if (/^\d+(\.\d+){3}$/.test(d) || d.includes(':')) return 'an IP address cannot get a certificate over ACME here; use a domain name';
  if (d.length > 253 || !/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(d)) return 'not a valid domain name';
  return undefined;
}

const acmeDomainsP: Parser<string[]> = (args, src, ctx) => {
  const list = splitList(args).map((d) => d.toLowerCase().replace(/\.$/, ''));
  if (list.length === 0) ctx.errors.push(`${src}: missing value`);
  let bad = false;
  for (const d of list) {
    const problem = acmeDomainProblem(d);
    if (problem) { ctx.errors.push(`${src}: '${d}': ${problem}`); bad = true; }
  }
  return bad || list.length === 0 ? undefined : [...new Set(list)];
};

const acmeEmailP: Parser<string> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  if (!/^[^\s@]+@[^\s@]+$/.test(v.trim())) {
    ctx.errors.push(`${src}: invalid e-mail address '${v}'`);
    return undefined;
  }
  return v.trim();
};

const acmeDirectoryP: Parser<string> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  const named = ACME_DIRECTORIES[v.trim().toLowerCase()];
  if (named) return named;
  return urlP(['https:'], 'ACME directory (production, staging or an https:// URL)')([v], src, ctx);
};

/** `off` (no HTTP listener: no HTTP-01, no redirect), a port or an address. */
const acmeHttpPortP: Parser<string> = (args, src, ctx) => {
  const v = single(args, src, ctx);
  if (v === undefined) return undefined;
  if (['off', 'none', 'false', '0'].includes(v.trim().toLowerCase())) return 'off';
  return addrP([v], src, ctx);
};

export const PARSERS: { [K in SimpleKey]: Parser<Settings[K]> } = {
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
  dedupeWindow: durationP,
  ui: boolP,
  demo: boolP,
  legacyHubPath: boolP,
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
  h2PingInterval: durationP,
  h2PingTimeout: durationP,
  acmeDomains: acmeDomainsP,
  acmeEmail: acmeEmailP,
  acmeDirectory: acmeDirectoryP,
  acmeCaRoot: stringP,
  acmeDir: stringP,
  acmeHttpPort: acmeHttpPortP,
  acmeRenewBefore: durationP,
  logLevel: logLevelP,
  logFormat: logFormatP,
  metrics: boolP,
  tracing: boolP,
  workers: workersP,
  workerHeader: boolP,
  webhooks: boolP,
  webhookAllow: listP,
  webhookTimeout: durationP,
  webhookGiveUp: durationP,
  webhookBackoffMin: durationP,
  webhookBackoffMax: durationP,
  webhookLease: durationP,
};

export function apply<K extends SimpleKey>(layer: Layer, key: K, args: readonly string[], src: string, ctx: Ctx, dir: string): void {
  const parser = PARSERS[key] as Parser<Settings[K]>;
  put(layer, key, parser(args, src, ctx), src, dir);
}
