import type http from 'node:http';
import type net from 'node:net';
import { asksClose, HEAD_END, MAX_HEAD, parseHead, RawRequest, RawResponse, requestKind, type Handler, type KeepAlive, type ParsedHead } from './raw-http.js';

/**
 * The front of the HTTP/1.1 port: reads the first bytes of each request and serves the two the
 * hub lives on straight from the socket, handing every other connection to node:http.
 *
 * - A subscription is a single GET whose response never ends (raw-http.ts).
 * - A publish is a POST to the hub with a small body, usually one of many on a keep-alive
 *   connection: node:http's request, response and stream objects were most of its cost. It is
 *   taken raw when its head is plain (no Transfer-Encoding, Expect or Upgrade, HTTP/1.1, a
 *   Content-Length up to RAW_BODY_MAX) and its whole body has arrived with the head or in the
 *   next segment; the connection then stays raw for the publishes that follow.
 *
 * Anything else (other paths, chunked or slow bodies, HTTP/1.0, a GET after a publish) goes to
 * node:http at a request boundary, with the bytes already read put back, so node:http's own
 * parser, limits and timeouts judge it exactly as if it had seen the connection from the start.
 */

/** Largest publish body taken on the raw path; bigger ones are node:http's (and its 413). */
export const RAW_BODY_MAX = 64 * 1024;
/** Bytes a client may send ahead (pipelined) while its current publish is answered. */
const MAX_AHEAD = MAX_HEAD + RAW_BODY_MAX;
const DIGITS = /^[0-9]{1,9}$/;

// Connections still sending a request head, or idle between keep-alive requests, with their
// deadline: one timer for all of them rather than a Timeout object on every subscriber's socket.
const awaiting = new Map<net.Socket, number>();
// Raw publishes whose body did not come with the head: handed to node:http if it is not all there
// by the deadline, so a stalled body gets node:http's 408 rather than a cut connection.
const awaitingBody = new Map<net.Socket, { deadline: number; handOver(): void }>();
/** How long a body may lag its head before node:http takes the request over. */
const BODY_GRACE = 500;
let sweeper: NodeJS.Timeout | null = null;
function armSweep(): void {
  if (sweeper) return;
  sweeper = setInterval(() => {
    const now = Date.now();
    for (const [socket, deadline] of awaiting) {
      if (deadline <= now) {
        awaiting.delete(socket);
        awaitingBody.delete(socket);
        socket.destroy();
      }
    }
    for (const [socket, late] of awaitingBody) {
      if (late.deadline <= now) late.handOver();
    }
    if (awaiting.size === 0 && awaitingBody.size === 0 && sweeper) {
      clearInterval(sweeper);
      sweeper = null;
    }
  }, 250);
  sweeper.unref();
}
function ignore(): void {}
function forget(this: net.Socket): void {
  awaiting.delete(this);
  awaitingBody.delete(this);
}

/** Publishes answered on the raw path by this process, and connections handed to node:http (tests). */
export const rawFrontCounts = { publishes: 0, handedOver: 0 };

/** Sockets whose raw publish is being answered: a graceful shutdown lets those finish. */
const answering = new WeakSet<net.Socket>();
export function rawRequestInFlight(socket: net.Socket): boolean {
  return answering.has(socket);
}

function plainPublish(head: ParsedHead): number | null {
  const h = head.headers;
  if (head.method !== 'POST' || head.minor !== 1) return null;
  if (h['transfer-encoding'] !== undefined || h['expect'] !== undefined || h['upgrade'] !== undefined) return null;
  const length = h['content-length'];
  if (length === undefined || !DIGITS.test(length)) return null;
  const n = Number(length);
  return n <= RAW_BODY_MAX ? n : null;
}

export interface RawFrontOptions {
  /** How long a client may take to send a request head (and a raw publish's body). */
  headersTimeout: number;
  /** How long a keep-alive connection may stay idle between publishes (node:http's keepAliveTimeout). */
  keepAliveTimeout: number;
}

/**
 * Returns a connection listener: subscriptions and plain publishes are served raw, every other
 * request is handed to `fallback` (a node:http server) with the bytes already read put back.
 */
