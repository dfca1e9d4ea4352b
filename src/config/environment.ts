/**
 * The environment: legacy (pre-Caddy) variables, Quicksilver's own, the official image's
 * (including SERVER_NAME site addresses and GLOBAL_OPTIONS) and MERCURE_EXTRA_DIRECTIVES, as three
 * layers in that precedence. Unsupported variables that are set get a warning.
 */
import { type Ctx, type Layer, put, type SimpleKey } from './settings.js';
import { acmeDomainProblem, apply, boolP } from './values.js';
import { applyDirectives, parseDirectives } from './directives.js';

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
  ['QUICKSILVER_DEDUPE_WINDOW', ['dedupeWindow']],
  // The pre-Caddy hub's own automatic HTTPS.
  ['ACME_HOSTS', ['acmeDomains']],
  ['ACME_CERT_DIR', ['acmeDir']],
  ['ACME_HTTP01_ADDR', ['acmeHttpPort']],
];

/** Quicksilver's own variables (besides QUICKSILVER_CONFIG), at the precedence of the legacy ones. */
const OWN_ENV: ReadonlyArray<readonly [string, readonly SimpleKey[]]> = [
  ['QUICKSILVER_WORKERS', ['workers']],
  ['QUICKSILVER_WORKER_HEADER', ['workerHeader']],
  ['LEGACY_HUB_PATH', ['legacyHubPath']],
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

export function envValue(env: Record<string, string | undefined>, name: string): string | undefined {
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

interface SiteAddress { addr: string; needsTls: boolean; raw: string; host: string }

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
  return { addr: `:${port}`, needsTls: tls, raw: entry, host: (m[1] as string).toLowerCase() };
}

function isPublicName(host: string): boolean {
  if (host === '' || host.startsWith('[') || /^\d+(\.\d+){3}$/.test(host) || host.includes('*')) return false;
  return host !== 'localhost' && !/\.(localhost|local|internal|home\.arpa)$/.test(host) && acmeDomainProblem(host) === undefined;
}

export function loadEnv(ctx: Ctx): Layer[] {
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
      // As Caddy does: HTTPS site addresses naming public domains get their certificates over
      // ACME (unless cert files are given); localhost and IP addresses have no public CA.
      const acmeHosts = chosen.needsTls ? sites.filter((s) => s.needsTls && s.addr === chosen.addr && isPublicName(s.host)).map((s) => s.host) : [];
      if (acmeHosts.length > 0) put(official, 'acmeDomains', [...new Set(acmeHosts)], 'SERVER_NAME', ctx.cwd, { siteAddress: true });
      const sameSite = sites.every((s) => s.addr === chosen.addr && acmeHosts.includes(s.host));
      if (entries.length > 1 && !sameSite) ctx.warnings.push(`SERVER_NAME: only one site address is supported; using '${chosen.raw}'`);
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
