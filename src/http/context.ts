import type { Authorizer } from '../auth/index.js';
import type { Hub } from '../core/hub.js';
import type { Logger } from '../observability/logger.js';
import type { ConnectionLimiter, RateLimiter } from './limits.js';

/** Settings after defaults, as the HTTP layer reads them on every request. */
export interface ResolvedOptions {
  anonymous: boolean;
  corsOrigins: readonly string[];
  publishOrigins: readonly string[];
  cookieName: string;
  subscriptions: boolean;
  heartbeat: number;
  writeTimeout: number;
  dispatchTimeout: number;
  subscriberBufferSize: number;
  maxBodySize: number;
  maxTopics: number;
  maxMatchers: number;
  trustProxy: boolean;
  publicUrl: string | undefined;
  resourceIdentifier: string | undefined;
  authorizationServers: readonly string[];
  /** A publisher key (or JWKS/issuer) is configured: the publish endpoint exists. */
  publishEnabled: boolean;
  /** A subscriber key is configured: tokens can be verified on the subscribe side. */
  subscriberKey: boolean;
  ui: boolean;
  demo: boolean;
}

/** What every request handler needs. */
export interface HubContext {
  readonly hub: Hub;
  readonly authorizer: Authorizer;
  readonly options: ResolvedOptions;
  readonly log: Logger;
  readonly connections: ConnectionLimiter;
  readonly publishRate: RateLimiter;
  /** Set once SIGTERM/close started: new subscriptions are refused. */
  draining: boolean;
}
