/**
 * Subscribing to a Mercure hub with `fetch` and a spec-compliant SSE parser: works in Node ≥ 20
 * and browsers without a bundler (no `node:` imports, no dependencies). Unlike the native
 * `EventSource`, it can send a bearer token in the `Authorization` header, exposes the hub's
 * reconciliation cursor, and is an async iterable.
 *
 * ```ts
 * const sub = subscribe(hubUrl, { topics: ['https://example.com/books/{id}'], token });
 * for await (const event of sub) console.log(event.id, JSON.parse(event.data));
 * ```
 */
import { discover, type Discovery, type HubLink } from './discovery.js';
import { SseParser, type MercureEvent } from './sse.js';
import { resolveToken, type TokenSource } from './token-source.js';
import { describe, refusal, SubscribeError } from './subscribe-error.js';
import { list, subscribeUrl, type TopicSelection } from './subscribe-url.js';

export { SseParser } from './sse.js';
export type { MercureEvent } from './sse.js';
export type { TokenFactory, TokenSource } from './token-source.js';
export type { Discovery } from './discovery.js';
export { DiscoveryError } from './discovery.js';
export { SubscribeError, type SubscribeErrorKind } from './subscribe-error.js';
export { subscribeUrl, type SubscribeUrlOptions, type TopicSelection } from './subscribe-url.js';

export interface SubscribeOptions extends TopicSelection {
  /** The hub URL (when calling `subscribe(options)`). */
  hubUrl?: string | URL | undefined;
  /** Bearer token, sent in the `Authorization` header; a function or factory is called per connection. */
  token?: TokenSource | undefined;
  /** Extra request headers. */
  headers?: Record<string, string> | undefined;
  /** Browsers: send cookies cross-origin (the `mercureAuthorization` cookie). */
  withCredentials?: boolean | undefined;
  /** Replay from this event (e.g. the `last-event-id` of discovery). */
  lastEventId?: string | undefined;
  /** Closes the subscription when aborted. */
  signal?: AbortSignal | undefined;
  fetch?: typeof fetch | undefined;
  /** Initial reconnection delay in ms (the server's `retry:` replaces it). Default 1000. */
  retry?: number | undefined;
  /** Consecutive failed connection attempts before giving up. Default: never give up. */
  maxRetries?: number | undefined;
  /** Longest backoff between failed attempts, in ms. Default 30 000. */
  maxRetryDelay?: number | undefined;
  /** Reconnect when nothing (not even a heartbeat) arrives for this long, in ms. 0 (default) disables. */
  inactivityTimeout?: number | undefined;
  /** Events buffered for the async iterator before reading pauses (backpressure). Default 1000. */
  highWaterMark?: number | undefined;
}

export interface OpenEvent {
  /** The URL connected to. */
  url: string;
  status: number;
  /** The hub's reconciliation cursor (`Mercure-Last-Event-ID` / `Last-Event-ID` response header), if sent. */
  cursor: string | undefined;
  /** The event ID this connection resumed from, if any. */
  lastEventId: string | undefined;
  /** False for the first connection. */
  reconnected: boolean;
}

export type SubscriptionState = 'connecting' | 'open' | 'closed';

interface Listeners {
  message: Set<(event: MercureEvent) => void>;
  error: Set<(error: SubscribeError) => void>;
  open: Set<(event: OpenEvent) => void>;
}

class Inactivity extends Error {}

/**
 * A live subscription: an `AsyncIterable<MercureEvent>` with `on()` listeners. It reconnects by
 * itself (sending `Last-Event-ID`, so nothing is missed or repeated) on network errors, 5xx and
 * stream ends, and stops on `close()`, the abort signal, 401/403 and other 4xx.
 *
 * Breaking out of a `for await` loop closes the subscription.
 */
export class Subscription implements AsyncIterable<MercureEvent> {
  /** The URL of the first connection. */
  readonly url: string;
  /** Set by `discoverAndSubscribe`. */
  discovery: Discovery | undefined;
  /** Resolves when the subscription ends: with the fatal error, or null after `close()`/abort. */
  readonly finished: Promise<SubscribeError | null>;

  private readonly baseUrl: string;
  private readonly options: SubscribeOptions;
  private readonly fetchImpl: typeof fetch;
  private readonly parser: SseParser;
  private readonly listeners: Listeners = { message: new Set(), error: new Set(), open: new Set() };
  private readonly master = new AbortController();
  private readonly highWaterMark: number;
  private reconnectionTime: number;
  private stateValue: SubscriptionState = 'connecting';
  private cursorValue: string | undefined;
  private queue: MercureEvent[] = [];
  private iterating = false;
  private fatal: SubscribeError | null = null;
  private fatalThrown = false;
  private wake: (() => void) | null = null;
  private drained: (() => void) | null = null;
  private resolveFinished!: (e: SubscribeError | null) => void;

