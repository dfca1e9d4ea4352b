import { afterEach, describe, expect, it } from 'vitest';
import type { Transport } from '../src/core/transport.js';
import { createUpdate, type StoredUpdate } from '../src/core/update.js';

/**
 * The contract every transport must keep, run against each implementation. `make` returns a
 * fresh transport on a fresh (empty) store; `reopen`, when given, returns a new instance on the
 * same store (persistence).
 */
export function transportConformance(
  name: string,
  make: (opts?: { size?: number }) => Promise<Transport>,
  options: { reopen?: () => Promise<Transport>; skip?: boolean } = {},
): void {
  describe.skipIf(options.skip ?? false)(`${name} transport contract`, () => {
    const open: Transport[] = [];
    afterEach(async () => {
      for (const t of open.splice(0)) await t.close().catch(() => {});
    });
    const start = async (t: Transport): Promise<StoredUpdate[]> => {
      open.push(t);
      const got: StoredUpdate[] = [];
      await t.start((u) => got.push(u));
      return got;
    };
    const u = (id: string, topic = 'https://example.com/t') => createUpdate({ topics: [topic], id, data: `data ${id}` });
    const waitFor = async (cond: () => boolean, ms = 5000) => {
      const end = Date.now() + ms;
      while (!cond()) {
        if (Date.now() > end) throw new Error('timeout');
        await new Promise((r) => setTimeout(r, 10));
      }
    };

    it('delivers each dispatched update once, in order, with increasing seq', async () => {
      const t = await make();
      const got = await start(t);
      for (let i = 0; i < 50; i++) await t.dispatch(u(`id-${i}`));
      await waitFor(() => got.length >= 50);
      await new Promise((r) => setTimeout(r, 50));
      expect(got.map((g) => g.id)).toEqual(Array.from({ length: 50 }, (_, i) => `id-${i}`));
      for (let i = 1; i < got.length; i++) expect(got[i]!.seq > got[i - 1]!.seq).toBe(true);
    });

    it('keeps every field of the update', async () => {
      const t = await make();
      const got = await start(t);
      const up = createUpdate({ topics: ['a', 'b'], id: 'x', data: 'l1\nl2\r\né', private: true, type: 'ty', retry: 42 });
      await t.dispatch(up);
      await waitFor(() => got.length >= 1);
      const g = got[0]!;
      expect({ topics: g.topics, id: g.id, data: g.data, private: g.private, type: g.type, retry: g.retry }).toEqual({
        topics: ['a', 'b'], id: 'x', data: 'l1\nl2\r\né', private: true, type: 'ty', retry: 42,
      });
      const replayed: StoredUpdate[] = [];
      await t.history('earliest', (r) => replayed.push(r));
      expect(replayed[0]).toMatchObject({ topics: ['a', 'b'], id: 'x', private: true, type: 'ty', retry: 42 });
    });

    it('replays history after an id, from earliest, and reports unknown ids', async () => {
      const t = await make();
      await start(t);
      for (let i = 0; i < 10; i++) await t.dispatch(u(`h-${i}`));
      const after: string[] = [];
      expect(await t.history('h-6', (r) => after.push(r.id))).toEqual({ found: true });
      expect(after).toEqual(['h-7', 'h-8', 'h-9']);
      const all: string[] = [];
      expect(await t.history('earliest', (r) => all.push(r.id))).toEqual({ found: true });
      expect(all).toHaveLength(10);
      const none: string[] = [];
      expect(await t.history('nope', (r) => none.push(r.id))).toEqual({ found: false });
      expect(none).toEqual([]);
      expect(await t.lastEventId()).toBe('h-9');
    });

    it('resolves a reused id to its earliest occurrence, or stores it once within the dedupe window', async () => {
      const t = await make();
      await start(t);
      await t.dispatch(u('dup'));
      await t.dispatch(u('mid'));
      const again = await t.dispatch(u('dup'));
      await t.dispatch(u('end'));
      const after: string[] = [];
      await t.history('dup', (r) => after.push(r.id));
      // Window 0 is the reference hub's behaviour; test/publish-dedupe.test.ts covers both on every transport.
      if ((t.dedupeWindow ?? 0) > 0) {
        expect(again).toBe('duplicate');
        expect(after).toEqual(['mid', 'end']);
      } else {
        expect(after).toEqual(['mid', 'dup', 'end']);
      }
    });

    it('bounds history to its configured size', async () => {
      const t = await make({ size: 5 });
      await start(t);
      for (let i = 0; i < 20; i++) await t.dispatch(u(`b-${i}`));
      // Bounded, approximately for stores that trim lazily, never unbounded.
      const all: string[] = [];
      await t.history('earliest', (r) => all.push(r.id));
      expect(all.length).toBeGreaterThanOrEqual(5);
      expect(all.length).toBeLessThanOrEqual(20);
      expect(all.slice(-5)).toEqual(['b-15', 'b-16', 'b-17', 'b-18', 'b-19']);
      expect(t.historySize()).toBeLessThanOrEqual(all.length);
    });

    it('starts with an empty history and reports earliest', async () => {
      const t = await make();
      await start(t);
      expect(await t.lastEventId()).toBe('earliest');
      const all: string[] = [];
      expect(await t.history('earliest', (r) => all.push(r.id))).toEqual({ found: true });
      expect(all).toEqual([]);
      expect(t.health().ready).toBe(true);
    });

    it.skipIf(!options.reopen)('keeps acknowledged updates across a reopen', async () => {
      const t = await make();
      await start(t);
      for (let i = 0; i < 5; i++) await t.dispatch(u(`p-${i}`));
      await t.close();
      const t2 = await options.reopen!();
      await start(t2);
      const all: string[] = [];
      await t2.history('earliest', (r) => all.push(r.id));
      expect(all).toEqual(['p-0', 'p-1', 'p-2', 'p-3', 'p-4']);
      expect(await t2.lastEventId()).toBe('p-4');
    });
  });
}
