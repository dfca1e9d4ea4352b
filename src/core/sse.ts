import type { Update } from './update.js';

/** The comment that opens every stream (flushes headers through proxies) and serves as heartbeat. */
export const COMMENT = Buffer.from(':\n');

const LINE_BREAK = /\r\n|\r|\n/;

/**
 * Serialises an update as one SSE event: `event`, `retry`, `id`, then one `data:` line per line of
 * the payload, split on CR, LF or CRLF so no payload can inject a field. Built once per update and
 * shared by every subscriber that receives it.
 */
export function serializeUpdate(update: Update): Buffer {
  let s = '';
  if (update.type) s += `event: ${update.type}\n`;
  if (update.retry) s += `retry: ${update.retry}\n`;
  s += `id: ${update.id}\n`;
  const data = update.data;
  if (data.indexOf('\n') < 0 && data.indexOf('\r') < 0) {
    s += `data: ${data}\n`;
  } else {
    for (const line of data.split(LINE_BREAK)) s += `data: ${line}\n`;
  }
  s += '\n';
  return Buffer.from(s);
}

/** A standalone `retry:` field, sent before closing a stream to steer reconnection. */
export function retryFrame(ms: number): Buffer {
  return Buffer.from(`retry: ${Math.max(0, Math.floor(ms))}\n\n`);
}
