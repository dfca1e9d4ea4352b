/**
 * config/ owns turning everything a user can configure into one validated {@link Config}, or a
 * list of problems (one clear line each, naming the setting the way the user wrote it). Sources,
 * lowest to highest precedence: built-in defaults < `--dev` profile (defaults.ts) < JSON config
 * file (file.ts) < legacy environment (`JWT_KEY`, `ADDR`, ...) < official-image environment
 * (`MERCURE_PUBLISHER_JWT_KEY`, `SERVER_NAME`, ...) < `MERCURE_EXTRA_DIRECTIVES` (environment.ts,
 * directives.ts; as in the official Caddyfile, the extra directives come last and win) <
 * command-line flags (flags.ts). Inside one source, a role-specific key (`PUBLISHER_JWT_KEY`,
 * `--publisher-jwt-key`) wins over the both-roles one (`JWT_KEY`, `--jwt-key`); list flags
 * (`--cors-origins`, ...) may be repeated and accumulate; any other setting given twice at the
 * same level keeps the last value. This file assembles the layers and is the only entry point:
 * everything config/ exports is exported from here. The module is pure (the environment and the
 * arguments are parameters; the only I/O is reading the config file and key files and checking
 * that TLS files are readable), and it may import http/ types (HubOptions), auth/,
 * observability/ and util/, never server/, commands/, transports/ or cli.ts.
 */
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import type { IssuerOptions } from '../http/options.js';
import type { Config, ConfigInput, ConfigResult, ServerConfig } from './types.js';
import { type Ctx, errorMessage, type Layer, type RawKey, type Val } from './settings.js';
import { DEFAULT_TRANSPORT_URL, DEV_KEY, devLayer } from './defaults.js';
import { loadConfigFile } from './file.js';
import { envValue, loadEnv } from './environment.js';
import { parseArgv } from './flags.js';
import { resolveRawKey } from './keys.js';
import { acmeFromSettings } from './acme.js';
import { webhooksFromSettings } from './webhooks.js';

export { parseDuration } from '../util/duration.js';
export { DEFAULT_TRANSPORT_URL, DEV_KEY, DEV_TRANSPORT_URL } from './defaults.js';
export { parseDirectives } from './directives.js';
export { configUsage } from './flags.js';
export type { AcmeConfig, Config, ConfigInput, ConfigResult, LogFormat, ServerConfig } from './types.js';
export { DEFAULT_ACME_DIR } from './acme.js';
export { parseAddr, parseBool, parseSize } from './values.js';

