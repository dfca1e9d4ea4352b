/*
 * The ordered, ephemeral push consumer both the live fan-out and long history replays read the
 * stream with. Separate because it is the one delicate piece of JetStream protocol handling (ack
 * subjects, heartbeats, flow control, gap detection) and it serves two callers.
 */
import { AckPolicy, createInbox, DeliverPolicy, nanos, type JetStreamManager, type Msg, type NatsConnection, type Subscription } from 'nats';

/** Idle heartbeat asked of the fan-out consumer; silence for 3.5× this recreates it. */
export const HEARTBEAT = 1000;

/**
 * Stream and delivery sequences of a message pushed by a consumer, from its ack subject:
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`, or the newer form with
 * domain and account hash after `ACK` and a random token at the end.
 */
function parseAck(reply: string | undefined): { sseq: number; dseq: number; pending: number } | null {
  if (!reply || !reply.startsWith('$JS.ACK.')) return null;
  const t = reply.split('.');
  const i = t.length === 9 ? 4 : t.length >= 12 ? 6 : -1;
  if (i < 0) return null;
  const sseq = Number(t[i + 1]);
  const dseq = Number(t[i + 2]);
  const pending = Number(t[i + 4]);
  if (!Number.isSafeInteger(sseq) || !Number.isSafeInteger(dseq)) return null;
  return { sseq, dseq, pending: Number.isFinite(pending) ? pending : 1 };
}

export interface PushHandlers {
  /** A message at stream sequence `sseq`, delivered once and in order. */
  message(sseq: number, msg: Msg, pending: number): void;
  /** The server has nothing left to push right now (idle heartbeat with no gap and no stall). */
  idle?(): void;
  /** The consumer could not be created (the owner decides whether to retry). */
  failed(err: unknown): void;
}

/**
 * An ordered, ephemeral push consumer: delivers the stream's messages from `next` on, each once
 * and in sequence order. Any sign of a gap (a delivery sequence out of step, a heartbeat that
 * reports more deliveries than seen) or a `reset()` by the owner (reconnection, silence)
 * recreates the server-side consumer from the sequence after the last one handed over, so
 * nothing is lost or repeated. The consumer lives in memory on the server, acks nothing, and
 * is deleted when replaced or stopped.
 */
export class OrderedPush {
  private serial = 0;
  private sub: Subscription | null = null;
  private consumer: string | null = null;
  private dseq = 0;
  private stopped = false;
  lastActivity = Date.now();

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    private readonly filter: string,
    /** Stream sequence of the next message to hand over. */
    public next: number,
    private readonly handlers: PushHandlers,
  ) {}

  async reset(): Promise<void> {
    if (this.stopped) return;
    const serial = ++this.serial;
    this.teardown();
    this.dseq = 0;
    this.lastActivity = Date.now();
    const inbox = createInbox();
    this.sub = this.nc.subscribe(inbox, { callback: (err, msg) => this.onMessage(serial, err, msg) });
    try {
      const ci = await this.jsm.consumers.add(this.stream, {
        deliver_subject: inbox,
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: Math.max(1, this.next),
        ack_policy: AckPolicy.None,
        max_deliver: 1,
        flow_control: true,
        idle_heartbeat: nanos(HEARTBEAT),
        mem_storage: true,
        num_replicas: 1,
        filter_subject: this.filter,
      });
      if (serial !== this.serial) {
        this.jsm.consumers.delete(this.stream, ci.name).catch(() => {});
        return;
      }
      this.consumer = ci.name;
    } catch (err) {
      if (serial === this.serial && !this.stopped) this.handlers.failed(err);
    }
  }

  /** Stops delivering and deletes the server-side consumer. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.serial++;
    await this.teardown();
  }

  private teardown(): Promise<void> {
    const sub = this.sub;
    const name = this.consumer;
    this.sub = null;
    this.consumer = null;
    if (sub && !sub.isClosed()) sub.unsubscribe();
    if (name === null || this.nc.isClosed()) return Promise.resolve();
    return this.jsm.consumers.delete(this.stream, name).then(
      () => {},
      () => {},
    );
  }

  private onMessage(serial: number, err: Error | null, msg: Msg): void {
    if (serial !== this.serial || this.stopped) return;
    if (err) {
      void this.reset();
      return;
    }
    this.lastActivity = Date.now();
    const h = msg.headers;
    if (msg.data.length === 0 && h && h.code >= 100 && h.code < 200) {
      if (h.description === 'Idle Heartbeat') {
        const stalled = h.get('Nats-Consumer-Stalled');
        if (stalled) this.nc.publish(stalled);
        const last = Number(h.get('Nats-Last-Consumer') || '0');
        if (last > this.dseq) {
          void this.reset();
          return;
        }
        if (!stalled) this.handlers.idle?.();
      } else if (msg.reply) {
        msg.respond(); // flow control
      }
      return;
    }
    const a = parseAck(msg.reply);
    if (!a) return;
    if (a.dseq !== this.dseq + 1) {
      void this.reset();
      return;
    }
    this.dseq = a.dseq;
    if (a.sseq < this.next) return;
    this.next = a.sseq + 1;
    this.handlers.message(a.sseq, msg, a.pending);
  }
}