  constructor(hubUrl: string | URL, options: SubscribeOptions) {
    this.options = options;
    this.url = subscribeUrl(hubUrl, options);
    this.baseUrl = subscribeUrl(hubUrl, { ...options, lastEventId: undefined });
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new TypeError('No fetch implementation: pass `fetch` in the options');
    this.fetchImpl = f.bind(globalThis) as typeof fetch;
    this.reconnectionTime = Math.max(0, options.retry ?? 1000);
    this.highWaterMark = Math.max(1, options.highWaterMark ?? 1000);
    this.finished = new Promise((resolve) => (this.resolveFinished = resolve));
    this.parser = new SseParser(
      (e) => this.deliver(e),
      (ms) => (this.reconnectionTime = ms),
      options.lastEventId ?? '',
    );
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) {
        this.close();
        return;
      }
      const onAbort = () => this.close();
      signal.addEventListener('abort', onAbort, { once: true });
      // A long-lived signal shared by many subscriptions must not keep closed ones alive.
      void this.finished.then(() => signal.removeEventListener('abort', onAbort));
    }
    // Listeners registered right after subscribe() see the first events: start on a later tick.
    queueMicrotask(() => void this.run());
  }

  get state(): SubscriptionState {
    return this.stateValue;
  }

  /** The ID of the last event received (sent as `Last-Event-ID` when reconnecting). */
  get lastEventId(): string | undefined {
    return this.parser.lastEventId === '' ? undefined : this.parser.lastEventId;
  }

  /** The hub's cursor from the latest connection (`Mercure-Last-Event-ID` or `Last-Event-ID` response header). */
  get cursor(): string | undefined {
    return this.cursorValue;
  }

  /** The current reconnection delay in ms (the server's `retry:` or the `retry` option). */
  get retryDelay(): number {
    return this.reconnectionTime;
  }

  on(type: 'message', listener: (event: MercureEvent) => void): () => void;
  on(type: 'error', listener: (error: SubscribeError) => void): () => void;
  on(type: 'open', listener: (event: OpenEvent) => void): () => void;
  on(type: keyof Listeners, listener: (arg: never) => void): () => void {
    const set = this.listeners[type] as Set<(arg: never) => void>;
    set.add(listener);
    return () => set.delete(listener);
  }

  off(type: keyof Listeners, listener: (arg: never) => void): void {
    (this.listeners[type] as Set<(arg: never) => void>).delete(listener);
  }

  /** Stops the subscription (idempotent). */
  close(): void {
    this.end(null);
  }

  [Symbol.asyncIterator](): AsyncIterator<MercureEvent> {
    if (this.iterating) throw new Error('This subscription is already being iterated');
    this.iterating = true;
    const next = async (): Promise<IteratorResult<MercureEvent>> => {
      for (;;) {
        const event = this.queue.shift();
        if (event) {
          if (this.queue.length < this.highWaterMark) this.notifyDrained();
          return { value: event, done: false };
        }
        if (this.stateValue === 'closed') {
          if (this.fatal && !this.fatalThrown) {
            this.fatalThrown = true;
            throw this.fatal;
          }
          return { value: undefined, done: true };
        }
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    };
    const iterator: AsyncIterator<MercureEvent> & AsyncIterable<MercureEvent> = {
      next,
      return: async () => {
        this.close();
        this.iterating = false;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  // -------------------------------------------------------------------------------------------

  private deliver(event: MercureEvent): void {
    if (this.stateValue === 'closed') return;
    callEach(this.listeners.message, event);
    if (this.iterating || this.listeners.message.size === 0) {
      this.queue.push(event);
      this.notify();
    }
  }

  private emitError(error: SubscribeError): void {
    callEach(this.listeners.error, error);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private notifyDrained(): void {
    const d = this.drained;
    this.drained = null;
    d?.();
  }

  private end(fatal: SubscribeError | null): void {
    if (this.stateValue === 'closed') return;
    this.stateValue = 'closed';
    this.fatal = fatal;
    if (fatal === null) this.queue = [];
    this.master.abort();
    this.notify();
    this.notifyDrained();
    this.resolveFinished(fatal);
  }

  private get closed(): boolean {
    return this.stateValue === 'closed';
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed) {
        resolve();
        return;
      }
      const done = () => {
        clearTimeout(t);
        this.master.signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.master.signal.addEventListener('abort', done, { once: true });
    });
  }

  private async run(): Promise<void> {
    let failures = 0;
    let connections = 0;
    while (!this.closed) {
      const outcome = await this.connect(connections++);
      if (this.closed) return;
      let delay = this.reconnectionTime;
      if (outcome === 'ended') {
        failures = 0;
      } else {
        if (outcome.fatal) {
          this.emitError(outcome);
          this.end(outcome);
          return;
        }
        failures++;
        if (this.options.maxRetries !== undefined && failures > this.options.maxRetries) {
          const err = new SubscribeError({
            kind: 'retries_exhausted',
            message: `Gave up subscribing to ${this.baseUrl} after ${failures} failed attempts; last error: ${outcome.message}`,
            status: outcome.status,
            hubMessage: outcome.hubMessage,
            fatal: true,
            cause: outcome,
          });
          this.emitError(err);
          this.end(err);
          return;
        }
        const cap = Math.max(this.options.maxRetryDelay ?? 30_000, this.reconnectionTime);
        const backoff = Math.min(cap, this.reconnectionTime * 2 ** (failures - 1));
        delay = failures > 1 ? backoff * (0.75 + Math.random() / 4) : backoff;
        if (outcome.retryIn !== undefined) delay = Math.max(delay, Math.min(outcome.retryIn, cap));
        this.emitError(outcome.with({ fatal: false, retryIn: Math.round(delay) }));
      }
      if (this.stateValue === 'open') this.stateValue = 'connecting';
      await this.sleep(delay);
    }
  }

  /** One connection: 'ended' after a stream that opened and then ended, else the error. */
  private async connect(index: number): Promise<'ended' | SubscribeError> {
    const first = index === 0;
    const lastEventId = this.parser.lastEventId;
    // The first request carries the initial ID as a query parameter (no preflight needed);
    // reconnections send the ID of the last event received as Last-Event-ID, as EventSource does.
    const url = first ? this.url : this.baseUrl;
    const headers: Record<string, string> = {};
    let token: string | undefined;
    try {
      token = await resolveToken(this.options.token);
    } catch (err) {
      if (this.closed) return 'ended';
      return new SubscribeError({ kind: 'token', message: `Cannot get a token to subscribe: ${(err as Error).message}`, fatal: false, cause: err });
    }
    // The subscription's own values win over same-named extra headers.
    const set = (name: string, value: string) => {
      for (const k of Object.keys(headers)) if (k.toLowerCase() === name.toLowerCase()) delete headers[k];
      headers[name] = value;
    };
    for (const [k, v] of Object.entries(this.options.headers ?? {})) set(k, v);
    set('Accept', 'text/event-stream');
    if (!first && lastEventId !== '') set('Last-Event-ID', lastEventId);
    if (token !== undefined) set('Authorization', `Bearer ${token}`);
    if (this.closed) return 'ended';

    const controller = new AbortController();
    const onAbort = () => controller.abort();
    this.master.signal.addEventListener('abort', onAbort, { once: true });
    const inactivity = Math.max(0, this.options.inactivityTimeout ?? 0);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      if (inactivity === 0) return;
      if (timer !== undefined) clearTimeout(timer);
      timer = setTimeout(() => controller.abort(new Inactivity()), inactivity);
    };
    const disarm = () => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    };
    try {
      let res: Response;
      arm();
      try {
        res = await this.fetchImpl(url, {
          method: 'GET',
          headers,
          credentials: this.options.withCredentials ? 'include' : 'same-origin',
          cache: 'no-store',
          signal: controller.signal,
        });
      } catch (err) {
        if (this.closed) return 'ended';
        if (controller.signal.reason instanceof Inactivity) {
          return new SubscribeError({ kind: 'timeout', message: `No answer from ${url} within ${inactivity} ms`, fatal: false });
        }
        return new SubscribeError({ kind: 'network', message: `Cannot connect to ${url}: ${describe(err)}`, fatal: false, cause: err });
      }

      if (res.status !== 200) {
        disarm();
        return await refusal(res, url);
      }
      const contentType = res.headers.get('content-type') ?? '';
      if (!/^text\/event-stream\b/i.test(contentType.trim()) || !res.body) {
        disarm();
        res.body?.cancel().catch(() => undefined);
        return new SubscribeError({
          kind: 'bad_response',
          status: res.status,
          message: `Subscribing to ${url} failed: the answer is not an event stream (Content-Type: ${contentType || 'none'}); is the hub URL right?`,
          fatal: true,
        });
      }

      this.cursorValue = res.headers.get('mercure-last-event-id') ?? res.headers.get('last-event-id') ?? undefined;
      this.stateValue = 'open';
      const open: OpenEvent = {
        url,
        status: res.status,
        cursor: this.cursorValue,
        lastEventId: lastEventId === '' ? undefined : lastEventId,
        reconnected: !first,
      };
      callEach(this.listeners.open, open);

      this.parser.reset();
      const reader = res.body.getReader();
      const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
      try {
        for (;;) {
          while (!this.closed && this.queue.length >= this.highWaterMark && (this.iterating || this.listeners.message.size === 0)) {
            // Backpressure: stop reading until the iterator catches up (the hub buffers, then
            // cuts us if too slow; we reconnect with Last-Event-ID and lose nothing).
            disarm();
            await new Promise<void>((resolve) => (this.drained = resolve));
          }
          if (this.closed) break;
          arm();
          const { value, done } = await reader.read();
          if (done) break;
          const text = decoder.decode(value, { stream: true });
          if (text) this.parser.feed(text);
        }
      } catch (err) {
        if (this.closed) return 'ended';
        const reason = controller.signal.reason;
        if (reason instanceof Inactivity) {
          return new SubscribeError({ kind: 'timeout', message: `No data from ${url} for ${inactivity} ms: reconnecting`, fatal: false });
        }
        return new SubscribeError({ kind: 'network', message: `The connection to ${url} was lost: ${describe(err)}`, fatal: false, cause: err });
      } finally {
        disarm();
        reader.cancel().catch(() => undefined);
      }
      // The stream ended: the incomplete event (if any) is dropped; reconnect after the retry delay.
      this.parser.reset();
      return 'ended';
    } finally {
      disarm();
      this.master.signal.removeEventListener('abort', onAbort);
      controller.abort();
    }
  }
}

