/**
 * A TCP relay between a hub and its backend that a test can freeze, as a silently dropped link
 * would: no byte goes through in either direction, no FIN, no RST, sockets stay open. It models
 * what the network and the kernels do with the bytes meanwhile, which is what decides whether a
 * command the hub gave up on is applied later:
 *
 * - bytes sent during a freeze are held, and delivered when the link heals (TCP retransmits them);
 * - a connection the client closes gracefully (FIN) during a freeze still delivers what it sent,
 *   then ends: the kernel keeps retransmitting the unacknowledged data of a closed socket;
 * - a connection the client resets (RST) during a freeze delivers nothing more: a reset socket's
 *   unsent data is discarded. The server side learns about it once the link is back;
 * - a connection opened during a freeze completes its handshake (the kernel accepts on loopback;
 *   no SYN can be dropped without iptables) but reaches the server only when the link heals.
 */
import net from 'node:net';

interface Pair {
  client: net.Socket;
  upstream: net.Socket | null;
  toServer: Buffer[];
  toClient: Buffer[];
  clientEnded: boolean;
  serverEnded: boolean;
  /** The client reset the connection: nothing more of it may reach the server. */
  reset: boolean;
}

export class FaultRelay {
  private server: net.Server | null = null;
  private readonly pairs = new Set<Pair>();
  /** Client → server bytes are held (a full freeze). */
  private holdUp = false;
  /** Server → client bytes are held (a freeze, or only the answers lost). */
  private holdDown = false;
  /** Connections accepted so far (reconnections show here). */
  accepted = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  port = 0;

  async start(): Promise<this> {
    const server = net.createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.server = server;
    this.port = (server.address() as net.AddressInfo).port;
    return this;
  }

  /**
   * Stops forwarding, silently: the link drops every packet (`both`), or only those from the
   * server (`answers`: commands reach it and are applied, their answers are lost).
   */
  freeze(direction: 'both' | 'answers' = 'both'): void {
    this.holdUp = direction === 'both';
    this.holdDown = true;
  }

  /** The link works again: held bytes flow, held connections reach the server. */
  heal(): void {
    this.holdUp = false;
    this.holdDown = false;
    for (const p of [...this.pairs]) {
      if (p.reset) {
        this.drop(p);
        continue;
      }
      if (!p.upstream) this.connectUpstream(p);
      else this.flush(p);
    }
  }

  private accept(client: net.Socket): void {
    this.accepted++;
    const p: Pair = { client, upstream: null, toServer: [], toClient: [], clientEnded: false, serverEnded: false, reset: false };
    this.pairs.add(p);
    client.on('data', (d: Buffer) => {
      if (p.reset) return;
      if (this.holdUp || !p.upstream || p.upstream.connecting) p.toServer.push(d);
      else p.upstream.write(d);
    });
    client.on('end', () => {
      p.clientEnded = true;
      if (!this.holdUp && p.upstream && !p.upstream.connecting) this.flush(p);
    });
    client.on('error', () => {
      // ECONNRESET: the client reset its socket, whose unsent data is gone.
      p.reset = true;
      p.toServer = [];
      if (!this.holdUp) this.drop(p);
    });
    client.on('close', () => {
      if (!p.clientEnded && !p.reset) {
        p.reset = true;
        p.toServer = [];
      }
      if (!this.holdUp && p.reset) this.drop(p);
    });
    if (!this.holdUp) this.connectUpstream(p);
  }

  private connectUpstream(p: Pair): void {
    const up = net.connect({ host: this.targetHost, port: this.targetPort });
    p.upstream = up;
    up.setNoDelay(true);
    up.on('connect', () => this.flush(p));
    up.on('data', (d: Buffer) => {
      if (this.holdDown) p.toClient.push(d);
      else if (!p.client.destroyed) p.client.write(d);
    });
    up.on('end', () => {
      p.serverEnded = true;
      this.flush(p);
    });
    up.on('error', () => {
      if (!this.holdDown) this.drop(p);
    });
    up.on('close', () => {
      if (!this.holdDown) this.drop(p);
    });
  }

  private flush(p: Pair): void {
    const up = p.upstream;
    if (!this.holdUp && up && !up.connecting && !up.destroyed) {
      for (const d of p.toServer.splice(0)) up.write(d);
      if (p.clientEnded) up.end();
    }
    if (!this.holdDown && !p.client.destroyed) {
      for (const d of p.toClient.splice(0)) p.client.write(d);
      if (p.serverEnded) p.client.end();
    }
  }

  private drop(p: Pair): void {
    this.pairs.delete(p);
    p.client.destroy();
    p.upstream?.destroy();
  }

  /** Cuts every connection (RST to both sides). */
  cutAll(): void {
    for (const p of [...this.pairs]) {
      p.client.resetAndDestroy();
      p.upstream?.resetAndDestroy();
      this.pairs.delete(p);
    }
  }

  async close(): Promise<void> {
    this.holdUp = false;
    this.holdDown = false;
    for (const p of [...this.pairs]) this.drop(p);
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
