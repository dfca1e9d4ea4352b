/*
 * The form an update takes in the stream, and the digest that turns ids and subscription keys
 * into subject-safe tokens. Separate because every other NATS file reads or writes it: one
 * definition of the format, whichever path (live fan-out, replay, presence) touches it.
 */
import { createHash } from 'node:crypto';
import type { StoredUpdate, Update } from '../../core/update.js';

export const enc = new TextEncoder();
export const dec = new TextDecoder();

/** The wire form of an update: compact JSON, absent fields omitted. */
interface Wire {
  t: string[];
  d?: string;
  p?: 1;
  i: string;
  y?: string;
  r?: number;
}

export function encodeUpdate(u: Update): Uint8Array {
  const w: Wire = { t: [...u.topics], i: u.id };
  if (u.data !== '') w.d = u.data;
  if (u.private) w.p = 1;
  if (u.type) w.y = u.type;
  if (u.retry) w.r = u.retry;
  return enc.encode(JSON.stringify(w));
}

export function decodeUpdate(data: Uint8Array, seq: bigint): StoredUpdate {
  const w = JSON.parse(dec.decode(data)) as Partial<Wire>;
  if (!Array.isArray(w.t) || typeof w.i !== 'string') throw new Error('not a Quicksilver update');
  return Object.freeze({
    topics: Object.freeze(w.t.map(String)),
    data: typeof w.d === 'string' ? w.d : '',
    private: w.p === 1,
    id: w.i,
    type: typeof w.y === 'string' && w.y !== '' ? w.y : undefined,
    retry: typeof w.r === 'number' && w.r > 0 ? w.r : undefined,
    seq,
  });
}

/** 128-bit, subject-safe digest (base64url). */
export function digest(s: string): string {
  return createHash('sha256').update(s).digest('base64url').slice(0, 22);
}
