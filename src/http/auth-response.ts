import { asciiQuoted, uriReference } from './header-value.js';
import { send, type Response } from './http-util.js';
import { RESOURCE_METADATA_PATH } from './resource-metadata.js';

export type AuthProblem =
  /** No token where one is needed. */
  | { kind: 'missing' }
  /** The token or its presentation is malformed (draft-08: 400 invalid_request). */
  | { kind: 'invalid_request'; message: string }
  /** The token failed validation. */
  | { kind: 'invalid_token'; message: string }
  /** A valid token that does not grant the operation. */
  | { kind: 'insufficient_scope'; message: string };

// error_description may quote token claims read before the signature is checked (an issuer):
// anything outside printable ASCII is percent-encoded, never written raw (RFC 6750 §3).
const quote = asciiQuoted;

/**
 * Answers an authorization failure. Draft-08 requests get RFC 6750 statuses and challenges;
 * draft-07 requests get the reference hub's plain 401, with the same challenge header added
 * (harmless to old clients) and a body that says what was wrong.
 */
export function sendAuthProblem(res: Response, problem: AuthProblem, version: 7 | 8, origin: string): void {
  // A URL, not text: its `%` escapes are kept (the host may hold them, as Go accepts), anything
  // a URI may not hold is percent-encoded, so the value is the URL the client asked under.
  const metadata = `resource_metadata="${uriReference(origin + RESOURCE_METADATA_PATH)}"`;
  let challenge = `Bearer ${metadata}`;
  let status = 401;
  let body = 'Unauthorized';
  if (problem.kind !== 'missing') {
    challenge += `, error=${quote(problem.kind)}, error_description=${quote(problem.message)}`;
    body = `Unauthorized: ${problem.message}`;
  } else {
    body = 'Unauthorized: no access token was presented';
  }
  if (version === 8) {
    if (problem.kind === 'invalid_request') {
      status = 400;
      body = `Bad Request: ${problem.message}`;
    } else if (problem.kind === 'insufficient_scope') {
      status = 403;
      body = `Forbidden: ${problem.message}`;
    }
  }
  send(res, status, body + '\n', { 'WWW-Authenticate': challenge });
}
