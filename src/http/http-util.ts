import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { HUB_PATH } from '../core/subscription.js';

/** Both HTTP/1.1 and HTTP/2 (compatibility API) requests and responses are served by one code path. */
export type Request = IncomingMessage | Http2ServerRequest;
export type Response = ServerResponse | Http2ServerResponse;

export function header(req: Request, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export function isHttp2(req: Request): boolean {
  return req.httpVersionMajor >= 2;
}

/** Scheme and host the client used, honouring X-Forwarded-* only when told to trust the proxy. */
export function origin(req: Request, trustProxy: boolean): string {
  let proto = (req.socket as TLSSocket | undefined)?.encrypted ? 'https' : 'http';
  let host = header(req, ':authority') ?? header(req, 'host') ?? 'localhost';
  if (trustProxy) {
    const fp = header(req, 'x-forwarded-proto')?.split(',')[0]?.trim();
    const fh = header(req, 'x-forwarded-host')?.split(',')[0]?.trim();
    if (fp === 'http' || fp === 'https') proto = fp;
    if (fh) host = fh;
  }
  return `${proto}://${host}`;
}

export function hubUrl(req: Request, trustProxy: boolean): string {
  return origin(req, trustProxy) + HUB_PATH;
}

export function clientIp(req: Request, trustProxy: boolean): string {
  if (trustProxy) {
    // The trusted proxy appends the address it saw: the rightmost entry. Entries to its left come
    // from the client and could be forged to dodge per-address limits.
    const xff = header(req, 'x-forwarded-for');
    if (xff) {
      const parts = xff.split(',');
      const last = parts[parts.length - 1]!.trim();
      if (last) return last;
    }
  }
  return req.socket?.remoteAddress ?? 'unknown';
}

export class BodyTooLargeError extends Error {}

/** Reads the body up to `limit` bytes; rejects with BodyTooLargeError beyond (and stops reading). */
export function readBody(req: Request, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(header(req, 'content-length') ?? NaN);
    if (declared > limit) {
      reject(new BodyTooLargeError(`request body of ${declared} bytes exceeds the ${limit}-byte limit`));
      return;
    }
    // The raw-socket path has read the whole body with the head already.
    const raw = (req as { rawBody?: Buffer | null }).rawBody;
    if (raw) {
      if (raw.length > limit) reject(new BodyTooLargeError(`request body exceeds the ${limit}-byte limit`));
      else resolve(raw);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        reject(new BodyTooLargeError(`request body exceeds the ${limit}-byte limit`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    });
    req.on('error', (err) => {
      if (!failed) reject(err);
    });
  });
}

export function send(
  res: Response,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const h: Record<string, string | number> = {
    'Content-Type': 'text/plain; charset=utf-8',
    ...headers,
  };
  if (ASCII.test(body)) {
    // One write for head and body: node:http joins a string body to the head and encodes both
    // with the body's encoding. Latin-1 keeps header bytes above 0x7F as they are
    // (header-value.ts) and is UTF-8 for an ASCII body. A Buffer would cost a writev of two.
    h['Content-Length'] = body.length;
    (res as ServerResponse).writeHead(status, h);
    res.end(body, 'latin1');
    return;
  }
  const bytes = Buffer.from(body);
  h['Content-Length'] = bytes.length;
  (res as ServerResponse).writeHead(status, h);
  // A Buffer, not the string: with 'utf8' node:http would double-encode header bytes above 0x7F.
  res.end(bytes);
}

const ASCII = /^[\x00-\x7f]*$/;

export function sendJson(res: Response, status: number, doc: unknown, headers: Record<string, string> = {}): void {
  send(res, status, JSON.stringify(doc), { 'Content-Type': 'application/json', ...headers });
}
