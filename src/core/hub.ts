/**
 * core/: the hub itself, with no knowledge of HTTP. It owns updates, selectors and matchers, URI
 * templates, the topic index, subscribers and their bounded queues, delivery batching, history
 * replay, presence (subscription events) and the Transport interface that backends implement.
 * It may import auth/ (grants decide what a subscriber sees), observability/ and util/, and nothing
 * above it: no http/, server/, config/ or transports/ (test/layering.test.ts). This file is the
 * hub: publish, deliver to matching subscribers, connect with replay, disconnect.
 */
import { canSubscribe } from '../auth/grants.js';
import { DeadlineQueue } from './deadline-queue.js';
import { DeliveryBatch } from './delivery-batch.js';
import type { Logger } from '../observability/logger.js';
import { LruCache } from '../util/lru-cache.js';
import { Metrics } from '../observability/metrics.js';
import { serializeUpdate } from './sse.js';
import type { DisconnectReason, Subscriber, SubscriberOwner } from './subscriber.js';
import { subscriptionEventData, subscriptionTopic } from './subscription.js';
import { TopicIndex } from './topic-index.js';
import { TransportUnavailableError, type SubscriptionRecord, type Transport } from './transport.js';
import { createUpdate, idProblem, typeProblem, type StoredUpdate, type Update } from './update.js';
import { uuidv7 } from '../util/uuid.js';

export interface HubCoreOptions {
  transport: Transport;
  logger: Logger;
  /** Publish subscription events and keep presence for the subscriptions API. */
  subscriptions: boolean;
  /** Heartbeat interval (ms, 0 = off). */
  heartbeat: number;
  /** Longest a subscriber may stay saturated before it is cut (ms, 0 = never). */
  dispatchTimeout: number;
}

export interface PublishInput {
  topics: readonly string[];
  data?: string | undefined;
  private?: boolean | undefined;
  id?: string | undefined;
  type?: string | undefined;
  retry?: number | undefined;
}

export interface ConnectResult {
  /** Value of the cursor response header, when a last event id was requested. */
  cursor: string | undefined;
  /**
   * Sends the replay and the live updates held meanwhile. Call it once the response headers
   * (which carry the cursor) are out; until then the subscriber's live updates wait.
   */
  resume(): void;
}

/**
 * The hub's core: routes every update the transport delivers to the local subscribers that select
 * it and may read it, replays history on reconnection, and tracks presence. Knows nothing of HTTP.
 */
export class Hub implements SubscriberOwner {
  readonly metrics: Metrics;
  readonly transport: Transport;
  private readonly index = new TopicIndex();
  // Private updates are routed from the readers' grants: a template every subscriber shares
  // selects them all, while each token usually grants a handful of topics.
  private readonly grantIndex = new TopicIndex((sub) => sub.grants?.subscribe ?? []);
  private readonly subscribers = new Map<string, Subscriber>();
  private readonly records = new Map<Subscriber, readonly SubscriptionRecord[]>();
  // Replays of many subscribers read the same updates: serialise each one once.
  private readonly frames = new LruCache<bigint, Buffer>(4096);
  // Updates delivered in one turn leave together: one write per subscriber and turn.
  private readonly batch = new DeliveryBatch();
  private readonly log: Logger;
  private sweepTimer: NodeJS.Timeout | null = null;
  // Streams end at their token's exp (or write_timeout) to the millisecond, not at the next sweep.
  private readonly deadlines = new DeadlineQueue<Subscriber>((sub, now) => sub.expire(now));
  private started = false;
  private closing = false;
  private subscriptionCount = 0;
  // Publish times of this node's own updates, to measure how long the transport takes to hand them back.
  private readonly inFlight = new Map<string, number>();

  constructor(private readonly options: HubCoreOptions) {
    this.transport = options.transport;
    this.log = options.logger;
    this.metrics = new Metrics({
      historySize: () => this.transport.historySize(),
      transportReady: () => this.transport.health().ready,
      subscriptions: () => this.subscriptionCount,
    });
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.transport.start((u) => this.deliver(u));
    // One sweep for all subscribers instead of timers per connection: 100k timers cost memory.
    this.sweepTimer = setInterval(() => this.sweep(Date.now()), 1000);
    this.sweepTimer.unref();
  }

