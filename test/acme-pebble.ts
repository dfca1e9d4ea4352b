/**
 * Pebble, Let's Encrypt's ACME test server (Debian package `pebble`), for the automatic HTTPS
 * tests: started on free loopback ports with a short certificate lifetime, resolving every name
 * to 127.0.0.1 through `pebble-challtestsrv`'s DNS server, so its validations really connect to
 * the hub's HTTP-01 and TLS-ALPN-01 listeners. And a TLS client that reaches a name on loopback
 * trusting only Pebble's root, as a browser trusting that CA would.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type tls from 'node:tls';
import type { FetchLike } from 'eventsource';
import { freePort } from './process-helpers.js';

const PEBBLE = '/usr/bin/pebble';
const DNS = '/usr/bin/pebble-challtestsrv';

/** Why the ACME tests cannot run here, or null. */
export const pebbleMissing: string | null = existsSync(PEBBLE) && existsSync(DNS) ? null : `pebble not installed (apt-get install pebble)`;

export interface PebbleOptions {
  dir: string;
  /** Where Pebble validates HTTP-01 and TLS-ALPN-01 (the hub's ports). */
  httpPort: number;
  tlsPort: number;
  /** Certificate lifetime in seconds. */
  validity: number;
}

export class Pebble {
  readonly directoryUrl: string;
  /** Pebble's own HTTPS certificate: what `--acme-ca-root` trusts. */
  readonly listenerCa: string;
  private pebble: ChildProcess | null = null;
  private dns: ChildProcess | null = null;
  private log = '';

  private constructor(private readonly o: PebbleOptions, private readonly ports: { acme: number; mgmt: number; dns: number }) {
    this.directoryUrl = `https://127.0.0.1:${ports.acme}/dir`;
    this.listenerCa = join(o.dir, 'pebble-listener.pem');
  }

  static async start(o: PebbleOptions): Promise<Pebble> {
    const p = new Pebble(o, { acme: await freePort(), mgmt: await freePort(), dns: await freePort() });
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout', join(o.dir, 'pebble-listener-key.pem'), '-out', p.listenerCa], { stdio: 'ignore' });
    writeFileSync(join(o.dir, 'pebble.json'), JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${p.ports.acme}`,
        managementListenAddress: `127.0.0.1:${p.ports.mgmt}`,
        certificate: p.listenerCa,
        privateKey: join(o.dir, 'pebble-listener-key.pem'),
        httpPort: o.httpPort,
        tlsPort: o.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        certificateValidityPeriod: o.validity,
      },
    }));
    p.dns = spawn(DNS, ['-dns01', `127.0.0.1:${p.ports.dns}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '',
      '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${await freePort()}`], { stdio: 'ignore' });
    await p.up();
    return p;
  }

  /** (Re)starts Pebble itself: a new process has new roots and forgets every account. */
  async up(): Promise<void> {
    this.pebble = spawn(PEBBLE, ['-config', join(this.o.dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${this.ports.dns}`], {
      // No random validation delays, no refused nonces, and a fresh authorization for every
      // order, so that each renewal answers a real challenge.
      env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.pebble.stdout!.on('data', (d: Buffer) => (this.log += d.toString()));
    this.pebble.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
    const deadline = Date.now() + 15_000;
    while (!/Listening on: /.test(this.log.slice(this.log.lastIndexOf('Starting Pebble')))) {
      if (Date.now() > deadline) throw new Error(`pebble did not start: ${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async down(): Promise<void> {
    const child = this.pebble;
    this.pebble = null;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    await this.down();
    this.dns?.kill('SIGKILL');
  }

  output(): string {
    return this.log;
  }

  /** The current root (changes with each start of Pebble), what clients trust. */
  async root(): Promise<string> {
    return (await get(`https://127.0.0.1:${this.ports.mgmt}/roots/0`, { ca: readFileSync(this.listenerCa, 'utf8') })).body;
  }
}

export interface TlsGet { status: number; body: string; headers: Record<string, string | string[] | undefined>; fingerprint: string }

/** A bounded HTTPS request; `servername` is the name asked for (SNI, and checked on the certificate). */
export function get(url: string, o: { ca: string; servername?: string; method?: string; body?: string; headers?: Record<string, string> }): Promise<TlsGet> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = https.request({
      host: '127.0.0.1', port: u.port, path: u.pathname + u.search, method: o.method ?? 'GET', ca: o.ca, agent: false,
      ...(net.isIP(u.hostname) ? {} : { servername: o.servername ?? u.hostname }), headers: { host: u.host, ...o.headers }, timeout: 10_000,
    }, (res) => {
      let body = '';
      const fingerprint = (res.socket as tls.TLSSocket).getPeerCertificate().fingerprint256;
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers, fingerprint }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
    req.end(o.body);
  });
}

/**
 * A fetch for the `eventsource` package: the name in the URL is reached on 127.0.0.1 and
 * verified against `ca()` only; `onCertificate` gets each connection's leaf fingerprint.
 */
export function loopbackFetch(ca: () => string, onCertificate: (fingerprint: string) => void): FetchLike {
  return (url, init) => new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = https.request({
      host: '127.0.0.1', port: u.port, path: u.pathname + u.search, ca: ca(), agent: false, servername: u.hostname,
      headers: { ...init.headers, host: u.host },
    }, (res) => {
      onCertificate((res.socket as tls.TLSSocket).getPeerCertificate().fingerprint256);
      resolve({
        body: Readable.toWeb(res) as ReadableStream<Uint8Array>,
        url: String(url),
        status: res.statusCode ?? 0,
        redirected: false,
        headers: { get: (n: string) => { const v = res.headers[n.toLowerCase()]; return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v; } },
      });
    });
    const signal = init.signal as AbortSignal | undefined;
    signal?.addEventListener('abort', () => req.destroy());
    req.setTimeout(10_000, () => req.destroy(new Error('no response headers within 10 s')));
    req.on('response', () => req.setTimeout(0));
    req.on('error', reject);
    req.end();
  });
}
