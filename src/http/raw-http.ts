import { EventEmitter } from 'node:events';
import type http from 'node:http';
import type net from 'node:net';
import { HUB_PATH } from '../core/subscription.js';
import { isFieldValue } from './header-value.js';

/**
 * The request and response objects of the HTTP/1.1 raw-socket path (raw-front.ts decides which
 * requests take it). node:http keeps a request, a response and a parser alive for every open
 * stream: 10–15 KB each, most of a subscriber's cost. A subscription is a single GET whose
 * response never ends, so once its head is parsed nothing of HTTP is needed but chunked framing.
 * A plain publish needs only its head, its body and an answer with a length, after which the
 * connection carries the next one.
 */

export const MAX_HEAD = 16 * 1024;
const SUBSCRIBE_PREFIXES = [`GET ${HUB_PATH}?`, `GET ${HUB_PATH} `, `HEAD ${HUB_PATH}?`, `HEAD ${HUB_PATH} `];
const PUBLISH_PREFIXES = [`POST ${HUB_PATH}?`, `POST ${HUB_PATH} `];
export const HEAD_END = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');
const LAST_CHUNK = Buffer.from('0\r\n\r\n');

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** What a connection's next request looks like from its first bytes; undefined: too few yet. */
export function requestKind(buf: Buffer): 'subscribe' | 'publish' | false | undefined {
  const s = buf.toString('latin1', 0, Math.min(buf.length, HUB_PATH.length + 6));
  let undecided = false;
  for (const [kind, prefixes] of [['subscribe', SUBSCRIBE_PREFIXES], ['publish', PUBLISH_PREFIXES]] as const) {
    for (const p of prefixes) {
      if (s.length >= p.length ? s.startsWith(p) : p.startsWith(s)) {
        if (s.length >= p.length) return kind;
        undecided = true;
      }
    }
  }
  return undecided ? undefined : false;
}