function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
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
 *   `read_header_timeout`, `shutdown_timeout`, `log_level`, `log_format`, `metrics`, `workers`, `worker_header`,
 *   `public_url`; `publisher_jwt`/`subscriber_jwt` are `"key"` or `{"key", "alg"}`, `transport` is
 *   a name or `{"name", ...options}`, `issuers` a list of `{"issuer", "authorization_server",
 *   "publisher": {"key", "alg"} | {"jwks_url"}, "subscriber": ...}`. JSON numbers for durations
 *   are seconds. Unknown keys are errors. Relative paths (`@key.pem`, `cert_file`) are relative
 *   to the file's directory.
 * - Official image environment: `MERCURE_PUBLISHER_JWT_KEY`, `MERCURE_PUBLISHER_JWT_ALG`,
 *   `MERCURE_SUBSCRIBER_JWT_KEY`, `MERCURE_SUBSCRIBER_JWT_ALG`, `MERCURE_TRANSPORT_URL`,
 *   `MERCURE_TRUSTED_ISSUERS`, `MERCURE_EXTRA_DIRECTIVES`, `SERVER_NAME` (`:80`, `:port`,
 *   `http://host[:port]` → plain HTTP on that port; a host name or `https://` → HTTPS on :443 or
 *   the given port: with CERT_FILE/KEY_FILE if given, else over ACME for domain names (as Caddy
 *   does; acme.ts), else (localhost, IP addresses) a warning and the next address setting or the
 *   default is used), `GLOBAL_OPTIONS` (`debug`).
 * - Directives (`MERCURE_EXTRA_DIRECTIVES`, one per line): `publisher_jwt <key> [alg]`,
 *   `subscriber_jwt <key> [alg]`, `publisher_jwks_url`, `subscriber_jwks_url`, `anonymous`,
 *   `subscriptions`, `ui`, `demo`, `debugger` (= ui), `playground` (= demo), `cors_origins`,
 *   `publish_origins`, `cookie_name`, `heartbeat`, `write_timeout`, `dispatch_timeout`,
 *   `transport <local|bolt|name> { ... }`, `transport_url`, `max_request_body_size`,
 *   `resource_identifier`, `trusted_issuers`, `public_urls`, `issuer <iss> { ... }`,
 *   `protocol_version_compatibility 7|8`, `subscriber_buffer_size`, `max_topics`,
 *   `token_cache_size`, `workers <n|auto>`, `legacy_hub_path` (also serve the hub at `/hub`),
 *   `acme_domain` (repeatable), `acme_email`, `acme_directory`, `acme_ca_root`, `acme_dir`,
 *   `acme_http_port`, `acme_renew_before` (docs/acme.md), `h2_ping_interval`, `h2_ping_timeout`
 *   (HTTP/2 PINGs on silent sessions, 0 = off); accepted with a warning: `topic_selector_cache`, `topic_matcher_cache`,
 *   `subscriber_list_cache_size`, `name`.
 * - Legacy environment: `JWT_KEY`, `JWT_ALGORITHM` (both roles), `PUBLISHER_JWT_KEY`,
 *   `PUBLISHER_JWT_ALGORITHM`, `SUBSCRIBER_JWT_KEY`, `SUBSCRIBER_JWT_ALGORITHM`, `ADDR`,
 *   `ALLOW_ANONYMOUS`, `CORS_ALLOWED_ORIGINS`, `PUBLISH_ALLOWED_ORIGINS` (space- or
 *   comma-separated), `HEARTBEAT_INTERVAL`, `WRITE_TIMEOUT`, `DISPATCH_TIMEOUT`, `READ_TIMEOUT`,
 *   `READ_HEADER_TIMEOUT`, `DEMO`, `DEBUG`, `SUBSCRIPTIONS` (`DISPATCH_SUBSCRIPTIONS`), `CERT_FILE`,
 *   `KEY_FILE`, `USE_FORWARDED_HEADERS`, `TRANSPORT_URL`, `METRICS_ENABLED`, `LOG_FORMAT`
 *   (JSON/TEXT/FLUENTD), `HISTORY_SIZE` (appended as `size=` to a memory:// or bolt:// URL),
 *   `ACME_HOSTS`, `ACME_CERT_DIR`, `ACME_HTTP01_ADDR` (the acme_* settings).
 *   Booleans accept 1/0, true/false, yes/no, on/off. Set-but-unsupported legacy variables
 *   (`COMPRESS`, `DB_PATH`, `METRICS_ADDR`, `CADDY_*`, ...) give a warning.
 * - Quicksilver's environment, at the legacy variables' precedence: `QUICKSILVER_WORKERS`,
 *   `LEGACY_HUB_PATH`.
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

  // A zero ack timeout would close every session at its first PING: 0 only turns PINGs off.
  if (s.h2PingTimeout && s.h2PingTimeout.value === 0) ctx.errors.push(`${s.h2PingTimeout.source}: must be longer than 0 (set the PING interval to 0s to turn PINGs off)`);

  // --- TLS and address ----------------------------------------------------------------------
  let certFile: string | undefined;
  let keyFile: string | undefined;
  if (s.certFile && !s.keyFile) ctx.errors.push(`${s.certFile.source}: a certificate needs its private key too (KEY_FILE or --key-file)`);
  if (s.keyFile && !s.certFile) ctx.errors.push(`${s.keyFile.source}: a private key needs its certificate too (CERT_FILE or --cert-file)`);
  if (s.certFile) certFile = checkReadable(s.certFile, ctx);
  if (s.keyFile) keyFile = checkReadable(s.keyFile, ctx);
  const acme = acmeFromSettings(s, s.certFile !== undefined || s.keyFile !== undefined, ctx);
  if (acme?.caRoot && s.acmeCaRoot) checkReadable(s.acmeCaRoot, ctx);
  const tls = (s.certFile !== undefined && s.keyFile !== undefined) || acme !== undefined;

  const addrCandidates = layers.map((l) => l.addr).filter((v): v is Val<string> => v !== undefined).reverse();
  const chosenAddr = addrCandidates.find((c) => !c.needsTls || tls);
  const addr = chosenAddr?.value ?? (acme ? ':443' : ':3000');
  for (const c of addrCandidates) {
    if (c === chosenAddr) break;
    if (c.needsTls) {
      ctx.warnings.push(`${c.source}: '${c.raw}' asks for HTTPS, and no public CA issues certificates for that name; set CERT_FILE and KEY_FILE to serve HTTPS on ${c.value}, or use SERVER_NAME=:80 behind a TLS-terminating proxy; listening on ${addr} (plain HTTP) instead`);
    }
  }

  let h2c = s.h2c?.value ?? false;
  if (h2c && tls) {
    ctx.warnings.push(`${s.h2c?.source}: ignored with TLS (HTTPS already negotiates HTTP/2)`);
    h2c = false;
  }

  // --- transport --------------------------------------------------------------------------
  let transportUrl = s.transportUrl?.value ?? DEFAULT_TRANSPORT_URL;
  if (s.dedupeWindow) {
    // Every transport reads the window from its URL; the setting is a default the URL overrides.
    const query = transportUrl.includes('?') ? transportUrl.slice(transportUrl.indexOf('?') + 1) : '';
    if (!new URLSearchParams(query).has('dedupe_window')) {
      const sep = !transportUrl.includes('?') ? '?' : /[?&]$/.test(transportUrl) ? '' : '&';
      transportUrl += `${sep}dedupe_window=${s.dedupeWindow.value}ms`;
    } else {
      ctx.warnings.push(`${s.dedupeWindow.source}: ignored (the transport URL already sets dedupe_window)`);
    }
  }
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

  // --- webhooks (webhooks.ts) ----------------------------------------------------------------
  const webhooks = webhooksFromSettings(s, ctx, s.publicUrl?.value ?? 'http://localhost/.well-known/mercure');

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
    legacyHubPath: s.legacyHubPath?.value,
    trustProxy: s.trustProxy?.value ?? false,
    publicUrl: s.publicUrl?.value,
    tokenCacheSize: s.tokenCacheSize?.value,
    webhooks,
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
    h2PingInterval: s.h2PingInterval?.value,
    h2PingTimeout: s.h2PingTimeout?.value,
    acme,
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
    workerHeader: s.workerHeader?.value,
  });
  return { ok: true, config, warnings };
}
