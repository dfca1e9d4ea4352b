import type { Grants } from '../auth/grants.js';
import type { DeliveryBatch, FrameRun } from './delivery-batch.js';
import type { Matcher } from './topic-matcher.js';
import type { StoredUpdate } from './update.js';
import { COMMENT, serializeUpdate } from './sse.js';

/** Bytes of replayed frames per write. */
const REPLAY_WRITE_SIZE = 64 * 1024;

/** Where a subscriber's bytes go: an HTTP response in practice, anything writable in tests. */
export interface SubscriberSink {
  /** Writes a frame; false means the sink is saturated and the caller must wait for `drain`. */
  write(chunk: Buffer): boolean;
  /** Ends the stream cleanly. */
  end(): void;
  /** Tears the connection down (a subscriber that cannot keep up, a failed write). */
  destroy(): void;
}

/** Told when a subscriber closes (the hub): an object rather than a closure per subscriber. */
export interface SubscriberOwner {
  subscriberClosed(sub: Subscriber, reason: DisconnectReason): void;
}

export type DisconnectReason =
  | 'client' // the peer went away
  | 'slow' // buffer overflow or dispatch timeout
  | 'expired' // the token's exp was reached
  | 'lifetime' // write_timeout reached
  | 'shutdown'
  | 'error';

export interface SubscriberInit {
  id: string;
  /** 7 for `topic=` subscriptions, 8 for `match…=` ones. */
  version: 7 | 8;
  matchers: readonly Matcher[];
  grants: Grants | null;
  sink: SubscriberSink;
  /** Updates queued while the sink is saturated before the subscriber is cut. */
  bufferSize: number;
  /** Epoch ms at which the stream must end (min of write_timeout and token exp), 0 = never. */
  deadline: number;
  remoteAddress?: string | undefined;
}

/**
 * One connected subscriber, in the core: which topics it listens to, what its token lets it read,
 * and a bounded queue between the hub and its socket. Kept small on purpose: a hub holds 100k.
 */
export class Subscriber {
  readonly id: string;
  readonly version: 7 | 8;
  readonly matchers: readonly Matcher[];
  readonly grants: Grants | null;
  readonly deadline: number;
  readonly remoteAddress: string | undefined;
  /** Position in the hub's DeadlineQueue (-1: not queued). */
  deadlineSlot = -1;
  /** Dispatch round in which this subscriber last got an update: dedupes multi-topic matches. */
  mark = 0;
  /** Epoch ms of the last write, so heartbeats are only sent on idle streams. */
  lastWrite = Date.now();
  /** Epoch ms since when the sink has been saturated (0 = flowing). */
  blockedSince = 0;
  closed = false;
  closeReason: DisconnectReason | undefined;
  /** Frames of the current turn not written yet (see DeliveryBatch). */
  batched: FrameRun | null = null;
  private readonly sink: SubscriberSink;
  private readonly bufferSize: number;
  private queue: Buffer[] | null = null;
  // Frames held in `queue`: an entry may carry several (a turn's batch).
  private queuedFrames = 0;
  // While a history replay runs, live updates wait here so the two can be stitched in order.
  private pending: StoredUpdate[] | null = null;
  private pendingFrames: Buffer[] | null = null;
  // Position of the last update the replay read. A store may show a committed update to readers
  // before its transport delivers it; such an update, replayed already, must not be sent again.
  private replayedUpTo: bigint | null = null;
  // A replay being streamed: the updates, the next to write, and how to frame one.
  private replay: { updates: readonly StoredUpdate[]; next: number; frameOf: (u: StoredUpdate) => Buffer } | null = null;
  owner: SubscriberOwner | null = null;

  constructor(init: SubscriberInit) {
    this.id = init.id;
    this.version = init.version;
    this.matchers = init.matchers;
    this.grants = init.grants;
    this.sink = init.sink;
    this.bufferSize = init.bufferSize;
    this.deadline = init.deadline;
    this.remoteAddress = init.remoteAddress;
  }

  /** Whether any of the update's topics is selected by this subscriber's matchers. */
  selects(topics: readonly string[]): boolean {
    for (const m of this.matchers) for (const t of topics) if (m.matches(t)) return true;
    return false;
  }

  get replaying(): boolean {
    return this.pending !== null;
  }

  beginReplay(): void {
    this.pending = [];
    this.pendingFrames = [];
  }

  /**
   * Ends a replay: streams the replayed updates as the sink takes them, then the live updates
   * that arrived meanwhile unless the history read already covered them (their position is at or
   * before the last one it read).
   */
  endReplay(replayed: readonly StoredUpdate[], lastReadSeq: bigint, frameOf: (u: StoredUpdate) => Buffer = serializeUpdate): void {
    if (lastReadSeq >= 0n) this.replayedUpTo = lastReadSeq;
    if (replayed.length === 0) {
      this.releasePending();
      return;
    }
    this.replay = { updates: replayed, next: 0, frameOf };
    this.pumpReplay();
  }

