import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request a callback server received. */
export interface Received {
  at: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** What the server answered (0 while pending, -1 when the sender was gone by then). */
  status: number;
  answeredAt?: number;
}

/**
 * A real webhook receiver on loopback: records every request and answers with what `respond`
 * says (a status, optionally after a delay). Counts acknowledged update ids.
 */
export class CallbackServer {
  readonly received: Received[] = [];
  respond: (r: Received) => number | Promise<number> = () => 204;
  private server: http.Server | null = null;
  port = 0;

  async start(port = 0): Promise<this> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r: Received = { at: Date.now(), headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), status: 0 };
        this.received.push(r);
        Promise.resolve(this.respond(r)).then((status) => {
          // A hub that died while the answer was pending never got it: not acknowledged (-1).
          r.answeredAt = Date.now();
          if (res.destroyed || req.socket.destroyed) {
            r.status = -1;
            return;
          }
          r.status = status;
          res.writeHead(status, { 'Content-Type': 'text/plain' });
          res.end(status < 300 ? '' : 'not now');
        }, () => res.destroy());
      });
    });
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  /** Ids of the requests received before `t` and not answered by then (in flight at `t`). */
  inFlightAt(t: number): string[] {
    return this.received
      .filter((r) => r.at <= t && (r.answeredAt === undefined || r.answeredAt >= t))
      .flatMap((r) => {
        const doc = JSON.parse(r.body) as { id: string } | Array<{ id: string }>;
        return Array.isArray(doc) ? doc.map((u) => u.id) : [doc.id];
      });
  }

  /** Bodies of acknowledged requests, parsed. */
  acknowledged(): Array<{ id: string; topics: string[]; type: string | null; data: string; private: boolean }> {
    return this.received.filter((r) => r.status >= 200 && r.status < 300).flatMap((r) => {
      const doc = JSON.parse(r.body) as unknown;
      return (Array.isArray(doc) ? doc : [doc]) as Array<{ id: string; topics: string[]; type: string | null; data: string; private: boolean }>;
    });
  }

  ackIds(): string[] {
    return this.acknowledged().map((u) => u.id);
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

/** Counts of each id in a list, keeping only those seen more than once. */
export function duplicates(ids: readonly string[]): Map<string, number> {
  const seen = new Map<string, number>();
  for (const id of ids) seen.set(id, (seen.get(id) ?? 0) + 1);
  return new Map([...seen].filter(([, n]) => n > 1));
}
