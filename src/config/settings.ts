/**
 * The internal model every source writes into: each source (defaults, --dev, file, env, flags)
 * fills a Layer of Settings, each value carrying where it came from so an error line can name the
 * setting the way the user wrote it; layers are merged by precedence in index.ts. Also the small
 * helpers every source shares (error texts, "did you mean" suggestions, list splitting).
 */
import type { JwtAlgorithm } from '../http/options.js';
import type { LogLevel } from '../observability/logger.js';
import type { LogFormat } from './types.js';
import type { WebhookSelector } from '../core/webhook-store.js';

export interface RawKey {
  key?: Val<string>;
  alg?: Val<JwtAlgorithm>;
  jwksUrl?: Val<string>;
}

/** A `webhook <name> { … }` block as read (webhooks.ts checks and completes it). */
export interface RawWebhook {
  name: string;
  url?: string;
  selectors: WebhookSelector[];
  token?: string;
  secret?: string;
  batch?: number;
  source: string;
}

export interface RawIssuer {
  issuer: string;
  authorizationServer: boolean;
  publisher?: RawKey;
  subscriber?: RawKey;
  source: string;
}

export interface Settings {
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
  dedupeWindow: number;
  ui: boolean;
  demo: boolean;
  legacyHubPath: boolean;
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
  h2PingInterval: number;
  h2PingTimeout: number;
  acmeDomains: string[];
  acmeEmail: string;
  acmeDirectory: string;
  acmeCaRoot: string;
  acmeDir: string;
  acmeHttpPort: string;
  acmeRenewBefore: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  metrics: boolean;
  tracing: boolean;
  workers: number;
  workerHeader: boolean;
  webhooks: boolean;
  webhookDefs: RawWebhook[];
  webhookAllow: string[];
  webhookTimeout: number;
  webhookGiveUp: number;
  webhookBackoffMin: number;
  webhookBackoffMax: number;
  webhookLease: number;
}

type SettingKey = keyof Settings;
export type SimpleKey = Exclude<SettingKey, 'issuers' | 'webhookDefs'>;

/** A value with where it came from (for error lines) and the directory relative paths resolve against. */
export interface Val<T> {
  value: T;
  source: string;
  dir: string;
  /** `addr` from a SERVER_NAME host name: only usable with TLS configured. */
  needsTls?: boolean;
  raw?: string;
  /** `acmeDomains` from SERVER_NAME site addresses: given cert files win over them. */
  siteAddress?: boolean;
}

export type Layer = { [K in SettingKey]?: Val<Settings[K]> };

export interface Ctx {
  errors: string[];
  warnings: string[];
  env: Record<string, string | undefined>;
  cwd: string;
}

export function put<K extends SettingKey>(layer: Layer, key: K, value: Settings[K] | undefined, source: string, dir: string, extra?: Partial<Val<unknown>>): void {
  if (value === undefined) return;
  (layer as Record<string, Val<unknown>>)[key] = { ...extra, value, source, dir };
}

export function errorMessage(e: unknown): string {
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

export function suggest(name: string, candidates: Iterable<string>, prefix = ''): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const c of candidates) {
    const dist = levenshtein(name, c);
    if (dist < bestDistance) { best = c; bestDistance = dist; }
  }
  return best === undefined ? '' : `; did you mean '${prefix}${best}'?`;
}

export function splitList(args: readonly string[]): string[] {
  return args.flatMap((a) => a.split(/[\s,]+/)).filter((s) => s !== '');
}
