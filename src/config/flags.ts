/**
 * Command-line flags: one table drives both the parser and `--help`, so a flag cannot exist
 * without its help line. Both-roles flags land in their own layer so role-specific ones win.
 */
import { type Ctx, type Layer, put, type Settings, type SimpleKey, suggest, type Val } from './settings.js';
import { apply, boolP, PARSERS, single } from './values.js';

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
  { names: ['read-timeout'], targets: ['readTimeout'], arg: 'duration', help: 'maximum time to read a whole request, headers and body (default 30s, 0s disables; streams are not cut)' },
  { names: ['read-header-timeout'], targets: ['readHeaderTimeout'], arg: 'duration', help: 'maximum time to read request headers (default 10s)' },
  { names: ['shutdown-timeout'], targets: ['shutdownTimeout'], arg: 'duration', help: 'graceful shutdown drain time (default 10s)' },
  { names: ['h2-ping-interval'], targets: ['h2PingInterval'], arg: 'duration', help: 'HTTP/2: PING a session silent this long (default 30s, 0s disables)' },
  { names: ['h2-ping-timeout'], targets: ['h2PingTimeout'], arg: 'duration', help: 'HTTP/2: close a session whose PING is not answered in this (default 15s)' },
  { names: ['cookie-name'], targets: ['cookieName'], arg: 'name', help: 'authorization cookie name' },
  { names: ['dedupe-window'], targets: ['dedupeWindow'], arg: 'duration', help: 'a publish reusing an id stored this recently is answered 200 and not stored again (default 2m, 0s stores it again, as the reference hub)' },
  { names: ['transport-url'], targets: ['transportUrl'], arg: 'url', help: 'transport (default lmdb://./.quicksilver/hub.lmdb)' },
  { names: ['max-body-size'], targets: ['maxBodySize'], arg: 'size', help: 'largest publish body (default 1MiB)' },
  { names: ['max-connections-per-ip'], targets: ['maxConnectionsPerIp'], arg: 'n', help: 'subscriber connections per client address (default 0: no limit; 429 beyond)' },
  { names: ['max-connections'], targets: ['maxConnections'], arg: 'n', help: 'subscriber connections in total (default 0: no limit; 429 beyond)' },
  { names: ['publish-rate-limit'], targets: ['publishRateLimit'], arg: 'n', help: 'publishes per second per token subject or address (default 0: no limit; 429 beyond)' },
  { names: ['publish-burst'], targets: ['publishBurst'], arg: 'n', help: 'publishes allowed in a burst above the rate (default: the rate)' },
  { names: ['public-url'], targets: ['publicUrl'], arg: 'url', help: 'public URL of the hub' },
  { names: ['cert-file'], targets: ['certFile'], arg: 'file', help: 'TLS certificate (PEM); enables HTTPS and HTTP/2' },
  { names: ['key-file'], targets: ['keyFile'], arg: 'file', help: 'TLS private key (PEM)' },
  { names: ['acme-domain', 'acme-domains'], targets: ['acmeDomains'], list: true, arg: 'name', help: 'get a certificate for this domain over ACME (repeatable; SERVER_NAME=<domain> does it too)' },
  { names: ['acme-email'], targets: ['acmeEmail'], arg: 'address', help: 'contact address for the ACME account (expiry notices)' },
  { names: ['acme-directory'], targets: ['acmeDirectory'], arg: 'url', help: "ACME CA: production (Let's Encrypt, default), staging, or a directory URL" },
  { names: ['acme-ca-root'], targets: ['acmeCaRoot'], arg: 'file', help: "also trust this CA (PEM) for the ACME directory's HTTPS (a test CA such as Pebble)" },
  { names: ['acme-dir'], targets: ['acmeDir'], arg: 'dir', help: 'ACME account and certificates (default ./.quicksilver/acme)' },
  { names: ['acme-http-port'], targets: ['acmeHttpPort'], arg: 'port|addr|off', help: 'HTTP-01 challenges and the redirect to HTTPS (default 80; off: TLS-ALPN-01 only)' },
  { names: ['acme-renew-before'], targets: ['acmeRenewBefore'], arg: 'duration', help: 'renew this long before expiry (default: at two thirds of the lifetime)' },
  { names: ['h2c'], bool: true, targets: ['h2c'], help: 'cleartext HTTP/2 alongside HTTP/1.1' },
  { names: ['trust-proxy', 'use-forwarded-headers'], bool: true, targets: ['trustProxy'], help: 'trust X-Forwarded-* headers' },
  { names: ['ui'], bool: true, targets: ['ui'], help: 'debugging UI at /.well-known/mercure/ui/' },
  { names: ['demo'], bool: true, targets: ['demo'], help: 'insecure demo endpoint (implies --ui)' },
  { names: ['legacy-hub-path'], bool: true, targets: ['legacyHubPath'], help: 'also serve the hub at /hub, its path in the 2019 tutorials' },
  { names: ['metrics', 'metrics-enabled'], bool: true, targets: ['metrics'], help: 'Prometheus metrics (default on; --no-metrics)' },
  { names: ['tracing'], bool: true, targets: ['tracing'], help: 'OpenTelemetry spans (needs @opentelemetry/api and an SDK registered with --import)' },
  { names: ['debug'], bool: true, special: 'debug', help: 'same as --log-level=debug' },
  { names: ['log-level'], targets: ['logLevel'], arg: 'level', help: 'fatal, error, warn, info (default), debug, trace, silent' },
  { names: ['log-format'], targets: ['logFormat'], arg: 'format', help: 'json (default) or pretty' },
  { names: ['workers'], targets: ['workers'], arg: 'n|auto', help: 'hub processes sharing the port (default: one per core; 1 = a single process)' },
  { names: ['worker-header'], bool: true, targets: ['workerHeader'], help: 'name the answering worker (its pid) in X-Quicksilver-Worker (default off)' },
  { names: ['webhooks'], bool: true, targets: ['webhooks'], help: 'webhook subscribers and their API at /.well-known/mercure/webhooks (on with any webhook directive)' },
  { names: ['webhook-allow'], targets: ['webhookAllow'], list: true, arg: 'hosts', help: 'hosts, addresses or networks webhook callbacks may reach (loopback and private ranges are refused otherwise)' },
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

export function parseArgv(argv: readonly string[], ctx: Ctx): ParsedArgv {
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