export interface ParsedHead {
  method: string;
  url: string;
  headers: Record<string, string>;
  minor: number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Bytes llhttp refuses in a field value: a bare CR or LF, NUL and the other controls but HTAB.
// eslint-disable-next-line no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;

/**
 * Parses a request head; null for anything node:http's parser would judge (and refuse with 400)
 * rather than this path: a value carrying a bare CR must not reach a header the hub writes.
 */
export function parseHead(text: string): ParsedHead | null {
  const lines = text.split('\r\n');
  const m = /^(GET|HEAD|POST) ([\x21-\x7e]+) HTTP\/1\.([01])$/.exec(lines[0] ?? '');
  if (!m) return null;
  const headers: Record<string, string> = Object.create(null) as Record<string, string>;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const c = line.indexOf(':');
    if (c <= 0) return null;
    // No whitespace before the colon, no obs-fold (RFC 9112 §5.1, §5.2).
    const rawName = line.slice(0, c);
    if (!TOKEN.test(rawName)) return null;
    const name = rawName.toLowerCase();
    const value = line.slice(c + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (BAD_VALUE.test(value)) return null;
    const prev = headers[name];
    headers[name] = prev === undefined ? value : `${prev}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  return { method: m[1]!, url: m[2]!, headers, minor: Number(m[3]) };
}

// Chunk-framed copies of SSE frames. Frames are shared by every subscriber of an update, so the
// framing is done once per update too.
const framed = new WeakMap<Buffer, Buffer>();
// A broadcast writes the same buffer to every stream in a row: skip even the WeakMap lookup.
let lastData: Buffer | null = null;
let lastFramed: Buffer | null = null;
function chunk(data: Buffer): Buffer {
  if (data === lastData) return lastFramed!;
  let f = framed.get(data);
  if (!f) {
    f = Buffer.concat([Buffer.from(data.length.toString(16) + '\r\n'), data, CRLF]);
    framed.set(data, f);
  }
  lastData = data;
  lastFramed = f;
  return f;
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK', 204: 'No Content', 304: 'Not Modified', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden',
  404: 'Not Found', 405: 'Method Not Allowed', 413: 'Content Too Large', 429: 'Too Many Requests',
  500: 'Internal Server Error', 503: 'Service Unavailable',
};

/** The slice of IncomingMessage the hub reads. */
export class RawRequest extends EventEmitter {
  readonly httpVersionMajor = 1;
  readonly httpVersionMinor: number;
  readonly complete = true;
  constructor(
    readonly method: string,
    readonly url: string,
    readonly headers: Record<string, string>,
    readonly socket: net.Socket,
    minor: number,
    /** A publish's whole body, read with the head (readBody answers with it). */
    readonly rawBody: Buffer | null = null,
  ) {
    super();
    this.httpVersionMinor = minor;
  }
}

/** What a long-lived stream attaches to its response instead of three listener closures. */
export interface StreamListener {
  onStreamClose(): void;
  onStreamError(): void;
  onStreamDrain(): void;
}

const RESPONSE = Symbol('quicksilver.rawResponse');
type SocketWithResponse = net.Socket & { [RESPONSE]?: RawResponse };
function forwardClose(this: SocketWithResponse): void {
  const res = this[RESPONSE];
  if (!res) return;
  res.stream?.onStreamClose();
  res.emit('close');
}
function forwardDrain(this: SocketWithResponse): void {
  const res = this[RESPONSE];
  if (!res) return;
  res.stream?.onStreamDrain();
  res.emit('drain');
}
function forwardError(this: SocketWithResponse, err: Error): void {
  const res = this[RESPONSE];
  if (!res) return;
  res.stream?.onStreamError();
  // A peer resetting a refused or finished request is routine (the 'close' that follows says it
  // all): an 'error' nobody listens for would throw and take the whole hub down.
  if (res.listenerCount('error') > 0) res.emit('error', err);
}
const LISTENING = Symbol('quicksilver.rawListeners');

/** Whether a Connection header value asks for the connection to close. */
export function asksClose(value: string): boolean {
  return /(^|,)\s*close\s*(,|$)/i.test(value);
}

/** `Date` header value, computed once per second rather than once per response. */
let dateSecond = 0;
let dateValue = '';
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateValue = new Date(now).toUTCString();
  }
  return dateValue;
}

/**
 * A response on a connection that carries more requests (keep-alive publishes): `done` is called
 * once it is written, with whether the connection closes after it.
 */
export interface KeepAlive {
  /** The client asked for the connection to close after this response. */
  readonly closeAfter: boolean;
  readonly timeoutSeconds: number;
  done(closed: boolean): void;
}

function uncork(res: RawResponse): void {
  res.flush();
}

/** The slice of ServerResponse the hub writes with; streams use chunked transfer coding. */
export class RawResponse {
  statusCode = 200;
  headersSent = false;
  /** Set by a subscription: gets the socket's close, error and drain directly. */
  stream: StreamListener | null = null;
  private pending: Record<string, string | number | string[]> | null = Object.create(null) as Record<string, string | number | string[]>;
  private chunked = false;
  private finished = false;
  private corked = false;

  // Created on first use: an EventEmitter's null-prototype listener table is a dictionary of
  // ~160 bytes, paid by every stream although subscriptions attach a StreamListener instead.
  private emitter: EventEmitter | null = null;

  constructor(
    private readonly socket: net.Socket,
    private readonly head: boolean,
    /** HTTP/1.0 clients know no chunked coding: their stream ends with the connection. */
    private readonly http10: boolean,
    /** Set for a response after which the connection may carry another request. */
    private readonly keepAlive: KeepAlive | null = null,
  ) {
    // Module-level listeners find their response through the socket: no closures per stream,
    // which a hub holding 100k streams would pay for 100k times. A keep-alive connection adds
    // them once, for all its responses.
    const tagged = socket as SocketWithResponse & { [LISTENING]?: true };
    tagged[RESPONSE] = this;
    if (!tagged[LISTENING]) {
      tagged[LISTENING] = true;
      socket.on('close', forwardClose);
      socket.on('drain', forwardDrain);
      socket.on('error', forwardError);
    }
  }

  /** Whether the connection stays open for another request after this response. */
  private reuse = false;

  on(event: string, listener: (...args: unknown[]) => void): this {
    (this.emitter ??= new EventEmitter()).on(event, listener);
    return this;
  }

  once(event: string, listener: (...args: unknown[]) => void): this {
    (this.emitter ??= new EventEmitter()).once(event, listener);
    return this;
  }

  off(event: string, listener: (...args: unknown[]) => void): this {
    this.emitter?.off(event, listener);
    return this;
  }

  removeListener(event: string, listener: (...args: unknown[]) => void): this {
    return this.off(event, listener);
  }

  emit(event: string, ...args: unknown[]): boolean {
    return this.emitter?.emit(event, ...args) ?? false;
  }

  listenerCount(event: string): number {
    return this.emitter?.listenerCount(event) ?? 0;
  }

  /** The response doubles as the subscriber's sink: write, end and destroy are all here. */
  attach(stream: StreamListener): void {
    this.stream = stream;
  }

  get writableEnded(): boolean {
    return this.finished;
  }

  setHeader(name: string, value: string | number | readonly string[]): this {
    if (this.pending) this.pending[name] = value as string;
    return this;
  }

  getHeader(name: string): string | number | string[] | undefined {
    if (!this.pending) return undefined;
    const lower = name.toLowerCase();
    for (const k of Object.keys(this.pending)) if (k.toLowerCase() === lower) return this.pending[k];
    return undefined;
  }

  removeHeader(name: string): void {
    if (!this.pending) return;
    const lower = name.toLowerCase();
    for (const k of Object.keys(this.pending)) if (k.toLowerCase() === lower) delete this.pending[k];
  }

  writeHead(status: number, headers?: Record<string, string | number | readonly string[]>): this {
    if (this.headersSent) return this;
    const all: Record<string, string | number | readonly string[]> = { ...this.pending, ...headers };
    let hasLength = false;
    let closeAsked = false;
    let out = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Unknown'}\r\n`;
    for (const [k, v] of Object.entries(all)) {
      const lower = k.toLowerCase();
      if (lower === 'connection') {
        closeAsked ||= asksClose(String(v));
        continue;
      }
      if (lower === 'transfer-encoding') continue;
      if (lower === 'content-length') hasLength = true;
      for (const one of Array.isArray(v) ? v : [v]) {
        const value = String(one);
        // As node:http does (ERR_INVALID_CHAR): written as latin1, anything else would be
        // truncated to its low byte, and U+010D U+010A would become CR LF.
        if (!TOKEN.test(k) || !isFieldValue(value)) throw new TypeError(`Invalid character in header content ["${k}"]`);
        out += `${k}: ${value}\r\n`;
      }
    }
    this.statusCode = status;
    this.pending = null;
    out += `Date: ${httpDate()}\r\n`;
    // A never-ending event stream needs chunked framing; anything else closes the connection,
    // which keeps this path free of keep-alive bookkeeping.
    this.chunked = !hasLength && !this.head && !this.http10 && status !== 204 && status !== 304;
    // Only a publish's answer, with its length known, leaves the connection open for the next
    // request (unless the client or the handler said close): streams always close it, since
    // saying keep-alive made clients (undici) put an ended stream's socket back in their pool and
    // lose the next request on it ("other side closed").
    const ka = this.keepAlive;
    this.reuse = ka !== null && hasLength && !ka.closeAfter && !closeAsked;
    if (this.reuse) out += `Connection: keep-alive\r\nKeep-Alive: timeout=${ka!.timeoutSeconds}\r\n`;
    else out += this.chunked ? 'Transfer-Encoding: chunked\r\nConnection: close\r\n' : 'Connection: close\r\n';
    this.headersSent = true;
    // The head, the opening comment and a replay are written in the same tick: one writev.
    this.corked = true;
    this.socket.cork();
    process.nextTick(uncork, this);
    this.socket.write(out + '\r\n', 'latin1');
    return this;
  }

  write(data: Buffer | string): boolean {
    if (this.finished) return false;
    if (!this.headersSent) this.writeHead(this.statusCode);
    if (this.head) return true;
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    if (buf.length === 0) return true;
    // Live updates arrive already batched per turn (DeliveryBatch): one write, no corking needed.
    return this.socket.write(this.chunked ? chunk(buf) : buf);
  }

  /** @internal */
  flush(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  end(data?: Buffer | string): this {
    if (this.finished) return this;
    if (data !== undefined && !this.headersSent && !this.chunked) {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      this.setHeader('Content-Length', buf.length);
    }
    if (data !== undefined) this.write(data);
    else if (!this.headersSent) {
      this.setHeader('Content-Length', 0);
      this.writeHead(this.statusCode);
    }
    this.finished = true;
    if (this.chunked) this.socket.write(LAST_CHUNK);
    if (this.reuse) {
      this.keepAlive!.done(false);
      return this;
    }
    this.socket.end();
    this.keepAlive?.done(true);
    return this;
  }

  destroy(): void {
    this.finished = true;
    this.socket.destroy();
    this.keepAlive?.done(true);
  }
}

