import type { IssuerOptions, KeyOptions } from '../auth/options.js';
import type { Transport } from '../core/transport.js';
import type { Logger } from '../observability/logger.js';
import type { TracerLike } from '../observability/tracing.js';
import type { WebhookOptions } from '../webhooks/index.js';

// Key options belong to auth/ (which must not import http/); re-exported here because they are
// part of HubOptions and of the public API.
export { JWT_ALGORITHMS, type IssuerOptions, type JwtAlgorithm, type KeyOptions } from '../auth/options.js';

export interface HubOptions {
  /** Verifies publishers' tokens. Without it (and without issuers) nobody can publish. */
  publisher?: KeyOptions | undefined;
  /** Verifies subscribers' tokens. Defaults to the publisher's key, as the reference hub does. */
  subscriber?: KeyOptions | undefined;
  /**
   * Draft-08 issuers. Tokens whose `iss` names one are verified with that issuer's keys only.
   * A draft-08 token from an issuer not listed is verified with the `publisher`/`subscriber`
   * keys only when `trustedIssuers` includes its `iss` (or is empty/undefined: any issuer).
   */
  issuers?: IssuerOptions[] | undefined;
  /** Allowed `iss` values for draft-08 tokens verified with the role keys. Empty = any. */
  trustedIssuers?: string[] | undefined;
  /**
   * The hub's OAuth resource identifier: the required `aud` of draft-08 tokens. Default: the
   * hub URL as requested (`<scheme>://<host>/.well-known/mercure`).
   */
  resourceIdentifier?: string | undefined;
  /** Issuers advertised as authorization servers in the protected-resource metadata. */
  authorizationServers?: string[] | undefined;
  /** Allow subscribers without a token (they only get public updates). */
  anonymous?: boolean | undefined;
  /** Origins allowed to make cross-origin requests (`*` allowed). */
  corsOrigins?: string[] | undefined;
  /** Origins allowed to publish with a cookie token (CSRF protection; `*` allowed). */
  publishOrigins?: string[] | undefined;
  /** Cookie holding draft-07 tokens. Default `mercureAuthorization`. */
  cookieName?: string | undefined;
  /** Enable subscription events and the subscriptions API. */
  subscriptions?: boolean | undefined;
  /** Heartbeat comment interval in ms; 0 disables. Default 40 000. */
  heartbeat?: number | undefined;
  /** Maximum connection lifetime in ms, randomised to 80–100 %; 0 disables. Default 600 000. */
  writeTimeout?: number | undefined;
  /** Longest a write to a subscriber may take before it is cut, in ms; 0 disables. Default 5 000. */
  dispatchTimeout?: number | undefined;
  /** Updates queued for a subscriber that does not read fast enough before it is cut. Default 1 000. */
  subscriberBufferSize?: number | undefined;
  /** Largest publish body in bytes (413 beyond). Default 1 MiB. */
  maxBodySize?: number | undefined;
  /** Most topics per publish and selectors per subscription request. Default 1 000 (draft-08 matchers: 100). */
  maxTopics?: number | undefined;
  /** Subscriber connections per client address; 0 = no limit (default). 429 beyond. */
  maxConnectionsPerIp?: number | undefined;
  /** Subscriber connections in total; 0 = no limit (default). 429 beyond. */
  maxConnections?: number | undefined;
  /** Publishes per second per token subject (or client address); 0 = no limit (default). 429 beyond. */
  publishRateLimit?: number | undefined;
  /** Publishes allowed in a burst above the rate. Default: the rate. */
  publishBurst?: number | undefined;
  /** The storage and fan-out backend. Default: in-memory, bounded history. */
  transport?: Transport | undefined;
  /** Serve the debugging UI at /.well-known/mercure/ui/. */
  ui?: boolean | undefined;
  /** Enable the insecure demo echo endpoint (implies `ui`). */
  demo?: boolean | undefined;
  /**
   * Also serve the hub at `/hub`, its path before the reference hub's 0.8, which the 2019
   * tutorials use. Off by default: `/hub` then answers a 404 naming `/.well-known/mercure`.
   */
  legacyHubPath?: boolean | undefined;
  /**
   * HMAC key the demo UI mints its short-lived, all-access development token with (`devToken`
   * in /.well-known/mercure/ui/config.json). Used only with `demo`; never pass a production key.
   */
  devKey?: string | undefined;
  /** Algorithm of `devKey` (HS256, HS384 or HS512). Default HS256. */
  devKeyAlg?: string | undefined;
  /** Trust `X-Forwarded-*` headers from the reverse proxy in front of the hub. */
  trustProxy?: boolean | undefined;
  /** Public URL of the hub, used to resolve relative URL patterns and topics. */
  publicUrl?: string | undefined;
  /** Size of the verified-token cache (entries). Default 10 000; 0 disables. */
  tokenCacheSize?: number | undefined;
  /** Serve Prometheus metrics at /metrics. Default true. */
  metrics?: boolean | undefined;
  /** OpenTelemetry tracer (`trace.getTracer('quicksilver')`): spans for publish, subscribe and the subscriptions API. */
  tracer?: TracerLike | undefined;
  /** Structured logger; default a pino logger at `info`. */
  logger?: Logger | undefined;
  /**
   * Webhook subscribers (docs/webhooks.md): configured webhooks and the settings of all of them.
   * Given (even empty), the hub runs them and serves the API at /.well-known/mercure/webhooks.
   */
  webhooks?: WebhookOptions | undefined;
}
