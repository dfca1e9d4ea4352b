/**
 * How clients obtain a token per request. Dependency-free (no jose), so the subscriber can use it
 * in a browser without a bundler.
 */

/** Supplies tokens; `invalidate()` (optional) drops a cached one. */
export interface TokenFactory {
  getToken(): string | Promise<string>;
  invalidate?(): void;
}

/** A fixed token, a function returning one, or a `TokenFactory`. Resolved once per request. */
export type TokenSource = string | (() => string | Promise<string>) | TokenFactory;

/** Thrown when a token cannot be obtained or built. */
export class TokenError extends Error {
  override readonly name = 'TokenError';
}

/** Resolves a `TokenSource` to a token for one request (undefined: no token). */
export async function resolveToken(source: TokenSource | undefined): Promise<string | undefined> {
  if (source === undefined) return undefined;
  if (typeof source === 'string') return source;
  const token = typeof source === 'function' ? await source() : await source.getToken();
  if (typeof token !== 'string' || token === '') throw new TokenError('The token provider returned no token');
  return token;
}

function base64UrlDecode(s: string): string {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4);
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

/** The `exp` of a JWT in epoch ms, or undefined (no exp, or not a JWT). Verifies nothing. */
export function tokenExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return undefined;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1])) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
