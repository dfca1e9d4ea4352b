/**
 * server/: running a hub as a process. It owns `serve` (HTTP/1.1, TLS + HTTP/2, h2c), the worker
 * cluster, startup from a loaded configuration and signal handling. It may import everything
 * below it (http/, core/, auth/, transports/, config/, observability/, util/), never the CLI.
 * This file is `serve`: listeners, the raw-socket front and graceful close.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { QuicksilverHub } from '../http/handler.js';
import { rawHttpFront, rawRequestInFlight } from '../http/raw-front.js';
import { type CertificateSlot, tlsFront } from './acme-tls.js';
import { keepSessionsAlive } from './h2-keepalive.js';
import type { Logger } from '../observability/logger.js';

export interface ServeOptions {
  /** `host:port`, `:port` (all interfaces) or `[::1]:port`. Port 0 picks a free one. */
  addr: string;
  /** PEM certificate and key: HTTPS with HTTP/2 (ALPN h2, falling back to HTTP/1.1). */
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** Also accept cleartext HTTP/2 with prior knowledge (h2c) on the plain port. */
  h2c?: boolean | undefined;
  /** How long shutdown waits for streams to end before cutting them, in ms. Default 10 000. */
  shutdownTimeout?: number | undefined;
  /** Pending-connection queue length (the kernel caps it at net.core.somaxconn). Default 4096. */
  backlog?: number | undefined;
  /** Slow-loris protection: time allowed to send request headers, in ms. Default 10 000. */
  headersTimeout?: number | undefined;
  /**
   * Time allowed to send a whole request, headers and body, in ms (the reference hub's read
   * timeout); 0 = no limit. Default 30 000. It bounds reading the request only: a response
   * (an event stream) lasts as long as it lasts.
   */
  requestTimeout?: number | undefined;
  logger?: Logger | undefined;
  /**
   * HTTP/2: a session the peer has been silent on for this long is sent a PING, in ms; 0 = never.
   * Default 30 000. This is how a vanished h2 peer's subscriptions end (h2-keepalive.ts).
   */
  h2PingInterval?: number | undefined;
  /** HTTP/2: a session whose PING is not acknowledged within this is closed, in ms. Default 15 000. */
  h2PingTimeout?: number | undefined;
  /**
   * Certificates obtained over ACME (instead of certFile/keyFile): served with TLS-ALPN-01
   * challenges, and swapped in place on renewal, streams staying open (acme-tls.ts).
   */
  certificates?: CertificateSlot | undefined;
}

export interface RunningServer {
  readonly url: string;
  readonly address: AddressInfo;
  /** Graceful shutdown: stop accepting, tell subscribers to reconnect, drain, close. */
  close(): Promise<void>;
}

export function parseAddr(addr: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*))?:(\d+)$/.exec(addr.trim());
  if (!m) throw new Error(`invalid address "${addr}": expected host:port or :port`);
  const host = m[1] ?? (m[2] || undefined);
  return { host, port: Number(m[3]) };
}

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n');

/**
 * HTTP/2 has no request timeout of its own: a stream whose request body is still coming after
 * `ms` is answered 408 (or cancelled, when its response has started) and closed. Streams whose
 * request ended with its headers (every subscription) arm nothing.
 */
function boundRequestBodies(server: http2.Http2Server | http2.Http2SecureServer, ms: number): void {
  if (ms <= 0) return;
  server.on('stream', (stream: http2.ServerHttp2Stream) => {
    if (stream.endAfterHeaders) return;
    const timer = setTimeout(() => {
      if (stream.closed || stream.destroyed) return;
      if (!stream.headersSent) {
        stream.respond({ ':status': 408, 'content-type': 'text/plain; charset=utf-8' });
        stream.end('Request Timeout: the request was not received in time\n');
      }
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }, ms);
    timer.unref();
    const clear = (): void => clearTimeout(timer);
    stream.once('end', clear);
    stream.once('close', clear);
  });
}

