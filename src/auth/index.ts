/**
 * Access-token logic of the hub: finding the token in a request (token.ts), verifying it with
 * static keys or JWK Sets (keys.ts, authorizer.ts), and turning its claims into grants
 * (grants.ts). Knows nothing of HTTP frameworks (it takes plain header strings) and reports
 * every failure as a value, never as a thrown exception. Two token shapes are understood:
 * draft-08 (RFC 9068 JWT access token, `typ: at+jwt`, rights in RFC 9396
 * `authorization_details`) and draft-07 (any JWS with a `mercure` claim); the caller decides
 * which it accepts, from `Grants.version`. May import core's matchers, observability/ and
 * util/; never http/, server/, config/ or transports/.
 */
export { Authorizer, type AuthorizerOptions } from './authorizer.js';
export {
  canPublish,
  canSubscribe,
  MAX_DETAIL_TOPICS,
  MAX_DETAILS,
  MAX_LEGACY_SELECTORS,
  MERCURE_DETAIL_TYPE,
  NAMESPACED_CLAIM,
  type Grants,
  type Role,
} from './grants.js';
export {
  JWT_ALGORITHMS,
  type IssuerOptions,
  type JwksTuning,
  type JwtAlgorithm,
  type KeyOptions,
} from './options.js';
export {
  extractToken,
  isAuthFailure,
  type AuthFailure,
  type PresentedToken,
  type TokenInput,
  type TokenSource,
} from './token.js';