/**
 * Calls each listener (a copy of the set: a listener may unsubscribe). A throwing listener must
 * not break the stream: its error is rethrown on a later tick, uncaught, as from an event handler.
 */
function callEach<T>(listeners: ReadonlySet<(arg: T) => void>, arg: T): void {
  for (const l of [...listeners]) {
    try {
      l(arg);
    } catch (err) {
      setTimeout(() => {
        throw err;
      });
    }
  }
}

/**
 * Subscribes to a hub. `subscribe(hubUrl, options)` or `subscribe({ hubUrl, ...options })`.
 * Connects at once; see `Subscription`.
 */
export function subscribe(hubUrl: string | URL, options: SubscribeOptions): Subscription;
export function subscribe(options: SubscribeOptions & { hubUrl: string | URL }): Subscription;
export function subscribe(a: string | URL | (SubscribeOptions & { hubUrl: string | URL }), b?: SubscribeOptions): Subscription {
  if (typeof a === 'string' || a instanceof URL) {
    if (!b) throw new TypeError('subscribe(hubUrl, options): options with `topics` or `matches` are required');
    return new Subscription(a, b);
  }
  if (!a || !a.hubUrl) throw new TypeError('subscribe(options): `hubUrl` is required');
  return new Subscription(a.hubUrl, a);
}

