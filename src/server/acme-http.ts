/**
 * The plain HTTP listener of automatic HTTPS (port 80 by default): answers HTTP-01 challenges
 * and redirects everything else to HTTPS (308, so a POST stays a POST). The redirect goes to the
 * requested host only when it is one of the certificate's domains: anything else would make the
 * hub an open redirector.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../observability/logger.js';
import { parseAddr } from './server.js';

const CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

export interface AcmeHttpServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function listenAcmeHttp(
  addr: string,
  tlsPort: number,
  domains: readonly string[],
  tokens: ReadonlyMap<string, string>,
  log: Logger,
): Promise<AcmeHttpServer> {
  const { host, port } = parseAddr(addr);
  const suffix = tlsPort === 443 ? '' : `:${tlsPort}`;
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith(CHALLENGE_PREFIX)) {
      const answer = tokens.get(url.slice(CHALLENGE_PREFIX.length));
      log.debug({ url, found: answer !== undefined }, 'ACME: HTTP-01 challenge request');
      res.writeHead(answer === undefined ? 404 : 200, { 'Content-Type': 'text/plain' });
      res.end(answer ?? 'no such challenge\n');
      return;
    }
    const requested = (req.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
    const target = domains.includes(requested) ? requested : (domains[0] as string);
    const path = url.startsWith('/') ? url : '/';
    res.writeHead(308, { Location: `https://${target}${suffix}${path}`, 'Content-Type': 'text/plain', Connection: 'close' });
    res.end('This hub is served over HTTPS.\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