  get connected(): number {
    return this.subscribers.size;
  }

  get subscriptionsEnabled(): boolean {
    return this.options.subscriptions;
  }

  /**
   * Builds, stores and fans out an update; resolves once the transport acknowledged it, or found
   * the id already stored within its dedupe window (then nothing is stored or delivered again).
   */
  async publish(input: PublishInput): Promise<Update> {
    // The programmatic API is held to what HTTP publishers are: an id or type with a line break
    // would inject fields into every subscriber's stream.
    const problem = (input.id ? idProblem(input.id) : null) ?? (input.type ? typeProblem(input.type) : null);
    if (problem) throw new TypeError(`invalid update ${input.id && idProblem(input.id) ? 'id' : 'type'}: ${problem}`);
    const update = createUpdate({
      topics: input.topics,
      data: input.data,
      private: input.private,
      id: input.id || `urn:uuid:${uuidv7()}`,
      type: input.type,
      retry: input.retry,
    });
    const t0 = performance.now();
    if (this.inFlight.size < 10_000) this.inFlight.set(update.id, t0);
    let result;
    try {
      result = await this.transport.dispatch(update);
    } catch (err) {
      this.inFlight.delete(update.id);
      // The id the hub generated is the publisher's only handle for a safe retry (see http/publish.ts).
      if (err instanceof TransportUnavailableError) err.updateId ??= update.id;
      throw err;
    }
    // A duplicate within the dedupe window is acknowledged like the original and never delivered.
    if (result === 'duplicate') this.inFlight.delete(update.id);
    this.metrics.publishSeconds.observe((performance.now() - t0) / 1000);
    return update;
  }

  private readonly frameFor = (u: StoredUpdate): Buffer => this.frameOf(u);

  private frameOf(u: StoredUpdate): Buffer {
    let f = this.frames.get(u.seq);
    if (!f) {
      f = serializeUpdate(u);
      this.frames.set(u.seq, f);
    }
    return f;
  }

  private deliver(u: StoredUpdate): void {
    const t0 = performance.now();
    const sent = this.inFlight.get(u.id);
    if (sent !== undefined) {
      this.inFlight.delete(u.id);
      this.metrics.transportLagSeconds.observe((t0 - sent) / 1000);
    }
    this.metrics.updatesTotal++;
    // One clock read per update for every subscriber's deadline check.
    const now = Date.now();
    let frame: Buffer | null = null;
    let n = 0;
    if (u.private) {
      this.grantIndex.forEachMatch(u.topics, (sub) => {
        if (!sub.selects(u.topics)) return;
        frame ??= this.frameOf(u);
        sub.deliver(u, frame, this.batch, now);
        n++;
      });
    } else {
      this.index.forEachMatch(u.topics, (sub) => {
        frame ??= this.frameOf(u);
        sub.deliver(u, frame, this.batch, now);
        n++;
      });
    }
    this.metrics.deliveries += n;
    this.metrics.dispatchSeconds.observe((performance.now() - t0) / 1000);
  }

  /** Whether a stored update may be sent to this subscriber now (routing + current token). */
  private entitled(sub: Subscriber, u: Update): boolean {
    return sub.selects(u.topics) && (!u.private || canSubscribe(sub.grants, u.topics));
  }