export function rawHttpFront(handler: Handler, fallback: http.Server, options: RawFrontOptions): (socket: net.Socket) => void {
  const { headersTimeout, keepAliveTimeout } = options;
  const keepAliveSeconds = Math.max(1, Math.floor(keepAliveTimeout / 1000));
  return (socket) => {
    let buffered: Buffer | null = null;
    /** Requests answered raw on this connection. */
    let served = 0;
    /** A raw publish is being answered: further bytes wait. */
    let busy = false;
    /** Data events seen with a complete publish head but not its whole body. */
    let bodyWaits = 0;
    awaiting.set(socket, Date.now() + headersTimeout);
    armSweep();

    const handOver = (): void => {
      rawFrontCounts.handedOver++;
      awaiting.delete(socket);
      awaitingBody.delete(socket);
      socket.off('data', onData);
      socket.off('error', ignore);
      socket.off('close', forget);
      socket.pause();
      if (buffered) socket.unshift(buffered);
      buffered = null;
      fallback.emit('connection', socket);
      // node:http reads what is already buffered through 'data' events: let them flow again.
      socket.resume();
    };

    const keepAlive = (closeAfter: boolean): KeepAlive => ({
      closeAfter,
      timeoutSeconds: keepAliveSeconds,
      done: (closed) => {
        if (!busy) return;
        busy = false;
        answering.delete(socket);
        served++;
        if (closed || socket.destroyed) return;
        awaiting.set(socket, Date.now() + (buffered ? headersTimeout : keepAliveTimeout));
        armSweep();
        socket.resume();
        // A pipelined request already read: served once this answer's call stack has unwound.
        if (buffered) process.nextTick(next);
      },
    });

    const next = (): void => {
      if (busy || !buffered || socket.destroyed) return;
      const kind = requestKind(buffered);
      // After a publish the connection either carries publishes or goes to node:http.
      if (kind === false || (kind === 'subscribe' && served > 0)) return handOver();
      if (kind === undefined) return;
      const end = buffered.indexOf(HEAD_END);
      if (end < 0) {
        if (buffered.length > MAX_HEAD) handOver();
        return;
      }
      const head = parseHead(buffered.toString('latin1', 0, end));
      // HTTP/1.1 without Host is node:http's to refuse (400), as Go's server does.
      if (head && head.minor === 1 && head.headers['host'] === undefined) return handOver();
      if (kind === 'subscribe') return subscribe(head, end);
      const length = head ? plainPublish(head) : null;
      if (head === null || length === null) return handOver();
      const total = end + 4 + length;
      if (buffered.length < total) {
        // The body may follow the head in the next segment (clients write them separately);
        // a body trickling in slower than that is node:http's, with its request timeout.
        if (++bodyWaits > 1) return handOver();
        awaitingBody.set(socket, { deadline: Date.now() + BODY_GRACE, handOver });
        armSweep();
        return;
      }
      bodyWaits = 0;
      awaitingBody.delete(socket);
      // A copy: the body must not keep a large read chunk alive, nor change if it is reused.
      const body = Buffer.from(buffered.subarray(end + 4, total));
      buffered = buffered.length > total ? buffered.subarray(total) : null;
      busy = true;
      rawFrontCounts.publishes++;
      answering.add(socket);
      awaiting.delete(socket);
      const req = new RawRequest('POST', head.url, head.headers, socket, 1, body);
      const res = new RawResponse(socket, false, false, keepAlive(asksClose(head.headers['connection'] ?? '')));
      handler(req as unknown as http.IncomingMessage, res as unknown as http.ServerResponse);
    };

    const subscribe = (head: ParsedHead | null, end: number): void => {
      const b = buffered!;
      // Bodies, pipelined requests and anything unusual take the regular path.
      if (
        !head ||
        end + 4 !== b.length ||
        head.headers['content-length'] !== undefined && head.headers['content-length'] !== '0' ||
        head.headers['transfer-encoding'] !== undefined ||
        head.headers['upgrade'] !== undefined ||
        head.headers['expect'] !== undefined
      ) {
        return handOver();
      }
      socket.off('data', onData);
      // From here the response's own listeners cover close and error: fewer listeners per socket
      // (three of a kind cost a 176-byte array each).
      socket.off('error', ignore);
      socket.off('close', forget);
      awaiting.delete(socket);
      buffered = null;
      // Browsers send UTF-8 in headers; node:http reads them as latin1, so do the same.
      const req = new RawRequest(head.method, head.url, head.headers, socket, head.minor);
      const res = new RawResponse(socket, head.method === 'HEAD', head.minor === 0);
      // A subscriber sends nothing more; anything it does send is ignored, not buffered.
      socket.on('data', ignore);
      handler(req as unknown as http.IncomingMessage, res as unknown as http.ServerResponse);
    };

    const onData = (data: Buffer): void => {
      if (!buffered && !busy) awaiting.set(socket, Date.now() + headersTimeout);
      buffered = buffered ? Buffer.concat([buffered, data]) : data;
      if (busy) {
        // Pipelined bytes wait for the current answer; past a bound, so does the client.
        if (buffered.length > MAX_AHEAD) socket.pause();
        return;
      }
      next();
    };
    socket.on('data', onData);
    socket.on('error', ignore);
    socket.once('close', forget);
  };
}
