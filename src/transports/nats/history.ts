/*
 * Reading the history back out of the stream: finding where an id sits (one indexed lookup on its
 * subject), handing over a range of stored messages, and the last event id. Separate from the
 * transport because it only reads, through the connection it is given, and holds no state.
 */
import type { JetStreamManager, NatsConnection } from 'nats';
import { TransportUnavailableError } from '../../core/transport.js';
import type { StoredUpdate } from '../../core/update.js';
import { decodeUpdate } from './codec.js';
import { HEARTBEAT, OrderedPush } from './ordered-push.js';
import { errorMessage, isNoMessage } from './support.js';

/** Replays of at most this many sequences read the messages directly instead of creating a consumer. */
const DIRECT_REPLAY = 32;

/** The stream a replay reads and the connection it reads it on. */
export interface ReplaySource {
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly stream: string;
  /** Subjects the stream captures. */
  readonly filter: string;
  /** The hub's `seq` for a stream sequence. */
  toSeq(streamSeq: number): bigint;
  /** Still connected on `nc`: a replay stops when the connection is lost. */
  linked(): boolean;
}

/** Sequence of the earliest stored message on `subject` carrying `id`, or null. */
export async function findSeq(jsm: JetStreamManager, stream: string, subject: string, id: string, from: number): Promise<number | null> {
  for (;;) {
    let m;
    try {
      m = await jsm.streams.getMessage(stream, { seq: from, next_by_subj: subject } as never);
    } catch (err) {
      if (isNoMessage(err)) return null;
      throw new TransportUnavailableError(`cannot look up an id in NATS: ${errorMessage(err)}`);
    }
    try {
      if (decodeUpdate(m.data, 0n).id === id) return m.seq;
    } catch {
      // not an update: keep looking
    }
    from = m.seq + 1; // digest collision (or foreign message)
  }
}

/** Hands over the stored messages from `start` to `stop` (stream sequences), in order. */
export async function replayRange(src: ReplaySource, start: number, stop: number, onUpdate: (u: StoredUpdate) => void): Promise<void> {
  const { nc, jsm } = src;
  const emit = (sseq: number, data: Uint8Array) => {
    let u: StoredUpdate;
    try {
      u = decodeUpdate(data, src.toSeq(sseq));
    } catch {
      return;
    }
    onUpdate(u);
  };
  if (stop - start < DIRECT_REPLAY) {
    const seqs = Array.from({ length: stop - start + 1 }, (_, i) => start + i);
    const msgs = await Promise.all(
      seqs.map((seq) =>
        jsm.streams.getMessage(src.stream, { seq }).catch((err: unknown) => {
          if (isNoMessage(err)) return null;
          throw new TransportUnavailableError(`cannot read the history from NATS: ${errorMessage(err)}`);
        }),
      ),
    );
    for (const m of msgs) if (m) emit(m.seq, m.data);
    return;
  }
  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearInterval(timer);
      void consumer.stop();
      if (err) reject(err);
      else resolve();
    };
    const consumer = new OrderedPush(nc, jsm, src.stream, src.filter, start, {
      message: (sseq, msg, pending) => {
        if (sseq > stop) return finish();
        try {
          emit(sseq, msg.data);
        } catch (err) {
          return finish(err instanceof Error ? err : new Error(String(err)));
        }
        if (sseq >= stop || pending === 0) finish();
      },
      idle: () => finish(),
      failed: (err) => finish(new TransportUnavailableError(`cannot read the history from NATS: ${errorMessage(err)}`)),
    });
    const timer = setInterval(() => {
      if (!src.linked()) finish(new TransportUnavailableError('the connection to NATS was lost during a history replay'));
      else if (Date.now() - consumer.lastActivity > HEARTBEAT * 5) {
        finish(new TransportUnavailableError('history replay from NATS stalled'));
      }
    }, 250);
    void consumer.reset();
  });
}

/** Id of the last stored update, or `earliest` when the stream is empty. */
export async function readLastEventId(jsm: JetStreamManager, stream: string): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      const { state } = await jsm.streams.info(stream);
      if (state.messages === 0) return 'earliest';
      const m = await jsm.streams.getMessage(stream, { seq: state.last_seq });
      return decodeUpdate(m.data, 0n).id;
    } catch (err) {
      if (isNoMessage(err) && attempt < 3) continue; // trimmed meanwhile
      throw new TransportUnavailableError(`cannot read the last event id from NATS: ${errorMessage(err)}`);
    }
  }
}
