/**
 * The TLS side of automatic HTTPS: what a TLS listener serves (the current certificate, swapped
 * in place on renewal, and the TLS-ALPN-01 challenge certificates while an order is pending), and
 * the front that sends a CA's validation handshake to the challenge certificate.
 *
 * RFC 8737's validator offers only the `acme-tls/1` protocol, and the certificate must be chosen
 * for it. Node picks the certificate in SNICallback, before ALPN is known, so while a challenge
 * is pending the front reads the ClientHello itself (one record, bounded in size and time): a
 * handshake offering `acme-tls/1` for a challenged name goes to a challenge-only TLS server,
 * every other one to the hub's. With no challenge pending, connections go straight through.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface TlsPair { cert: string; key: string }

/** A change of a slot, as sent from the process that runs ACME to the ones that serve. */
export type SlotEvent = { cert: TlsPair } | { alpn: string; pair?: TlsPair | undefined };

export const ACME_TLS_PROTOCOL = 'acme-tls/1';

export class CertificateSlot {
  private current: TlsPair | undefined;
  private readonly challenges = new Map<string, { pair: TlsPair; context: tls.SecureContext }>();
  private readonly listeners = new Set<(e: SlotEvent) => void>();

  get certificate(): TlsPair | undefined { return this.current; }
  get challenging(): boolean { return this.challenges.size > 0; }

  apply(e: SlotEvent): void {
    if ('cert' in e) {
      this.current = e.cert;
    } else if (e.pair) {
      this.challenges.set(e.alpn, { pair: e.pair, context: tls.createSecureContext({ cert: e.pair.cert, key: e.pair.key }) });
    } else {
      this.challenges.delete(e.alpn);
    }
    for (const fn of this.listeners) fn(e);
  }

  onChange(fn: (e: SlotEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  challengeContext(servername: string): tls.SecureContext | undefined {
    return this.challenges.get(servername.toLowerCase())?.context;
  }

  /** The state as events, for a process that starts serving later. */
  snapshot(): SlotEvent[] {
    const out: SlotEvent[] = [];
    if (this.current) out.push({ cert: this.current });
    for (const [alpn, { pair }] of this.challenges) out.push({ alpn, pair });
    return out;
  }
}

/** Largest ClientHello record read while a challenge is pending (TLS's own record limit). */
const MAX_RECORD = 16_384 + 5;

export interface ClientHelloInfo { servername: string | undefined; protocols: string[] }

/**
 * SNI and ALPN of a ClientHello in its first record; null if `buf` does not hold a whole record
 * yet, 'not-tls' if it is not a TLS handshake (or is malformed: the TLS server will say so).
 */
export function parseClientHello(buf: Buffer): ClientHelloInfo | null | 'not-tls' {
  if (buf.length < 5) return buf.length > 0 && buf[0] !== 0x16 ? 'not-tls' : null;
  if (buf[0] !== 0x16) return 'not-tls';
  const end = 5 + buf.readUInt16BE(3);
  if (buf.length < end) return end > MAX_RECORD ? 'not-tls' : null;
  const info: ClientHelloInfo = { servername: undefined, protocols: [] };
  try {
    if (buf[5] !== 1) return 'not-tls';
    let p = 9 + 2 + 32;
    p += 1 + (buf[p] as number);
    p += 2 + buf.readUInt16BE(p);
    p += 1 + (buf[p] as number);
    if (p + 2 > end) return info;
    const extEnd = Math.min(end, p + 2 + buf.readUInt16BE(p));
    p += 2;
    while (p + 4 <= extEnd) {
      const type = buf.readUInt16BE(p);
      const len = buf.readUInt16BE(p + 2);
      const data = buf.subarray(p + 4, Math.min(extEnd, p + 4 + len));
      p += 4 + len;
      if (type === 0 && data.length >= 5 && data[2] === 0) {
        info.servername = data.subarray(5, 5 + data.readUInt16BE(3)).toString('latin1').toLowerCase();
      } else if (type === 16 && data.length >= 2) {
        for (let q = 2; q < data.length; q += 1 + (data[q] as number)) {
          info.protocols.push(data.subarray(q + 1, q + 1 + (data[q] as number)).toString('latin1'));
        }
      }
    }
  } catch {
    return 'not-tls';
  }
  return info;
}

/**
 * A connection listener for a plain `net.Server` that hands each socket to `secure` (the hub's
 * TLS server), or to the challenge server when it is a TLS-ALPN-01 validation. `timeoutMs`
 * bounds the wait for a ClientHello while a challenge is pending.
 */
export function tlsFront(secure: tls.Server, slot: CertificateSlot, timeoutMs: number): (socket: net.Socket) => void {
  const challengeServer = tls.createServer({
    ALPNProtocols: [ACME_TLS_PROTOCOL],
    SNICallback: (name, cb) => cb(null, slot.challengeContext(name)),
  });
  // The validator checks the certificate and leaves: nothing is served on this connection.
  challengeServer.on('secureConnection', (s: tls.TLSSocket) => s.end());
  challengeServer.on('tlsClientError', (_err, s: tls.TLSSocket) => s.destroy());
  return (socket) => {
    if (!slot.challenging) {
      secure.emit('connection', socket);
      return;
    }
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const hello = parseClientHello(buf);
      if (hello === null) return;
      clearTimeout(timer);
      socket.pause();
      socket.off('data', onData);
      socket.off('error', onError);
      socket.unshift(buf);
      const validation = hello !== 'not-tls' && hello.servername !== undefined &&
        hello.protocols.includes(ACME_TLS_PROTOCOL) && slot.challengeContext(hello.servername) !== undefined;
      (validation ? challengeServer : secure).emit('connection', socket);
    };
    const onError = (): void => {
      clearTimeout(timer);
      socket.destroy();
    };
    socket.on('data', onData);
    socket.on('error', onError);
  };
}