  /**
   * Writes the replay until the sink is saturated, then waits for its drain. The replay is never
   * queued: a history of any length streams under backpressure, and the queue's cut is for live
   * updates a subscriber does not read. A sink that takes nothing for dispatch_timeout is cut
   * all the same (blockedSince), as any stalled write is.
   */
  private pumpReplay(): void {
    const r = this.replay;
    if (!r || this.closed || this.queue) return;
    for (;;) {
      if (r.next >= r.updates.length) {
        this.replay = null;
        this.blockedSince = 0;
        this.releasePending();
        return;
      }
      // Frames are small: ~64 KiB per write keeps a 100k-update replay to a few thousand writes.
      const parts: Buffer[] = [];
      let size = 0;
      while (r.next < r.updates.length && size < REPLAY_WRITE_SIZE) {
        const f = r.frameOf(r.updates[r.next++]!);
        parts.push(f);
        size += f.length;
      }
      this.lastWrite = Date.now();
      // A replay still streaming when the token expires stops there: its reader may no longer read.
      if (this.pastDeadline(this.lastWrite)) return;
      if (!this.sink.write(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size))) {
        this.blockedSince = this.lastWrite;
        return;
      }
    }
  }

  /** Sends the live updates held during the replay. */
  private releasePending(): void {
    const pending = this.pending;
    const frames = this.pendingFrames;
    this.pending = null;
    this.pendingFrames = null;
    if (!pending || !frames) return;
    for (let i = 0; i < pending.length; i++) this.deliver(pending[i]!, frames[i]!);
  }

  /**
   * Delivers a live update (already matched and authorised by the hub); with a batch, the frame
   * leaves with the rest of the turn's.
   */
  deliver(update: StoredUpdate, frame: Buffer, batch?: DeliveryBatch, now = Date.now()): void {
    // Checked here, not only by the hub's deadline timer: an update dispatched at or after the
    // token's exp must never reach the stream, whatever the timers are doing.
    if (this.deadline !== 0 && now >= this.deadline) {
      this.expire(now);
      return;
    }
    if (this.pending) {
      // Live updates wait for the replay, up to the buffer a saturated subscriber gets.
      if (this.pending.length >= this.bufferSize) {
        this.close('slow');
        return;
      }
      this.pending.push(update);
      this.pendingFrames!.push(frame);
      return;
    }
    if (this.replayedUpTo !== null) {
      if (update.seq <= this.replayedUpTo) return;
      // Deliveries come in seq order: once past the replay, no more checks are needed.
      this.replayedUpTo = null;
    }
    if (batch) batch.add(this, frame);
    else this.write(frame);
  }

  /** Writes the frames batched this turn. */
  flushBatch(now: number): void {
    const run = this.batched;
    if (run === null) return;
    this.batched = null;
    this.write(run.buffer(), run.count, now);
  }

  /**
   * Writes `frames` frames (one buffer), queueing them while the sink is saturated; cuts a
   * subscriber that falls too far behind.
   */
  write(bytes: Buffer, frames = 1, now = Date.now()): void {
    if (this.closed) return;
    this.lastWrite = now;
    if (this.queue) {
      if (this.queuedFrames + frames > this.bufferSize) {
        this.close('slow');
        return;
      }
      this.queue.push(bytes);
      this.queuedFrames += frames;
      return;
    }
    if (!this.sink.write(bytes)) {
      this.queue = [];
      this.queuedFrames = 0;
      this.blockedSince = now;
    }
  }

  /** Ends the stream if its deadline has come; says whether it did. */
  pastDeadline(now: number): boolean {
    if (this.deadline === 0 || now < this.deadline) return false;
    this.expire(now);
    return true;
  }

  /** The deadline has come: `expired` when it was the token's, `lifetime` (write_timeout) otherwise. */
  expire(now: number): void {
    const exp = this.grants?.expiresAt;
    this.close(exp !== undefined && exp <= now ? 'expired' : 'lifetime');
  }

  heartbeat(): void {
    if (!this.queue && !this.replay) this.write(COMMENT);
  }

  /** The sink can take more: flush what was queued. */
  drain(): void {
    const q = this.queue;
    if (this.closed) return;
    if (!q) {
      this.pumpReplay();
      return;
    }
    this.queue = null;
    this.queuedFrames = 0;
    this.blockedSince = 0;
    for (let i = 0; i < q.length; i++) {
      if (!this.sink.write(q[i]!)) {
        // What is left counts as one frame per buffer: a slight underestimate for batches.
        this.queue = q.slice(i + 1);
        this.queuedFrames = this.queue.length;
        this.blockedSince = Date.now();
        return;
      }
    }
    this.pumpReplay();
  }

  get queued(): number {
    return this.queue ? this.queuedFrames : 0;
  }

  /** Ends the stream; `reason` says why (metrics, logs). Idempotent. */
  close(reason: DisconnectReason, farewell?: Buffer): void {
    if (this.closed) return;
    // A clean end still sends what this turn delivered (a shutdown, a deadline).
    if (reason !== 'slow' && reason !== 'error') this.flushBatch(Date.now());
    this.batched = null;
    this.closed = true;
    this.closeReason = reason;
    this.queue = null;
    this.pending = null;
    this.pendingFrames = null;
    this.replay = null;
    if (reason === 'slow' || reason === 'error') this.sink.destroy();
    else {
      if (farewell) this.sink.write(farewell);
      this.sink.end();
    }
    this.owner?.subscriberClosed(this, reason);
  }

  // The stream's events, called by a raw HTTP response directly (see raw-http.ts): no listener
  // closures per stream.
  onStreamClose(): void {
    this.close('client');
  }

  onStreamError(): void {
    this.close('error');
  }

  onStreamDrain(): void {
    this.drain();
  }
}
