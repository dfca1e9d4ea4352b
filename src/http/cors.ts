import type { Request, Response } from './http-util.js';
import { header } from './http-util.js';
import { isOrigin } from './header-value.js';

const ALLOW_HEADERS = 'authorization, cache-control, last-event-id, content-type';
const ALLOW_METHODS = 'GET, HEAD, POST, QUERY, OPTIONS';
const EXPOSE_HEADERS = 'Link, Last-Event-ID, Mercure-Last-Event-ID, ETag, WWW-Authenticate';

export function originAllowed(allowed: readonly string[], origin: string): boolean {
  for (const a of allowed) {
    if (a === '*' || a === origin) return true;
    const star = a.indexOf('*');
    // `https://*.example.com`: one wildcard, matching at least one character.
    if (star >= 0 && a.indexOf('*', star + 1) < 0) {
      const head = a.slice(0, star);
      const tail = a.slice(star + 1);
      if (origin.length > head.length + tail.length && origin.startsWith(head) && origin.endsWith(tail)) {
        return true;
      }
    }
  }
  return false;
}

/**
 * Applies CORS headers. Credentials (the cookie) are allowed, so the allowed origin is echoed
 * rather than `*`. Returns true when the request was a preflight and has been answered.
 */
export function applyCors(req: Request, res: Response, allowed: readonly string[]): boolean {
  const origin = header(req, 'origin');
  // Echoed into Access-Control-Allow-Origin: only a real origin, whatever a wildcard would match.
  if (!origin || allowed.length === 0 || !isOrigin(origin) || !originAllowed(allowed, origin)) {
    if (req.method === 'OPTIONS' && header(req, 'access-control-request-method')) {
      res.statusCode = 204;
      res.end();
      return true;
    }
    return false;
  }
  res.setHeader('Access-Control-Allow-Origin', origin);
  res.setHeader('Access-Control-Allow-Credentials', 'true');
  res.setHeader('Vary', 'Origin');
  if (req.method === 'OPTIONS' && header(req, 'access-control-request-method')) {
    res.setHeader('Access-Control-Allow-Methods', ALLOW_METHODS);
    res.setHeader('Access-Control-Allow-Headers', ALLOW_HEADERS);
    res.setHeader('Access-Control-Max-Age', '86400');
    res.statusCode = 204;
    res.end();
    return true;
  }
  res.setHeader('Access-Control-Expose-Headers', EXPOSE_HEADERS);
  return false;
}
