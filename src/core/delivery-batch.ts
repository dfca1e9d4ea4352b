/**
 * A sequence of frames, as a node in a trie shared by all subscribers of one turn. Subscribers
 * that receive the same frames in the same order (a broadcast) end on the same node, so the
 * frames are concatenated once for all of them instead of once per subscriber.
 */
export class FrameRun {
  readonly count: number;
  // Almost every run has one continuation (everyone got the same next update): keep it inline.
  private nextFrame: Buffer | null = null;
  private nextRun: FrameRun | null = null;
  private others: Map<Buffer, FrameRun> | null = null;
  private bytes: Buffer | null = null;

  constructor(
    private readonly parent: FrameRun | null,
    private readonly frame: Buffer | null,
  ) {
    this.count = parent ? parent.count + 1 : 0;
  }

  then(frame: Buffer): FrameRun {
    if (this.nextFrame === frame) return this.nextRun!;
    if (this.nextFrame === null) {
      this.nextFrame = frame;
      return (this.nextRun = new FrameRun(this, frame));
    }
    let run = this.others?.get(frame);
    if (!run) (this.others ??= new Map()).set(frame, (run = new FrameRun(this, frame)));
    return run;
  }

  /** The frames of the run as one buffer (computed once). */
  buffer(): Buffer {
    if (this.bytes) return this.bytes;
    if (this.count === 1) return (this.bytes = this.frame!);
    const parts = new Array<Buffer>(this.count);
    let run: FrameRun = this;
    for (let i = this.count - 1; i >= 0; i--) {
      parts[i] = run.frame!;
      run = run.parent!;
    }
    return (this.bytes = Buffer.concat(parts));
  }
}

/**
 * What a batch writes to: a subscriber, seen only through the two members the batch needs, so
 * that this file does not depend on subscriber.ts (which depends on it).
 */
export interface BatchTarget {
  /** Frames of the current turn not written yet; null when the target is not in the batch. */
  batched: FrameRun | null;
  /** Writes the frames of `batched` and clears it. */
  flushBatch(now: number): void;
}

/**
 * Frames delivered during one turn of the event loop, written to each subscriber in one piece
 * when the turn ends. Writing frame by frame costs a syscall per frame and per subscriber, which
 * is what bounds a broadcast once several updates arrive together; a turn adds no measurable
 * latency (the flush runs right after the I/O that delivered the updates).
 *
 * A flush is time-sliced: after `sliceMs` of writing it yields to the event loop and goes on in
 * the next turn. A fan-out to tens of thousands of sockets takes about as long as the interval
 * between updates at a sustained rate, and without slices every request arriving meanwhile
 * (the next publish, a new subscriber) waits for all of it, and each of its updates then needs
 * a fan-out of its own. With slices the next update is taken in during the fan-out; subscribers
 * not written yet get both frames in one write, the others get it in the next round. Each
 * subscriber's frames stay in order: one is in at most one unwritten round at a time.
 */
export class DeliveryBatch {
  private root = new FrameRun(null, null);
  private touched: BatchTarget[] = [];
  /** Rounds closed and not fully written yet, oldest first; `pos` is the next in `rounds[0]`. */
  private rounds: BatchTarget[][] = [];
  private pos = 0;
  private scheduled = false;
  private readonly flushBound = (): void => this.flush(this.sliceMs);

  /** @param sliceMs longest a scheduled flush writes before yielding (Infinity: never yields). */
  constructor(private readonly sliceMs = DEFAULT_SLICE_MS) {}

  add(sub: BatchTarget, frame: Buffer): void {
    const run = sub.batched;
    if (run === null) {
      this.touched.push(sub);
      sub.batched = this.root.then(frame);
      this.schedule();
    } else {
      sub.batched = run.then(frame);
    }
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flushBound);
  }

  /**
   * Writes every subscriber's unwritten frames, oldest round first; with a budget, stops after
   * about `budgetMs` and continues in the next turn. Called without one before shutdown.
   */
  flush(budgetMs = Infinity): void {
    this.scheduled = false;
    if (this.touched.length > 0) {
      this.rounds.push(this.touched);
      this.touched = [];
      this.root = new FrameRun(null, null);
    }
    const start = performance.now();
    let now = Date.now();
    while (this.rounds.length > 0) {
      const round = this.rounds[0]!;
      while (this.pos < round.length) {
        round[this.pos++]!.flushBatch(now);
        // The clock is read once per 256 writes: a write costs microseconds.
        if ((this.pos & 255) === 0 && budgetMs !== Infinity) {
          if (performance.now() - start >= budgetMs) {
            this.schedule();
            return;
          }
          now = Date.now();
        }
      }
      this.rounds.shift();
      this.pos = 0;
    }
  }
}

/** How long one flush writes before it lets other I/O in (see DeliveryBatch). */
export const DEFAULT_SLICE_MS = 5;
