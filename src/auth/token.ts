/**
 * Finding the token a request presents: the `Authorization` header, the `authorization` query
 * parameter or a cookie. Takes plain header strings (no HTTP framework) and reports a malformed
 * presentation as an `AuthFailure` value, never as a thrown exception.
 */
import type { Grants } from './grants.js';

export type TokenSource = 'header' | 'cookie' | 'query';

export interface PresentedToken {
  readonly token: string;
  readonly source: TokenSource;
}

/**
 * A token that cannot be used. `invalid_request`: the presentation is malformed (400);
 * `invalid_token`: the token is not acceptable (401). `message` is for logs only: it never
 * contains the token, and should not be sent to clients (RFC 6750 advises not to say why).
 */
export interface AuthFailure {
  readonly error: 'invalid_request' | 'invalid_token';
  readonly message: string;
}

export interface TokenInput {
  /** The `Authorization` header value(s) (several values = several headers, refused). */
  authorization?: string | readonly string[] | undefined;
  /** The `Cookie` header. */
  cookie?: string | undefined;
  /** The `authorization` query parameter value(s); pass it only where draft-07 is accepted. */
  queryToken?: string | readonly string[] | undefined;
}

export function isAuthFailure(value: Grants | AuthFailure | PresentedToken | null): value is AuthFailure {
  return value !== null && 'error' in value;
}

// RFC 7235 token68: the charset of a Bearer credential (covers every JWS compact serialization).
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Finds the presented token. Precedence: the `Authorization` header (the cookie and query are
 * then ignored), then the `authorization` query parameter (draft-07: it wins over the cookie),
 * then the first of `cookieNames` present in the `Cookie` header. `null` = anonymous.
 */
export function extractToken(input: TokenInput, cookieNames: readonly string[]): PresentedToken | AuthFailure | null {
  const header = input.authorization;
  if (header !== undefined) {
    const values = typeof header === 'string' ? [header] : header;
    if (values.length > 1) return invalidRequest('more than one Authorization header');
    if (values.length === 1) {
      const value = values[0]!.trim();
      const space = value.indexOf(' ');
      // `Bearer $TOKEN` with TOKEN unset: say so, not that the scheme is wrong.
      if (value.toLowerCase() === 'bearer') return invalidRequest('the bearer token is empty (Authorization: Bearer with no token after it)');
      if (space < 0 || value.slice(0, space).toLowerCase() !== 'bearer') {
        return invalidRequest('Authorization header does not use the Bearer scheme');
      }
      const token = value.slice(space + 1).trim();
      if (!TOKEN68.test(token)) return invalidRequest('malformed Bearer credentials in the Authorization header');
      return { token, source: 'header' };
    }
  }

  const query = input.queryToken;
  if (query !== undefined) {
    const values = typeof query === 'string' ? [query] : query;
    if (values.length > 1) return invalidRequest('more than one authorization query parameter');
    if (values.length === 1) {
      const token = values[0]!;
      if (!TOKEN68.test(token)) return invalidRequest('malformed authorization query parameter');
      return { token, source: 'query' };
    }
  }

  if (input.cookie && cookieNames.length > 0) {
    const cookies = parseCookies(input.cookie);
    for (const name of cookieNames) {
      const value = cookies.get(name);
      // An emptied cookie (a logout that could not delete it) is no token.
      if (value) return { token: value, source: 'cookie' };
    }
  }
  return null;
}

/** First value of each cookie name (browsers send the most specific path first). */
function parseCookies(header: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    if (name && !out.has(name)) out.set(name, value);
  }
  return out;
}

function invalidRequest(message: string): AuthFailure {
  return Object.freeze({ error: 'invalid_request' as const, message });
}
