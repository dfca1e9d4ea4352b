/**
 * HTTP/2 liveness: a PING on every session the peer has been silent on, and the session closed
 * when the PING is not acknowledged in time. An event stream only ever writes, so without this a
 * browser that vanished without a FIN (dead Wi-Fi, sleeping laptop, a NAT that forgot the flow)
 * keeps its subscriptions "active" until TCP gives up on the unacknowledged writes, 15 minutes
 * with Linux defaults; HTTP/1.1 streams have TCP keepalive on their own socket for that, but an
 * h2 session's streams share a socket the hub does not tune per stream.
 */
import type http2 from 'node:http2';
import type { Logger } from '../observability/logger.js';

export interface H2KeepaliveOptions {
  /** A session nothing was read from for this long is pinged, in ms; 0 = never. */
  interval: number;
  /** How long the PING ack may take before the session is closed, in ms. */
  timeout: number;
  logger?: Logger | undefined;
}

/**
 * Arms the PINGs on every session `server` accepts. Whether the peer spoke is read from the
 * socket's byte counter, which costs nothing per frame: an idle session is pinged every
 * `interval`, so a silent drop is found within `interval + timeout`; on a session with inbound
 * traffic (new requests, window updates) the next PING may come one interval later, at most
 * `2 × interval + timeout`.
 */
export function keepSessionsAlive(server: http2.Http2Server | http2.Http2SecureServer, options: H2KeepaliveOptions): void {
  const { interval, timeout, logger } = options;
  if (!(interval > 0)) return;
  server.on('session', (session: http2.ServerHttp2Session) => watch(session, interval, Math.max(1, timeout), logger));
}

function watch(session: http2.ServerHttp2Session, interval: number, timeout: number, logger: Logger | undefined): void {
  // The proxy node:http2 hands out forwards bytesRead to the real (TCP or TLS) socket.
  const socket = session.socket as { bytesRead?: number } | undefined;
  const bytesRead = (): number => socket?.bytesRead ?? 0;
  let seen = bytesRead();
  let deadline: NodeJS.Timeout | undefined;

  const tick = setInterval(() => {
    if (session.destroyed || session.closed) return stop();
    const read = bytesRead();
    if (read !== seen || deadline) {
      seen = read;
      return;
    }
    const sentAt = performance.now();
    const sent = session.ping((err) => {
      clearTimeout(deadline);
      deadline = undefined;
      // Counted from the ack itself: an idle peer answering keeps being pinged every interval.
      if (!err) seen = bytesRead();
    });
    // Refused only when too many PINGs are outstanding, which the deadline already handles.
    if (!sent) return;
    deadline = setTimeout(() => {
      deadline = undefined;
      if (session.destroyed) return;
      logger?.info(
        { remoteAddress: session.socket?.remoteAddress, waitedMs: Math.round(performance.now() - sentAt) },
        'HTTP/2 session closed: PING not acknowledged (peer gone)',
      );
      // No GOAWAY handshake to wait for: the peer is not listening. Its streams close with it,
      // which ends their subscriptions.
      session.destroy();
    }, timeout);
    deadline.unref();
  }, interval);
  tick.unref();

  function stop(): void {
    clearInterval(tick);
    clearTimeout(deadline);
    deadline = undefined;
  }
  session.once('close', stop);
}

