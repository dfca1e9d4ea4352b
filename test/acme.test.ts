/**
 * Automatic HTTPS end to end against Pebble (test/acme-pebble.ts): the hub, started through the
 * CLI as an operator would, orders its certificate over HTTP-01 or TLS-ALPN-01 (Pebble really
 * connects to its listeners), serves an EventSource over it, renews it at two thirds of its
 * (here 24 s) lifetime while that stream stays open, and rides out a Pebble outage. Skipped with
 * a message when Pebble is not installed, unless CI is set (then it fails: .ci/run installs it).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventSource } from 'eventsource';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/index.js';
import { get, loopbackFetch, Pebble, pebbleMissing } from './acme-pebble.js';
import { legacyToken } from './helpers.js';
import { freePort, startHubProcess, type HubProcess } from './process-helpers.js';

const KEY = 'acme-test-publisher-key-long-enough-for-HS256!';
const DOMAIN = 'hub.quicksilver.test';
const WWW = 'www.quicksilver.test';
const VALIDITY = 24;

if (pebbleMissing && process.env.CI) throw new Error(`${pebbleMissing}: CI must run the ACME tests`);
if (pebbleMissing) console.warn(`[ACME tests skipped] ${pebbleMissing}`);

function ok(env: Record<string, string>, argv: string[] = []) {
  const r = loadConfig({ env: { JWT_KEY: KEY, ...env }, argv, cwd: '/srv/hub' });
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r;
}
function errors(env: Record<string, string>, argv: string[] = []): string[] {
  const r = loadConfig({ env: { JWT_KEY: KEY, ...env }, argv, cwd: '/srv/hub' });
  return r.ok ? [] : r.errors;
}

describe('ACME configuration', () => {
  it('a SERVER_NAME naming domains asks for ACME on :443, as Caddy does; localhost does not', () => {
    const { config, warnings } = ok({ SERVER_NAME: `${DOMAIN}, ${WWW}` });
    expect(warnings).toEqual([]);
    expect(config.server.addr).toBe(':443');
    expect(config.server.acme).toEqual({
      domains: [DOMAIN, WWW], directoryUrl: 'https://acme-v02.api.letsencrypt.org/directory', dir: '/srv/hub/.quicksilver/acme', httpAddr: ':80',
    });
    expect(ok({ SERVER_NAME: 'localhost' }).config.server.acme).toBeUndefined();
  });

  it('flags, directives and legacy variables; cert files win over SERVER_NAME, not over --acme-domain', () => {
    const { config } = ok({ MERCURE_EXTRA_DIRECTIVES: `acme_domain ${DOMAIN}\nacme_domain ${WWW}\nacme_directory staging\nacme_renew_before 720h` },
      ['--acme-email', 'ops@quicksilver.test', '--acme-http-port', 'off', '--acme-dir', 'certs', '--addr', ':8443']);
    expect(config.server).toMatchObject({ addr: ':8443' });
    expect(config.server.acme).toEqual({
      domains: [DOMAIN, WWW], email: 'ops@quicksilver.test', directoryUrl: 'https://acme-staging-v02.api.letsencrypt.org/directory',
      dir: '/srv/hub/certs', renewBefore: 720 * 3_600_000,
    });
    expect(ok({ ACME_HOSTS: DOMAIN, ACME_HTTP01_ADDR: ':8080', ACME_CERT_DIR: '/var/lib/acme' }).config.server.acme)
      .toMatchObject({ domains: [DOMAIN], httpAddr: ':8080', dir: '/var/lib/acme' });
    const withFiles = { SERVER_NAME: DOMAIN, CERT_FILE: '/etc/hostname', KEY_FILE: '/etc/hostname' };
    expect(ok(withFiles).config.server).toMatchObject({ addr: ':443', certFile: '/etc/hostname' });
    expect(ok(withFiles).config.server.acme).toBeUndefined();
    expect(errors(withFiles, ['--acme-domain', DOMAIN])).toEqual([
      '--acme-domain: ACME domains and certificate files (CERT_FILE/KEY_FILE) exclude each other; choose one',
    ]);
  });

  it('refuses what ACME cannot do here, one line each', () => {
    expect(errors({}, ['--acme-domain', '*.quicksilver.test', '--acme-domain', '10.0.0.1', '--acme-directory', 'http://ca.test/dir'])).toEqual([
      "--acme-domain: '*.quicksilver.test': a wildcard certificate needs the DNS-01 challenge, which Quicksilver does not support; list each name",
      "--acme-domain: '10.0.0.1': an IP address cannot get a certificate over ACME here; use a domain name",
      "--acme-directory: invalid ACME directory (production, staging or an https:// URL) 'http://ca.test/dir'; expected https://",
    ]);
  });
});

interface Obtained { how: string; ms: number | undefined; fingerprint: string }

/** The certificate lines logged so far (obtained, renewed, loaded from disk), in order. */
function certificates(hub: HubProcess): Obtained[] {
  const out: Obtained[] = [];
  for (const line of hub.output().split('\n')) {
    const m = /"fingerprint":"([^"]+)".*"msg":"ACME: certificate (obtained|renewed|loaded from disk)(?: in (\d+) ms)?"/.exec(line);
    if (m) out.push({ how: m[2] as string, ms: m[3] === undefined ? undefined : Number(m[3]), fingerprint: m[1] as string });
  }
  return out;
}

