/*
 * The stream entry format: how an update is laid out in the fields of one Redis Stream entry
 * (i id, t topics as JSON, d data, p private 1/0, y type, r retry) and how an entry id becomes the
 * update's `seq`. Writer, reader and replay all go through here, so they agree on both.
 */
import type { Logger } from '../../observability/logger.js';
import type { StoredUpdate, Update } from '../../core/update.js';

/** `seq` of an entry: its id `ms-n` as `(ms << 64) | n`, which keeps stream order exactly. */
export function entrySeq(eid: string): bigint {
  const dash = eid.indexOf('-');
  return (BigInt(eid.slice(0, dash)) << 64n) | BigInt(eid.slice(dash + 1));
}

/** The entry fields (name, value, name, value…) holding an update. */
export function entryFields(update: Update): string[] {
  const fields: string[] = ['i', update.id, 't', JSON.stringify(update.topics), 'd', update.data, 'p', update.private ? '1' : '0'];
  if (update.type) fields.push('y', update.type);
  if (update.retry) fields.push('r', String(update.retry));
  return fields;
}

/** The update id of an entry, if it has one. */
export function entryUpdateId(fields: string[]): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'i') return fields[i + 1]!;
  return undefined;
}

/** The update held by an entry, or null (logged) when the entry is not a Quicksilver update. */
export function parseEntry(eid: string, fields: string[], stream: string, logger: Logger | undefined): StoredUpdate | null {
  let id: string | undefined;
  let topics: string[] | undefined;
  let data = '';
  let priv = false;
  let type: string | undefined;
  let retry: number | undefined;
  try {
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const v = fields[i + 1]!;
      switch (fields[i]) {
        case 'i': id = v; break;
        case 't': topics = JSON.parse(v) as string[]; break;
        case 'd': data = v; break;
        case 'p': priv = v === '1'; break;
        case 'y': type = v || undefined; break;
        case 'r': retry = Number(v) || undefined; break;
      }
    }
  } catch {
    topics = undefined;
  }
  if (id === undefined || !Array.isArray(topics) || topics.length === 0) {
    logger?.warn({ stream, entry: eid }, 'skipping a stream entry that is not a Quicksilver update');
    return null;
  }
  return Object.freeze({
    topics: Object.freeze(topics.map(String)),
    data,
    private: priv,
    id,
    type,
    retry,
    seq: entrySeq(eid),
  });
}
