/** In-memory IPC channels for the cluster transport's tests: both ends in one process. */
import type { IpcPort } from '../src/transports/cluster/index.js';

/** One end of an in-memory IPC channel: messages are JSON-copied and arrive on a later turn, in order. */
export class FakePort implements IpcPort {
  sent = 0;
  open = true;
  /** While true, messages are queued and never written (a peer that does not read). */
  stalled = false;
  peer!: FakePort;
  private readonly listeners = new Set<(m: unknown) => void>();
  private readonly gone = new Set<() => void>();

  get connected(): boolean {
    return this.open;
  }

  send(message: unknown, done?: (err: Error | null) => void): void {
    if (!this.open) return done?.(new Error('closed'));
    this.sent++;
    if (this.stalled) return;
    const copy = JSON.parse(JSON.stringify(message)) as unknown;
    setImmediate(() => {
      for (const l of this.peer.listeners) l(copy);
      done?.(null);
    });
  }

  onMessage(l: (m: unknown) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  onDisconnect(l: () => void): () => void {
    this.gone.add(l);
    return () => this.gone.delete(l);
  }

  /** Closes the channel: both ends see the disconnect. */
  disconnect(): void {
    for (const q of [this, this.peer]) {
      if (!q.open) continue;
      q.open = false;
      for (const l of q.gone) l();
    }
  }
}

export function portPair(): [FakePort, FakePort] {
  const a = new FakePort();
  const b = new FakePort();
  a.peer = b;
  b.peer = a;
  return [a, b];
}