export interface DiscoverAndSubscribeOptions extends SubscribeOptions {
  /** Which selector to use for the discovered topic: draft-07 `topic=` (default) or draft-08 `match=`. */
  draft?: 7 | 8 | undefined;
  /** Headers for the discovery request (e.g. `Accept` for content negotiation). */
  discoveryHeaders?: Record<string, string> | undefined;
  /**
   * Refuse hubs you do not trust before any token is sent to them (a compromised resource could
   * advertise a hub that captures tokens). Default: any hub.
   */
  allowHub?: ((hub: URL) => boolean) | undefined;
  /** Picks among several advertised hubs. Default: the first allowed one. */
  chooseHub?: ((hubs: HubLink[]) => HubLink | undefined) | undefined;
}

/**
 * Discovers a resource's hub and subscribes to its canonical topic (`rel="self"`, else the
 * resource URL), replaying from the `last-event-id` the resource advertised, so no update made
 * between fetching the resource and subscribing is missed.
 */
export async function discoverAndSubscribe(resourceUrl: string | URL | Response, options: DiscoverAndSubscribeOptions = {}): Promise<Subscription> {
  const d = await discover(resourceUrl, {
    fetch: options.fetch,
    headers: options.discoveryHeaders,
    credentials: options.withCredentials ? 'include' : undefined,
    signal: options.signal,
  });
  const allowed = d.hubs.filter((h) => {
    try {
      return options.allowHub ? options.allowHub(new URL(h.url)) : true;
    } catch {
      return false;
    }
  });
  const hub = options.chooseHub ? options.chooseHub(allowed) : allowed[0];
  if (!hub) throw new TypeError(`No acceptable hub among those advertised by ${String(resourceUrl instanceof Response ? resourceUrl.url : resourceUrl)}: ${d.hubUrls.join(', ')}`);
  const explicit = list(options.topics).length + list(options.matches).length + list(options.matchUrlPatterns).length > 0;
  const selection: TopicSelection = explicit
    ? { topics: options.topics, matches: options.matches, matchUrlPatterns: options.matchUrlPatterns }
    : options.draft === 8 ? { matches: [d.selfUrl] } : { topics: [d.selfUrl] };
  const sub = new Subscription(hub.url, {
    ...options,
    ...selection,
    lastEventId: options.lastEventId ?? hub.lastEventId,
  });
  sub.discovery = d;
  return sub;
}
