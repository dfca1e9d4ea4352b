/**
 * Test doubles for code that publishes: the counterpart of symfony/mercure's `MockHub`. They
 * validate updates exactly like `Publisher`, record them, return ids and can be told to fail.
 *
 * ```ts
 * const publisher = new RecordingPublisher();
 * await placeOrder(publisher);
 * expect(publisher.updates[0]?.topics).toEqual(['https://example.com/orders/1']);
 * ```
 */
import { PublishError, publishErrorKind, type MercurePublisher, type PublishErrorKind, type PublishOptions } from './publisher.js';
import { Update, type UpdateInit } from './update.js';

export { PublishError, Update };
export type { MercurePublisher, PublishErrorKind };

const STATUS: Record<PublishErrorKind, number | undefined> = {
  unauthorized: 401,
  forbidden: 403,
  bad_request: 400,
  too_large: 413,
  unavailable: 503,
  server_error: 500,
  network: undefined,
};

export interface RecordingPublisherOptions {
  /** The hub URL reported in errors. Default `https://hub.test/.well-known/mercure`. */
  hubUrl?: string | undefined;
  /** Computes the id of a successful publish; default the update's own id, else `urn:uuid:<n>`-style ids. */
  handler?: ((update: Update) => string | Promise<string>) | undefined;
}

/** One way to fail: an error instance, or a kind (with an optional hub message). */
export type Failure = PublishError | Error | PublishErrorKind | { kind: PublishErrorKind; message?: string; status?: number };

/** Records every update, returns ids, fails on demand. */
export class RecordingPublisher implements MercurePublisher {
  /** Successfully published updates, in order. */
  readonly updates: Update[] = [];
  /** Updates whose publish was made to fail, with the error thrown. */
  readonly failures: Array<{ update: Update; error: Error }> = [];
  readonly hubUrl: string;
  private readonly handler: ((update: Update) => string | Promise<string>) | undefined;
  private readonly queued: Error[] = [];
  private always: Error | null = null;
  private counter = 0;

  constructor(options: RecordingPublisherOptions = {}) {
    this.hubUrl = options.hubUrl ?? 'https://hub.test/.well-known/mercure';
    this.handler = options.handler;
  }

  async publish(input: Update | UpdateInit, options: PublishOptions = {}): Promise<string> {
    options.signal?.throwIfAborted();
    const update = Update.from(input);
    const failure = this.queued.shift() ?? this.always;
    if (failure) {
      this.failures.push({ update, error: failure });
      throw failure;
    }
    const id = this.handler ? await this.handler(update) : (update.id ?? `urn:uuid:00000000-0000-4000-8000-${String(++this.counter).padStart(12, '0')}`);
    this.updates.push(update);
    return id;
  }

  /** The next `times` publishes fail with `failure`. */
  failNext(failure: Failure = 'unavailable', times = 1): this {
    const error = this.toError(failure);
    for (let i = 0; i < times; i++) this.queued.push(error);
    return this;
  }

  /** Every publish fails with `failure` until `reset()` (or `failAlways(null)`). */
  failAlways(failure: Failure | null = 'unavailable'): this {
    this.always = failure === null ? null : this.toError(failure);
    return this;
  }

  /** Forgets recorded updates, failures and planned failures. */
  reset(): this {
    this.updates.length = 0;
    this.failures.length = 0;
    this.queued.length = 0;
    this.always = null;
    this.counter = 0;
    return this;
  }

  /** The last published update. */
  get last(): Update | undefined {
    return this.updates[this.updates.length - 1];
  }

  /** Updates published to `topic` (canonical or alternate). */
  updatesFor(topic: string): Update[] {
    return this.updates.filter((u) => u.topics.includes(topic));
  }

  private toError(failure: Failure): Error {
    if (failure instanceof Error) return failure;
    const spec = typeof failure === 'string' ? { kind: failure } : failure;
    const status = spec.status ?? STATUS[spec.kind];
    return new PublishError({
      kind: status !== undefined && spec.status !== undefined ? publishErrorKind(status) : spec.kind,
      hubUrl: this.hubUrl,
      status,
      hubMessage: 'message' in spec && spec.message ? spec.message : `simulated ${spec.kind} failure`,
    });
  }
}

/**
 * Like symfony/mercure's `MockHub`: every publish goes to `handler`, which returns the id (and can
 * assert on the update); updates are recorded too.
 *
 * ```ts
 * const hub = new MockPublisher((update) => { expect(update.private).toBe(true); return 'id'; });
 * ```
 */
export class MockPublisher extends RecordingPublisher {
  constructor(handler: (update: Update) => string | Promise<string>, options: Omit<RecordingPublisherOptions, 'handler'> = {}) {
    super({ ...options, handler });
  }
}
