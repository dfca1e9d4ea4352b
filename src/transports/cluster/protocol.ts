/*
 * The IPC message protocol of the worker cluster, shared by both ends: the op types, the wire
 * form of an update and the limits that size the exchange. Kept apart so that the primary
 * (primary.ts) and the worker (worker.ts) depend on one definition and not on each other.
 *
 * Every IPC message is an envelope `{ qs: Op[] }`: the operations posted during one event-loop
 * turn travel together (one JSON round per turn instead of one per update, which is what the
 * channel spends its time on). Ops:
 *
 *   worker → primary                        primary → worker
 *   hello                                   welcome {name, size, health, dw}
 *   pub  {i, u}        dispatch             ok {i, v?} | err {i, m, s?}   (answers, by request id;
 *                                           v 'duplicate', s 'no' = certainly not stored)
 *   hist {i, a}        history after a      hc {i, u[]}…  then ok {i, v: found}
 *   last {i}           lastEventId          d {u[]}       deliveries, in seq order
 *   add/rm {i, r[]}    presence             st {size, health}   pushed when they change
 *   list {i}           presence listing
 *   bye                closing: stop delivering
 *   mx {i, s}          the hub's metrics          ok {i, v: Prometheus text}
 *                      (s: the asking worker's snapshot; the primary asks the others:)
 *   msr {i, s}         this worker's snapshot  ←  ms {i}
 *   lim {c?, r?}       limits changed here     →  lim {c?, r?} to every other worker
 *   wh {i, m, a}       webhook store call      ok {i, v} | err {i, m}   (see webhook-relay.ts)
 *
 * Updates travel as tuples (`Wire`) with the seq as a decimal string (JSON has no bigint).
 * `lim` carries connection deltas by client address (`c`) and publish-rate tokens taken by key
 * (`r`), so that protective limits hold for the whole hub (see http/limits.ts).
 */
import type { MetricsSnapshot } from '../../observability/metrics.js';
import type { StoredOutcome, SubscriptionRecord, TransportHealth } from '../../core/transport.js';
import { createUpdate, type StoredUpdate, type Update } from '../../core/update.js';

/** `[seq, id, topics, data, private, type, retry]`; seq is '' in dispatch requests. */
export type Wire = [seq: string, id: string, topics: readonly string[], data: string, priv: 0 | 1, type: string | null, retry: number];

export type WorkerOp =
  | { t: 'hello' }
  | { t: 'pub'; i: number; u: Wire }
  | { t: 'hist'; i: number; a: string }
  | { t: 'last'; i: number }
  | { t: 'add' | 'rm'; i: number; r: SubscriptionRecord[] }
  | { t: 'list'; i: number }
  | { t: 'bye' }
  | { t: 'mx'; i: number; s: MetricsSnapshot }
  | { t: 'msr'; i: number; s: MetricsSnapshot | null }
  | { t: 'lim'; c?: Array<[string, number]>; r?: Array<[string, number]> }
  | { t: 'wh'; i: number; m: string; a: unknown[] };

export type PrimaryOp =
  | { t: 'welcome'; name: string; size: number; health: TransportHealth; dw?: number; wh?: boolean }
  | { t: 'd'; u: Wire[] }
  | { t: 'st'; size: number; health: TransportHealth }
  | { t: 'ok'; i: number; v?: unknown }
  | { t: 'err'; i: number; m: string; s?: StoredOutcome }
  | { t: 'hc'; i: number; u: Wire[] }
  | { t: 'ms'; i: number }
  | { t: 'lim'; c?: Array<[string, number]>; r?: Array<[string, number]> };

/**
 * What a `lim` op carries to a worker, by client address or rate key: connection deltas or
 * tokens taken. Structurally http/limits.ts's `LimitChanges`, declared here because transports
 * do not import the HTTP layer.
 */
export type PeerLimitChanges = ReadonlyArray<readonly [key: string, amount: number]>;

/** Most updates per IPC message (deliveries and history chunks), so no message gets huge. */
export const CLUSTER_CHUNK = 500;
/** How long a worker waits for an answer from the primary (reset by each history chunk). */
export const CLUSTER_REQUEST_TIMEOUT = 10_000;
/**
 * How long the primary waits for each worker's metrics during a scrape: a worker whose event loop
 * is stuck must not hang the scrape (its numbers are left out; the answered-workers gauge says so).
 */
export const CLUSTER_METRICS_TIMEOUT = 1_000;

/** Ops carried by an IPC message, or null when the message is not ours. */
export function clusterOps(message: unknown): Array<{ t: string }> | null {
  if (typeof message !== 'object' || message === null) return null;
  const ops = (message as { qs?: unknown }).qs;
  return Array.isArray(ops) ? (ops as Array<{ t: string }>) : null;
}

export function toWire(u: Update, seq: string): Wire {
  return [seq, u.id, u.topics, u.data, u.private ? 1 : 0, u.type || null, u.retry || 0];
}

export function updateFromWire(w: Wire): Update {
  return createUpdate({ topics: w[2], data: w[3], private: w[4] === 1, id: w[1], type: w[5] ?? undefined, retry: w[6] });
}

export function storedFromWire(w: Wire): StoredUpdate {
  return Object.freeze({
    topics: Object.freeze(w[2]),
    data: w[3],
    private: w[4] === 1,
    id: w[1],
    type: w[5] || undefined,
    retry: w[6] || undefined,
    seq: BigInt(w[0]),
  });
}