/** Listens on `addr` and serves the hub over HTTP/1.1, HTTP/2 with TLS, or h2c. */
export async function serve(hub: QuicksilverHub, options: ServeOptions): Promise<RunningServer> {
  const { host, port } = parseAddr(options.addr);
  const handler = hub.handler as (req: http.IncomingMessage, res: http.ServerResponse) => void;
  const sockets = new Set<net.Socket>();
  const requestTimeout = options.requestTimeout ?? 30_000;
  // Headers are part of the request: their own limit cannot be longer (node:http refuses it).
  const headersTimeout = Math.min(options.headersTimeout ?? 10_000, requestTimeout > 0 ? requestTimeout : Infinity);
  // node:http checks its timeouts on an interval (30 s by default): a 2 s limit must be checked
  // often enough to hold. Only connections still reading a request are visited.
  const checkEvery = Math.max(100, Math.min(1000, Math.floor(Math.min(headersTimeout || Infinity, requestTimeout || Infinity) / 4)));
  const h1Timeouts = { headersTimeout, requestTimeout, connectionsCheckingInterval: checkEvery };
  const h2Pings = { interval: options.h2PingInterval ?? 30_000, timeout: options.h2PingTimeout ?? 15_000, logger: options.logger };
  let listener: net.Server;
  let scheme = 'http';
  const closers: Array<() => void> = [];

  const slot = options.certificates;
  if ((options.certFile && options.keyFile) || slot) {
    scheme = 'https';
    const pair = slot ? slot.certificate : { cert: readFileSync(options.certFile as string), key: readFileSync(options.keyFile as string) };
    const secure = http2.createSecureServer(
      {
        ...pair,
        allowHTTP1: true,
        settings: { maxConcurrentStreams: 1000 },
      },
      handler as never,
    );
    // HTTP/1.1 clients of the TLS port are served by node:http's machinery, reading these.
    Object.assign(secure, h1Timeouts);
    boundRequestBodies(secure, requestTimeout);
    keepSessionsAlive(secure, h2Pings);
    if (slot) {
      // New handshakes get the renewed certificate; established connections keep theirs.
      const off = slot.onChange((e) => {
        if ('cert' in e) secure.setSecureContext({ cert: e.cert.cert, key: e.cert.key });
      });
      listener = net.createServer({ noDelay: true }, tlsFront(secure, slot, headersTimeout));
      closers.push(off, () => secure.close());
    } else {
      listener = secure;
      closers.push(() => secure.close());
    }
  } else {
    const keepAliveTimeout = 5_000;
    const h1 = http.createServer({ ...h1Timeouts, keepAliveTimeout }, handler);
    const rawFront = rawHttpFront(handler, h1, { headersTimeout, keepAliveTimeout });
    // h1 never listens itself (the front below hands it connections), but node:http starts the
    // interval that enforces headersTimeout and requestTimeout on 'listening': without it a
    // request trickled byte by byte would be held forever.
    h1.emit('listening');
    if (options.h2c) {
      const h2 = http2.createServer({ settings: { maxConcurrentStreams: 1000 } }, handler as never);
      boundRequestBodies(h2, requestTimeout);
      keepSessionsAlive(h2, h2Pings);
      // One port, two protocols: a connection starting with the HTTP/2 preface goes to h2.
      const front = net.createServer((socket) => {
        socket.once('readable', () => {
          const head = socket.read(H2_PREFACE.length) as Buffer | null ?? (socket.read() as Buffer | null);
          if (!head) {
            socket.destroy();
            return;
          }
          socket.unshift(head);
          if (head.length >= H2_PREFACE.length && head.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)) {
            h2.emit('connection', socket);
          } else {
            rawFront(socket);
          }
        });
      });
      listener = front;
      closers.push(() => h1.close(), () => h2.close());
    } else {
      // Subscriptions and plain publishes are answered from the raw socket (less memory per
      // stream, less work per publish); the rest by h1.
      const front = net.createServer({ noDelay: true }, rawFront);
      listener = front;
      closers.push(() => h1.close());
    }
  }
  // One function for every socket, not a closure each.
  function untrack(this: net.Socket): void {
    sockets.delete(this);
  }
  listener.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', untrack);
  });

  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen({ port, host, backlog: options.backlog ?? 4096 }, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  const address = listener.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${scheme}://${host ?? (shownHost === '[::]' || shownHost === '0.0.0.0' ? 'localhost' : shownHost)}:${address.port}`;

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      listener.close();
      for (const c of closers) c();
      await hub.close();
      const deadline = Date.now() + (options.shutdownTimeout ?? 10_000);
      while (sockets.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        // Idle keep-alive connections have nothing to drain.
        for (const s of sockets) if (!(s as net.Socket & { _httpMessage?: unknown })._httpMessage && !rawRequestInFlight(s)) s.end();
      }
      for (const s of sockets) s.destroy();
    })();
    return closing;
  };
  return { url, address, close };
}
