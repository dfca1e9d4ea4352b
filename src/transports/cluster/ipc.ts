/*
 * The IPC channel itself: the port abstraction over a cluster worker or this process's parent,
 * and the outbox that batches one event-loop turn's ops into one message. Separate from the
 * protocol (what the ops mean) and from either end (which ops they send), so both ends share it
 * and tests can plug an in-memory port in.
 */
import type { Worker } from 'node:cluster';
import { CLUSTER_CHUNK, type PrimaryOp, type Wire, type WorkerOp } from './protocol.js';

/** One end of an IPC channel carrying JSON-serialisable messages. */
export interface IpcPort {
  readonly connected: boolean;
  /** Sends a message; `done` is called once it is written (or failed: errors are never thrown). */
  send(message: unknown, done?: (err: Error | null) => void): void;
  /** Subscribes to incoming messages; returns the unsubscribe function. */
  onMessage(listener: (message: unknown) => void): () => void;
  /** Called once when the channel closes. */
  onDisconnect(listener: () => void): () => void;
}

/** What both ends of the channel are: an emitter of 'message' and 'disconnect' that can send. */
interface Channel {
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message' | 'disconnect', listener: (...args: never[]) => void): unknown;
  once(event: 'disconnect', listener: () => void): unknown;
}

function channelPort(channel: Channel, isConnected: () => boolean, write: (message: unknown, cb: (err: Error | null) => void) => void, gone: string): IpcPort {
  return {
    get connected() {
      return isConnected();
    },
    send(message, done) {
      if (!isConnected()) {
        done?.(new Error(gone));
        return;
      }
      try {
        write(message, (err) => done?.(err ?? null));
      } catch (err) {
        done?.(err as Error);
      }
    },
    onMessage(listener) {
      channel.on('message', listener);
      return () => channel.off('message', listener);
    },
    onDisconnect(listener) {
      channel.once('disconnect', listener);
      return () => channel.off('disconnect', listener);
    },
  };
}

/** The port of a cluster worker, seen from the primary. */
export function workerPort(worker: Worker): IpcPort {
  return channelPort(
    worker as unknown as Channel,
    () => worker.isConnected(),
    (message, cb) => worker.send(message as never, undefined as never, cb),
    'worker disconnected',
  );
}

/** The port of this process to its parent (the cluster primary). Throws without an IPC channel. */
export function processPort(): IpcPort {
  if (typeof process.send !== 'function') throw new Error('the cluster transport needs an IPC channel to the primary process');
  return channelPort(
    process as unknown as Channel,
    () => process.connected && typeof process.send === 'function',
    (message, cb) => process.send!(message, undefined, {}, cb),
    'primary disconnected',
  );
}

const ignore = (): void => {};

/**
 * Ops waiting to be sent on one port: everything posted in the same event-loop turn leaves as
 * one message (flushed on `setImmediate`), deliveries merged into one `d` op.
 */
export class Outbox {
  /** Messages handed to the channel and not written yet (the peer is not reading). */
  backlog = 0;
  private ops: Array<WorkerOp | PrimaryOp> = [];
  private deliveries: Wire[] | null = null;
  private scheduled = false;
  private readonly flushNow = (): void => {
    this.scheduled = false;
    this.flush();
  };

  constructor(private readonly port: IpcPort, private readonly batch: boolean) {}

  post(op: WorkerOp | PrimaryOp): void {
    this.ops.push(op);
    if (op.t === 'd') this.deliveries = op.u;
    else this.deliveries = null;
    this.schedule();
  }

  deliver(w: Wire): void {
    if (this.deliveries && this.deliveries.length < CLUSTER_CHUNK) this.deliveries.push(w);
    else {
      if (this.deliveries) this.flush();
      this.post({ t: 'd', u: [w] });
    }
  }

  /** Sends whatever is queued, then `op` on its own (large ops: history chunks). */
  sendNow(op: WorkerOp | PrimaryOp): void {
    this.flush();
    this.send({ qs: [op] }, ignore);
  }

  private send(message: { qs: Array<WorkerOp | PrimaryOp> }, done: (err: Error | null) => void): void {
    this.backlog++;
    this.port.send(message, (err) => {
      this.backlog--;
      done(err);
    });
  }

  private schedule(): void {
    if (!this.batch) return this.flush();
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flushNow);
  }

  flush(done: (err: Error | null) => void = ignore): void {
    if (this.ops.length === 0) {
      done(null);
      return;
    }
    const ops = this.ops;
    this.ops = [];
    this.deliveries = null;
    this.send({ qs: ops }, done);
  }

  /** Drops what is queued (the port is gone). */
  clear(): void {
    this.ops = [];
    this.deliveries = null;
  }
}
