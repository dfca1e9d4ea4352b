/*
 * Webhook state across the worker cluster: a worker's runner reaches the primary's transport
 * store with `wh` requests (method name and arguments), so that leases, cursors and
 * registrations have one owner, the primary's transport, whichever worker delivers a webhook.
 * Leases expire there too: a worker that dies hands its webhooks to another when they run out.
 */
import type { WebhookRegistration, WebhookState, WebhookStore } from '../../core/webhook-store.js';

export type WebhookMethod = 'register' | 'unregister' | 'registrations' | 'states' | 'acquire' | 'renew' | 'release' | 'commit' | 'nudge';
const METHODS: ReadonlySet<string> = new Set<WebhookMethod>(['register', 'unregister', 'registrations', 'states', 'acquire', 'renew', 'release', 'commit', 'nudge']);

/** A store whose every call is a request to the primary. */
export function remoteWebhookStore(call: (m: WebhookMethod, a: unknown[]) => Promise<unknown>): WebhookStore {
  return {
    register: async (r, cursor) => (await call('register', [r, cursor])) as boolean,
    unregister: async (name) => (await call('unregister', [name])) as boolean,
    registrations: async () => (await call('registrations', [])) as WebhookRegistration[],
    // A Map does not survive JSON: it travels as entries.
    states: async (names) => new Map((await call('states', [names])) as Array<[string, WebhookState]>),
    acquire: async (name, owner, ttl) => (await call('acquire', [name, owner, ttl])) as number | null,
    renew: async (name, owner, fence, ttl) => (await call('renew', [name, owner, fence, ttl])) as boolean,
    release: async (name, owner, fence) => void (await call('release', [name, owner, fence])),
    commit: async (name, owner, fence, change) => (await call('commit', [name, owner, fence, change])) as boolean,
    nudge: async (name) => void (await call('nudge', [name])),
  };
}

/** Runs a worker's request on the primary's store; the answer is JSON-safe. */
export async function answerWebhookCall(store: WebhookStore | undefined, m: string, a: unknown[]): Promise<unknown> {
  if (!store) throw new Error('this transport does not keep webhook state; use memory, lmdb, redis, postgres or nats');
  if (!METHODS.has(m) || !Array.isArray(a)) throw new Error(`unknown webhook store call ${m}`);
  const fn = (store as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>)[m] as (...args: unknown[]) => Promise<unknown>;
  const result = await fn.apply(store, a);
  if (result instanceof Map) return [...result];
  return result ?? null;
}
