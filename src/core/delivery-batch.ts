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
 */
export class DeliveryBatch {
  private root = new FrameRun(null, null);
  private touched: BatchTarget[] = [];
  private scheduled = false;
  private readonly flushBound = (): void => this.flush();

  add(sub: BatchTarget, frame: Buffer): void {
    const run = sub.batched;
    if (run === null) {
      this.touched.push(sub);
      sub.batched = this.root.then(frame);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flushBound);
      }
    } else {
      sub.batched = run.then(frame);
    }
  }

  /** Writes every subscriber's frames of this turn. Also called before shutdown. */
  flush(): void {
    this.scheduled = false;
    const touched = this.touched;
    if (touched.length === 0) return;
    this.touched = [];
    this.root = new FrameRun(null, null);
    const now = Date.now();
    for (let i = 0; i < touched.length; i++) touched[i]!.flushBatch(now);
  }
}
