/**
 * Configuration shapes of token verification: the algorithms and keys each role's tokens are
 * checked with. Plain data kept apart from the verifiers so that config/ and http/ (which
 * re-exports them as part of HubOptions) can name them without loading jose.
 */

/** JWS algorithms a key can be pinned to. */
export type JwtAlgorithm =
  | 'HS256' | 'HS384' | 'HS512'
  | 'RS256' | 'RS384' | 'RS512'
  | 'PS256' | 'PS384' | 'PS512'
  | 'ES256' | 'ES384' | 'ES512'
  | 'EdDSA';

export const JWT_ALGORITHMS: readonly JwtAlgorithm[] = [
  'HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512', 'EdDSA',
];

/** How tokens of one role (publisher or subscriber) are verified. */
export interface KeyOptions {
  /** HMAC secret, or a PEM public key (SPKI or certificate) for asymmetric algorithms. */
  key?: string | undefined;
  /** Pinned algorithm; a token with another `alg` is rejected. Default HS256. */
  algorithm?: JwtAlgorithm | undefined;
  /** JWK Set URL (`https://`, `http://` or `file://`); takes precedence over `key`. */
  jwksUrl?: string | undefined;
}

/** A trusted draft-08 token issuer (RFC 9068 `iss`), with its own keys per role. */
export interface IssuerOptions {
  issuer: string;
  publisher?: KeyOptions | undefined;
  subscriber?: KeyOptions | undefined;
}

/** Tuning of remote JWK Sets, in ms. */
export interface JwksTuning {
  timeoutDuration?: number;
  cooldownDuration?: number;
  cacheMaxAge?: number;
}
