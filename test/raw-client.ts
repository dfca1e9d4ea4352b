/**
 * Requests as exact bytes, and responses read back by Node's own HTTP parser. A hostile request
 * (a bare CR in Host, UTF-8 in Last-Event-ID) cannot be sent with http.request, which validates
 * what it sends; and a response head must be judged by a real parser, not by a regex that could
 * share the hub's mistakes.
 */
import http from 'node:http';
import net from 'node:net';

export interface RawExchange {
  /** Everything received up to the end of the response head (or the connection's end). */
  head: Buffer;
  /** Bytes received after the head, up to when the exchange stopped. */
  rest: Buffer;
}

const HEAD_END = Buffer.from('\r\n\r\n');

/**
 * Sends `request` and collects the response until its head is complete (plus `until`, when given,
 * on what follows), the connection ends, or `timeout` ms pass.
 */
export function rawExchange(
  port: number,
  request: Buffer | string,
  options: { until?: (rest: Buffer, head: string) => boolean; timeout?: number } = {},
): Promise<RawExchange> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const end = got.indexOf(HEAD_END);
      resolve(end < 0 ? { head: got, rest: Buffer.alloc(0) } : { head: got.subarray(0, end + 4), rest: got.subarray(end + 4) });
    };
    const timer = setTimeout(finish, options.timeout ?? 3000);
    socket.on('error', finish);
    socket.on('close', finish);
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf(HEAD_END);
      if (end < 0) return;
      if (!options.until || options.until(got.subarray(end + 4), got.toString('latin1', 0, end))) finish();
    });
    socket.write(typeof request === 'string' ? Buffer.from(request, 'latin1') : request);
  });
}

export interface ParsedHead {
  status: number;
  /** Header lines in order, as [name, value] with the name lower-cased; values as Node gives them (latin1). */
  headers: Array<[string, string]>;
}

let replayServer: http.Server | null = null;
let replayPort = 0;
const toReplay: Buffer[] = [];

/**
 * Parses a response head with Node's HTTP client: a local server answers one request with the
 * head's bytes exactly, and http.get reads them. Resolves null when Node's parser refuses them.
 */
export async function parseHead(head: Buffer): Promise<ParsedHead | null> {
  if (!replayServer) {
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.once('data', () => {
        const bytes = toReplay.shift() ?? Buffer.alloc(0);
        socket.end(bytes);
      });
    }) as unknown as http.Server;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    server.unref();
    replayPort = (server.address() as net.AddressInfo).port;
    replayServer = server;
  }
  // Only the head: a stream's body never ends, and the head is what is judged here.
  toReplay.push(head);
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: replayPort, path: '/', agent: false }, (res) => {
      const headers: Array<[string, string]> = [];
      for (let i = 0; i < res.rawHeaders.length; i += 2) headers.push([res.rawHeaders[i]!.toLowerCase(), res.rawHeaders[i + 1]!]);
      resolve({ status: res.statusCode ?? 0, headers });
      res.on('error', () => {});
      res.resume();
    });
    req.on('error', () => resolve(null));
  });
}

/** A header value as the hub meant it: headers carry UTF-8 bytes, which Node shows as latin1. */
export function utf8Value(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

export function headerOf(head: ParsedHead, name: string): string[] {
  return head.headers.filter(([n]) => n === name).map(([, v]) => v);
}

/** Percent-encodes a string's UTF-8 bytes (every byte, so nothing depends on URL rules). */
export function percent(s: string): string {
  return [...Buffer.from(s, 'utf8')].map((b) => '%' + b.toString(16).padStart(2, '0')).join('');
}