  /**
   * Registers a subscriber, announces its subscriptions and, when asked, replays what it missed.
   * Live updates that arrive during the replay are held and sent after it, minus those the replay
   * already covered, so nothing is lost or sent twice.
   */
  async connect(
    sub: Subscriber,
    options: { lastEventId?: string | undefined; records?: readonly SubscriptionRecord[] | undefined } = {},
  ): Promise<ConnectResult> {
    const lastEventId = options.lastEventId;
    // Live updates are held until the HTTP layer has sent the headers (see resume()).
    sub.beginReplay();
    this.subscribers.set(sub.id, sub);
    this.deadlines.add(sub);
    this.index.add(sub);
    if (sub.grants) this.grantIndex.add(sub);
    this.subscriptionCount += sub.matchers.length;
    sub.owner = this;
    this.metrics.subscribersTotal++;
    if (sub.version === 7) this.metrics.connected7++;
    else this.metrics.connected8++;

    if (this.options.subscriptions && options.records && options.records.length > 0) {
      this.records.set(sub, options.records);
      await this.announce(options.records, true);
    }

    if (lastEventId === undefined) return { cursor: undefined, resume: () => sub.endReplay([], -1n) };
    let lastSeq = -1n;
    let found = false;
    // Updates, not frames: a long replay is framed as it streams (see Subscriber.endReplay).
    const replayed: StoredUpdate[] = [];
    if (lastEventId !== '') {
      try {
        const res = await this.transport.history(lastEventId, (u) => {
          if (u.seq > lastSeq) lastSeq = u.seq;
          if (this.entitled(sub, u)) replayed.push(u);
        });
        found = res.found;
      } catch (err) {
        this.log.error({ err, subscriber: sub.id }, 'history replay failed');
      }
    }
    const cursor = lastEventId === 'earliest' || !found ? 'earliest' : lastEventId;
    return { cursor, resume: () => sub.endReplay(replayed, lastSeq, this.frameFor) };
  }

  /** @internal Called by a subscriber when it closes. */
  subscriberClosed(sub: Subscriber, reason: DisconnectReason): void {
    if (this.subscribers.get(sub.id) !== sub) return;
    this.subscribers.delete(sub.id);
    this.deadlines.remove(sub);
    this.index.remove(sub);
    if (sub.grants) this.grantIndex.remove(sub);
    this.subscriptionCount -= sub.matchers.length;
    if (sub.version === 7) this.metrics.connected7--;
    else this.metrics.connected8--;
    if (reason !== 'client') this.metrics.countDisconnect(reason);
    const records = this.records.get(sub);
    if (records) {
      this.records.delete(sub);
      this.announce(records, false).catch((err: unknown) =>
        this.log.warn({ err, subscriber: sub.id }, 'could not publish subscription end'),
      );
    }
    this.log.debug({ subscriber: sub.id, reason }, 'subscriber disconnected');
  }

  private async announce(records: readonly SubscriptionRecord[], active: boolean): Promise<void> {
    if (active) await this.transport.addSubscriptions?.(records);
    else await this.transport.removeSubscriptions?.(records);
    for (const record of records) {
      await this.publish({
        topics: [subscriptionTopic(record)],
        data: subscriptionEventData(record, active),
        private: true,
        type: record.kind === 'selector' ? undefined : 'mercure',
      });
    }
  }

  /** Subscriptions for the API: cluster-wide when the transport knows them, else this node's. */
  async listSubscriptions(): Promise<SubscriptionRecord[]> {
    if (this.transport.listSubscriptions) return this.transport.listSubscriptions();
    const all: SubscriptionRecord[] = [];
    for (const records of this.records.values()) all.push(...records);
    return all;
  }

  lastEventId(): Promise<string> {
    return this.transport.lastEventId();
  }

  /** Heartbeats idle streams, ends streams past their deadline, cuts subscribers stuck too long. */
  sweep(now: number): void {
    const hb = this.options.heartbeat;
    const dt = this.options.dispatchTimeout;
    for (const sub of this.subscribers.values()) {
      if (sub.deadline > 0 && now >= sub.deadline) {
        // A backstop only: the deadline queue has normally ended it already.
        sub.expire(now);
      } else if (dt > 0 && sub.blockedSince > 0 && now - sub.blockedSince >= dt) {
        sub.close('slow');
      } else if (hb > 0 && now - sub.lastWrite >= hb) {
        sub.heartbeat();
      }
    }
  }

  /** Ends every stream (telling clients when to come back) and closes the transport. */
  async close(farewell?: () => Buffer): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.deadlines.close();
    this.batch.flush();
    for (const sub of [...this.subscribers.values()]) sub.close('shutdown', farewell?.());
    await this.transport.close();
  }
}