/** Status and Location of a plain HTTP GET with the given Host (fetch may not set Host). */
function plainGet(port: number, path: string, host: string): Promise<[number, string | undefined]> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { Host: host }, timeout: 5_000 }, (res) => {
      res.resume();
      resolve([res.statusCode ?? 0, res.headers.location]);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeout: number, hub?: HubProcess): Promise<T> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${hub ? `\n${hub.output()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(pebbleMissing !== null)('automatic HTTPS against Pebble', () => {
  let dir: string;
  let pebble: Pebble;
  let tlsPort: number;
  let httpPort: number;
  const hubs: HubProcess[] = [];
  const sources: EventSource[] = [];
  const measured: Record<string, number[]> = { issuance: [], renewal: [] };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qs-acme-'));
    tlsPort = await freePort();
    httpPort = await freePort();
    pebble = await Pebble.start({ dir, httpPort, tlsPort, validity: VALIDITY });
  });

  // A failed test must not leave its hub holding the ports the next one needs.
  afterEach(async () => {
    for (const s of sources.splice(0)) s.close();
    await Promise.all(hubs.splice(0).map((h) => h.stop('SIGKILL')));
  });

  afterAll(async () => {
    await pebble?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    console.log(`[ACME against Pebble] issuance ms: ${measured.issuance!.join(', ')}; renewal ms: ${measured.renewal!.join(', ')}`);
  });

  const hubArgs = (acmeDir: string, extra: string[]): string[] => [
    '--jwt-key', KEY, '--anonymous', '--transport-url', 'memory://',
    '--acme-domain', DOMAIN, '--acme-domain', WWW, '--acme-email', 'ops@quicksilver.test',
    '--acme-directory', pebble.directoryUrl, '--acme-ca-root', pebble.listenerCa, '--acme-dir', join(dir, acmeDir), ...extra,
  ];
  const start = async (args: string[]): Promise<HubProcess> => {
    const hub = await startHubProcess(args, {}, 60_000);
    hubs.push(hub);
    return hub;
  };

  const publish = async (root: string, data: string, port = tlsPort): Promise<void> => {
    const token = await legacyToken({ publish: ['*'] }, KEY);
    const res = await get(`https://${DOMAIN}:${port}/.well-known/mercure`, {
      ca: root, method: 'POST', body: new URLSearchParams({ topic: 'https://quicksilver.test/t', data }).toString(),
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(res.status).toBe(200);
  };

  /** An EventSource on the hub, trusting only Pebble's root; records each connection's certificate. */
  const subscribe = async (root: () => string, port = tlsPort) => {
    const seen = { messages: [] as string[], opens: 0, certificates: [] as string[] };
    const es = new EventSource(`https://${DOMAIN}:${port}/.well-known/mercure?topic=${encodeURIComponent('https://quicksilver.test/t')}`, {
      fetch: loopbackFetch(root, (fp) => seen.certificates.push(fp)),
    });
    sources.push(es);
    es.onopen = () => seen.opens++;
    es.onmessage = (e) => seen.messages.push(e.data as string);
    await until('the EventSource to open', () => (seen.opens > 0 ? true : undefined), 10_000);
    return seen;
  };

  it('orders over HTTP-01, serves an EventSource, renews under an open stream and rides out a Pebble outage', async () => {
    const hub = await start(hubArgs('one', ['--workers', '1', '--addr', `127.0.0.1:${tlsPort}`, '--acme-http-port', `127.0.0.1:${httpPort}`]));
    const [first] = certificates(hub);
    expect(first?.how).toBe('obtained');
    measured.issuance!.push(first!.ms!);
    expect(pebble.output()).toMatch(/validate w\/ HTTP/);

    // Stored with its key, readable by the hub's user only.
    const certDir = join(dir, 'one', pebble.directoryUrl.replace('https://', '').replace(/[/:]+/g, '-').replace(/-$/, ''), 'certificates', DOMAIN);
    for (const d of [join(dir, 'one'), certDir]) expect(statSync(d).mode & 0o777).toBe(0o700);
    for (const f of ['cert.pem', 'key.pem', '../../account.key']) expect(statSync(join(certDir, f)).mode & 0o777).toBe(0o600);

    // The HTTP port redirects to HTTPS, to a name on the certificate only.
    expect(await plainGet(httpPort, '/.well-known/mercure?topic=x', WWW)).toEqual([308, `https://${WWW}:${tlsPort}/.well-known/mercure?topic=x`]);
    expect(await plainGet(httpPort, '/x', 'evil.example')).toEqual([308, `https://${DOMAIN}:${tlsPort}/x`]);

    let root = await pebble.root();
    const stream = await subscribe(() => root);
    expect(stream.certificates).toEqual([first!.fingerprint]);
    await publish(root, 'before renewal');
    await until('the first update', () => (stream.messages.includes('before renewal') ? true : undefined), 5_000);
    // Both names are on the certificate.
    expect((await get(`https://${WWW}:${tlsPort}/healthz`, { ca: root })).fingerprint).toBe(first!.fingerprint);

    const renewed = await until('a renewal', () => certificates(hub)[1], VALIDITY * 1000, hub);
    expect(renewed.how).toBe('renewed');
    expect(renewed.fingerprint).not.toBe(first!.fingerprint);
    measured.renewal!.push(renewed.ms!);
    await publish(root, 'after renewal');
    await until('the update after the renewal', () => (stream.messages.includes('after renewal') ? true : undefined), 5_000);
    // The same connection: no reconnection, and new handshakes get the new certificate.
    expect([stream.opens, stream.certificates.length]).toEqual([1, 1]);
    expect((await get(`https://${DOMAIN}:${tlsPort}/healthz`, { ca: root })).fingerprint).toBe(renewed.fingerprint);

    // Pebble goes away before the next renewal: one error line per attempt, the renewed
    // certificate still served, the stream still fed.
    await pebble.down();
    const failure = await until('a failed renewal', () => hub.output().split('\n').find((l) => l.includes('ACME: renewal for')), VALIDITY * 1000, hub);
    expect(failure).toMatch(/"level":50.*"msg":"ACME: renewal for hub\.quicksilver\.test, www\.quicksilver\.test failed: .*ECONNREFUSED.*; still serving the certificate valid until .*; next attempt in \d+s"/);
    expect((await get(`https://${DOMAIN}:${tlsPort}/healthz`, { ca: root })).fingerprint).toBe(renewed.fingerprint);
    await publish(root, 'during the outage');
    await until('the update during the outage', () => (stream.messages.includes('during the outage') ? true : undefined), 5_000);

    // Back (with a new root and no memory of the account): the next attempt succeeds.
    await pebble.up();
    const recovered = await until('the renewal after the outage', () => certificates(hub)[2], VALIDITY * 1000, hub);
    measured.renewal!.push(recovered.ms!);
    const oldRoot = root;
    root = await pebble.root();
    expect(root).not.toBe(oldRoot);
    expect((await get(`https://${DOMAIN}:${tlsPort}/healthz`, { ca: root })).fingerprint).toBe(recovered.fingerprint);
    await publish(root, 'after the outage');
    await until('the update after the outage', () => (stream.messages.includes('after the outage') ? true : undefined), 5_000);
    expect([stream.opens, stream.certificates.length]).toEqual([1, 1]);
    expect(stream.messages).toEqual(['before renewal', 'after renewal', 'during the outage', 'after the outage']);

    // A restart serves the stored certificate instead of ordering one.
    sources.pop()?.close();
    expect(await hub.stop()).toBe(0);
    const again = await start(hubArgs('one', ['--workers', '1', '--addr', `127.0.0.1:${tlsPort}`, '--acme-http-port', `127.0.0.1:${httpPort}`]));
    expect(certificates(again)[0]).toEqual({ how: 'loaded from disk', ms: undefined, fingerprint: recovered.fingerprint });
    expect(await again.stop()).toBe(0);
  }, 120_000);

  it('orders over TLS-ALPN-01 in a cluster; a second hub on the same storage serves it without ordering', async () => {
    const before = pebble.output().length;
    const owner = await start(hubArgs('two', ['--workers', '2', '--addr', `127.0.0.1:${tlsPort}`, '--acme-http-port', 'off']));
    const [first] = certificates(owner);
    expect(first?.how).toBe('obtained');
    measured.issuance!.push(first!.ms!);
    // No HTTP listener: Pebble validated both names on the workers' TLS port.
    const validations = pebble.output().slice(before);
    expect(validations).not.toMatch(/validate w\/ HTTP/);
    expect(validations.match(/set VALID by completed challenge/g)).toHaveLength(2);
    const root = await pebble.root();
    const stream = await subscribe(() => root);
    await publish(root, 'cluster');
    await until('the update', () => (stream.messages.includes('cluster') ? true : undefined), 5_000);

    const otherPort = await freePort();
    const follower = await start(hubArgs('two', ['--workers', '1', '--addr', `127.0.0.1:${otherPort}`, '--acme-http-port', 'off']));
    expect(follower.output()).toMatch(new RegExp(`is owned by another hub \\(pid ${owner.child.pid}\\)`));
    expect(follower.output()).not.toMatch(/certificate (obtained|renewed)/);
    expect((await get(`https://${DOMAIN}:${otherPort}/healthz`, { ca: root })).fingerprint).toBe(first!.fingerprint);

    // The primary renews; every worker serves the new certificate to new connections.
    const renewed = await until('a renewal', () => certificates(owner)[1], VALIDITY * 1000, owner);
    measured.renewal!.push(renewed.ms!);
    const seen = await Promise.all(Array.from({ length: 6 }, () => get(`https://${DOMAIN}:${tlsPort}/healthz`, { ca: root })));
    expect(new Set(seen.map((r) => r.fingerprint))).toEqual(new Set([renewed.fingerprint]));
    await publish(root, 'renewed cluster');
    await until('the update after the renewal', () => (stream.messages.includes('renewed cluster') ? true : undefined), 5_000);
    expect(stream.opens).toBe(1);
  }, 90_000);

  it('exits 69 with one line when no certificate can be obtained at start', async () => {
    const closed = await freePort();
    const args = hubArgs('three', ['--workers', '1', '--addr', `127.0.0.1:${await freePort()}`, '--acme-http-port', 'off',
      '--acme-directory', `https://127.0.0.1:${closed}/dir`]);
    const child = spawn(process.execPath, ['dist/cli.js', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code).toBe(69);
    expect(stderr.trim().split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^quicksilver: ACME: could not obtain a certificate for ${DOMAIN}, ${WWW} from https://127\\.0\\.0\\.1:${closed}/dir: .*ECONNREFUSED`)),
    ]);
  }, 30_000);
});
