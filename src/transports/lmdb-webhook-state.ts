/*
 * The LMDB store's webhook state: registrations and per-webhook state in the store's `webhooks`
 * database (`r:<name>` → registration, `s:<name>` → state), written through lmdb-js's durable,
 * batched writes like updates are, so that a cursor acknowledged before a crash is there after
 * it. Leases are the owning process's (see webhook-state.ts): one process owns an LMDB store.
 */
import type { Database, RootDatabase } from 'lmdb';
import type { WebhookRegistration, WebhookState } from '../core/webhook-store.js';
import { InProcessWebhookStore, type WebhookBacking } from './webhook-state.js';

type Row = { r: WebhookRegistration } | { s: WebhookState };

/** A webhook store on the `webhooks` database of an open LMDB environment (`root()` null until open). */
export function lmdbWebhookStore(root: () => RootDatabase | null): InProcessWebhookStore {
  let db: Database<Row, string> | null = null;
  const open = (): Database<Row, string> => {
    if (db) return db;
    const r = root();
    if (!r) throw new Error('the LMDB store is not open');
    db = r.openDB<Row, string>({ name: 'webhooks', encoding: 'msgpack' });
    return db;
  };
  const backing: WebhookBacking = {
    load() {
      const registrations: WebhookRegistration[] = [];
      const states: Array<[string, WebhookState]> = [];
      for (const { key, value } of open().getRange()) {
        if ('r' in value) registrations.push(value.r);
        else if ('s' in value && key.startsWith('s:')) states.push([key.slice(2), { cursor: value.s.cursor ?? undefined, status: value.s.status ?? undefined, nudge: value.s.nudge ?? 0 }]);
      }
      return { registrations, states };
    },
    async putRegistration(r) {
      await open().put(`r:${r.name}`, { r });
    },
    async putState(name, s) {
      // msgpack keeps undefined as nil: store nulls explicitly so reading back is unambiguous.
      await open().put(`s:${name}`, { s: { cursor: s.cursor ?? null, status: s.status ?? null, nudge: s.nudge } as unknown as WebhookState });
    },
    async remove(name) {
      const d = open();
      await d.remove(`r:${name}`);
      await d.remove(`s:${name}`);
    },
  };
  return new InProcessWebhookStore(backing);
}
