/**
 * Per-turn batching of deliveries (src/delivery-batch.ts): updates delivered in one turn reach
 * each subscriber as one write, in order; subscribers that got the same updates share one
 * buffer; the slow-subscriber limit still counts updates, not writes; a clean close still sends
 * the turn's updates. The end-to-end behaviour (ordering, replay stitching, no loss) is covered
 * over real sockets by replay.test.ts and delivery-property.test.ts; here the sink is a recorder.
 */
import { describe, expect, it } from 'vitest';
import { DeliveryBatch, FrameRun } from '../src/core/delivery-batch.js';
import { Subscriber, type SubscriberSink } from '../src/core/subscriber.js';
import type { StoredUpdate } from '../src/core/update.js';

class RecordingSink implements SubscriberSink {
  writes: Buffer[] = [];
  ended = false;
  destroyed = false;
  accept = true;
  write(chunk: Buffer): boolean {
    this.writes.push(chunk);
    return this.accept;
  }
  end(): void {
    this.ended = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
}

function subscriber(sink: SubscriberSink, bufferSize = 100): Subscriber {
  const sub = new Subscriber({ id: 'urn:uuid:test', version: 7, matchers: [], grants: null, sink, bufferSize, deadline: 0 });
  sub.endReplay([], -1n);
  return sub;
}

const update = (seq: number): StoredUpdate => ({ seq: BigInt(seq) }) as StoredUpdate;
const frame = (n: number): Buffer => Buffer.from(`id: ${n}\ndata: ${n}\n\n`);
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('DeliveryBatch', () => {
  it('writes a turn\'s updates to each subscriber in one write, in delivery order', async () => {
    const batch = new DeliveryBatch();
    const sink = new RecordingSink();
    const sub = subscriber(sink);
    const frames = [frame(1), frame(2), frame(3)];
    frames.forEach((f, i) => sub.deliver(update(i + 1), f, batch));
    expect(sink.writes).toEqual([]);
    await nextTurn();
    expect(sink.writes.map(String)).toEqual([Buffer.concat(frames).toString()]);
    sub.deliver(update(4), frame(4), batch);
    await nextTurn();
    expect(sink.writes.map(String)).toEqual([Buffer.concat(frames).toString(), frame(4).toString()]);
  });

  it('shares one buffer between subscribers that got the same updates, and keeps different sequences apart', async () => {
    const batch = new DeliveryBatch();
    const [a, b, c] = [new RecordingSink(), new RecordingSink(), new RecordingSink()];
    const [sa, sb, sc] = [subscriber(a), subscriber(b), subscriber(c)];
    const [f1, f2, f3] = [frame(1), frame(2), frame(3)];
    for (const s of [sa, sb, sc]) s.deliver(update(1), f1, batch);
    sa.deliver(update(2), f2, batch);
    sb.deliver(update(2), f2, batch);
    sc.deliver(update(3), f3, batch);
    await nextTurn();
    expect(a.writes[0]).toBe(b.writes[0]); // the same Buffer object: concatenated once
    expect(String(a.writes[0])).toBe(String(Buffer.concat([f1, f2])));
    expect(String(c.writes[0])).toBe(String(Buffer.concat([f1, f3])));
  });

  it('a single update is written as is, without a copy', async () => {
    const batch = new DeliveryBatch();
    const sink = new RecordingSink();
    const f = frame(7);
    subscriber(sink).deliver(update(7), f, batch);
    await nextTurn();
    expect(sink.writes[0]).toBe(f);
  });

  it('counts batched updates against the slow-subscriber buffer', async () => {
    const batch = new DeliveryBatch();
    const sink = new RecordingSink();
    const sub = subscriber(sink, 5);
    sink.accept = false;
    sub.deliver(update(1), frame(1), batch);
    await nextTurn(); // written; the sink reports saturation: from now on updates are queued
    for (let i = 2; i <= 4; i++) sub.deliver(update(i), frame(i), batch);
    await nextTurn(); // 3 queued
    expect(sub.queued).toBe(3);
    expect(sub.closed).toBe(false);
    for (let i = 5; i <= 7; i++) sub.deliver(update(i), frame(i), batch);
    await nextTurn(); // 3 more would make 6 > 5
    expect(sub.closed).toBe(true);
    expect(sub.closeReason).toBe('slow');
    expect(sink.destroyed).toBe(true);
  });

  it('a clean close sends the updates of the turn first; a slow cut does not', () => {
    const batch = new DeliveryBatch();
    const clean = new RecordingSink();
    const cut = new RecordingSink();
    const s1 = subscriber(clean);
    const s2 = subscriber(cut);
    s1.deliver(update(1), frame(1), batch);
    s2.deliver(update(1), frame(1), batch);
    s1.close('shutdown', Buffer.from('retry: 1000\n\n'));
    s2.close('slow');
    expect(clean.writes.map(String)).toEqual([frame(1).toString(), 'retry: 1000\n\n']);
    expect(clean.ended).toBe(true);
    expect(cut.writes).toEqual([]);
    batch.flush(); // nothing more for either
    expect(clean.writes).toHaveLength(2);
    expect(cut.writes).toEqual([]);
  });

  it('FrameRun concatenates long runs once', () => {
    const root = new FrameRun(null, null);
    const frames = Array.from({ length: 50 }, (_, i) => frame(i));
    let run = root;
    for (const f of frames) run = run.then(f);
    expect(run.count).toBe(50);
    expect(run.buffer()).toBe(run.buffer());
    expect(String(run.buffer())).toBe(String(Buffer.concat(frames)));
    let again = root;
    for (const f of frames) again = again.then(f);
    expect(again).toBe(run);
  });
  it('slices a long flush: updates delivered meanwhile join the unwritten subscribers\' write, and every stream stays in order', async () => {
    // A budget of 0 ms yields after every 256 writes.
    const batch = new DeliveryBatch(0);
    const sinks = Array.from({ length: 1000 }, () => new RecordingSink());
    const subs = sinks.map((k) => subscriber(k));
    const [f1, f2] = [frame(1), frame(2)];
    for (const s of subs) s.deliver(update(1), f1, batch);
    await nextTurn();
    // One slice written: the first 256 subscribers have frame 1, the rest nothing yet.
    const written = sinks.filter((k) => k.writes.length > 0).length;
    expect(written).toBe(256);
    // Update 2 arrives before the fan-out of update 1 is done.
    for (const s of subs) s.deliver(update(2), f2, batch);
    for (let i = 0; i < 10; i++) await nextTurn();
    const both = Buffer.concat([frame(1), frame(2)]).toString();
    for (const [i, k] of sinks.entries()) {
      expect(k.writes.map(String).join(''), `subscriber ${i}`).toBe(both);
      // Written before update 2 came: two writes; after it: one write holding both.
      expect(k.writes.length, `subscriber ${i}`).toBe(i < 256 ? 2 : 1);
    }
    // The subscribers not reached yet shared one buffer for the two frames.
    expect(sinks[999]!.writes[0]).toBe(sinks[500]!.writes[0]);
  });

  it('flush() without a budget writes every round at once (shutdown)', () => {
    const batch = new DeliveryBatch(0);
    const sinks = Array.from({ length: 600 }, () => new RecordingSink());
    const subs = sinks.map((k) => subscriber(k));
    for (const s of subs) s.deliver(update(1), frame(1), batch);
    batch.flush();
    expect(sinks.every((k) => k.writes.length === 1)).toBe(true);
  });
});
