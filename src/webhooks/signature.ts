/**
 * The signature every webhook request carries, so that a receiver can tell a POST from this hub
 * (it knows the secret) from a forged one, and a fresh one from a replayed capture:
 *
 *   Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
 *
 * The timestamp is inside the MAC, so a receiver that refuses timestamps older than a few minutes
 * refuses replays; `v1` names the scheme so that a future one can be sent beside it.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'Webhook-Signature';
/** How far from now a receiver accepts a signature's timestamp by default (s). */
export const DEFAULT_TOLERANCE = 300;

export function signatureHeader(secret: string, body: string | Buffer, unixSeconds: number = Math.floor(Date.now() / 1000)): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.`).update(body).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/**
 * Checks a signature header against the raw body, as a receiver does (exported for Node
 * receivers and the tests). False on any malformed, stale or wrong signature.
 */
export function verifySignature(
  secret: string,
  body: string | Buffer,
  header: string | undefined,
  options: { tolerance?: number; now?: number } = {},
): boolean {
  if (!header) return false;
  let t: number | undefined;
  const macs: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k === 't' && /^\d{1,12}$/.test(v)) t = Number(v);
    else if (k === 'v1' && /^[0-9a-f]{64}$/.test(v)) macs.push(v);
  }
  if (t === undefined || macs.length === 0) return false;
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - t) > (options.tolerance ?? DEFAULT_TOLERANCE)) return false;
  const expected = createHmac('sha256', secret).update(`${t}.`).update(body).digest();
  return macs.some((m) => timingSafeEqual(Buffer.from(m, 'hex'), expected));
}
