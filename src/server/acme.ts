/**
 * Automatic HTTPS (RFC 8555) with acme-client: obtains a certificate for the configured domains
 * over HTTP-01 (acme-http.ts) or TLS-ALPN-01 (acme-tls.ts), keeps it on disk (acme-store.ts),
 * and renews it in the background at two thirds of its lifetime (or `renewBefore` before its
 * end), swapping it in place: open streams keep their connection, new handshakes get the new
 * certificate. A failed renewal is one log line and a retry; the current certificate is served
 * meanwhile.
 *
 * One owner per storage directory: the process that runs ACME claims the directory (the same
 * claim as an LMDB store's, freed by the kernel when the owner dies). Another hub started on the
 * same directory does not order: it serves what the owner stored and picks up its renewals. In a
 * cluster the primary owns ACME and the workers get the certificates over IPC (acme-cluster.ts).
 */
import { readFileSync } from 'node:fs';
import https from 'node:https';
import nodePath from 'node:path';
import tls from 'node:tls';
import * as acme from 'acme-client';
import type { AcmeConfig, Config } from '../config/index.js';
import type { Logger } from '../observability/logger.js';
import { claimStore, StoreInUseError, type StoreClaim } from '../transports/store-lock.js';
import { listenAcmeHttp, type AcmeHttpServer } from './acme-http.js';
import { AcmeStore, checkCertificate, type StoredCertificate } from './acme-store.js';
import { CertificateSlot } from './acme-tls.js';
import { parseAddr } from './server.js';

/** Why the hub cannot start with ACME: the CLI prints it and exits 69 (a supervisor retries). */
export class AcmeStartError extends Error {
  override readonly name = 'AcmeStartError';
}

export interface Acme {
  /** Resolves once the slot holds a valid certificate (obtaining one if needed); rejects with AcmeStartError. */
  ready(): Promise<void>;
  close(): Promise<void>;
}

/** Every request to the CA is bounded; a whole order too. */
const REQUEST_TIMEOUT = 30_000;
const ORDER_TIMEOUT = 5 * 60_000;
/** How often a hub that does not own the storage looks for the owner's renewals. */
const FOLLOW_EVERY = 30_000;
/** setTimeout's longest delay; later renewals re-arm. */
const MAX_TIMER = 2 ** 31 - 1;

function oneLine(err: unknown): string {
  const e = err as { message?: string; response?: { data?: { detail?: string } } };
  let text = e?.response?.data?.detail ?? e?.message ?? String(err);
  if (err instanceof TypeError && /reading 'config'/.test(text)) text = 'a request to the CA failed on the network';
  return text.replace(/\s+/g, ' ').trim();
}

let httpConfigured = false;
let agent: https.Agent | undefined;

/**
 * acme-client turns a network error whose retries ran out into a TypeError about its own
 * internals; asking the directory first gives the real reason for the commonest case, a CA that
 * cannot be reached.
 */
function probe(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { agent, timeout: REQUEST_TIMEOUT }, (res) => {
      res.resume();
      if (res.statusCode === 200) resolve();
      else reject(new Error(`the directory ${url} answered ${res.statusCode}`));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${REQUEST_TIMEOUT / 1000}s`)));
    req.on('error', reject);
  });
}

/**
 * acme-client's shared axios instance: bounded requests, few quick retries (its default waits
 * 75 s on a CA that is down), and the extra CA of a test server.
 */
function configureHttp(caRoot: string | undefined): void {
  const ax = acme.axios;
  ax.defaults.timeout = REQUEST_TIMEOUT;
  const settings = (ax.defaults as unknown as { acmeSettings: { retryMaxAttempts: number; retryDefaultDelay: number } }).acmeSettings;
  settings.retryMaxAttempts = 2;
  settings.retryDefaultDelay = 1;
  // An order is a dozen requests: one connection for all (free sockets do not hold the process).
  ax.defaults.httpsAgent = agent = new https.Agent({ keepAlive: true, ...(caRoot ? { ca: [...tls.rootCertificates, readFileSync(caRoot, 'utf8')] } : {}) });
  if (!httpConfigured) acme.setLogger(() => {});
  httpConfigured = true;
}

export interface AcmeOptions {
  logger: Logger;
  /** The TLS port the hub listens on: where the HTTP listener redirects. */
  tlsPort: number;
}

/**
 * Claims the storage, loads the stored certificate into `slot` and starts the HTTP listener;
 * `ready()` then obtains a certificate if there is none. Rejects with AcmeStartError when the
 * HTTP port cannot be bound or the storage cannot be used.
 */
export async function startAcme(config: AcmeConfig, slot: CertificateSlot, options: AcmeOptions): Promise<Acme> {
  const log = options.logger;
  const store = new AcmeStore(config.dir, config.directoryUrl, config.domains);
  try {
    store.prepare();
  } catch (err) {
    throw new AcmeStartError(`ACME: cannot use the storage directory ${config.dir}: ${oneLine(err)}`);
  }
  let claim: StoreClaim;
  try {
    claim = await claimStore(nodePath.join(config.dir, 'owner'));
  } catch (err) {
    if (err instanceof StoreInUseError) return follow(config, store, slot, log, err.ownerPid);
    throw new AcmeStartError(`ACME: cannot claim ${config.dir}: ${oneLine(err)}`);
  }
  configureHttp(config.caRoot);
  const owner = new AcmeOwner(config, store, slot, log);
  const stored = store.load(config.domains);
  if (typeof stored === 'string') log.info({ domains: config.domains, dir: store.certDir }, `ACME: no usable stored certificate (${stored}): ordering one`);
  else owner.use(stored, 'loaded from disk');
  let httpServer: AcmeHttpServer | undefined;
  if (config.httpAddr) {
    try {
      httpServer = await listenAcmeHttp(config.httpAddr, options.tlsPort, config.domains, owner.tokens, log);
    } catch (err) {
      await claim.release();
      throw new AcmeStartError(`ACME: cannot listen on ${config.httpAddr} for HTTP-01 and the HTTPS redirect: ${oneLine(err)} (use --acme-http-port to change it, or off for TLS-ALPN-01 only)`);
    }
  }
  return {
    ready: () => owner.ready(),
    close: async () => {
      owner.stop();
      await httpServer?.close();
      await claim.release();
    },
  };
}

class AcmeOwner {
  /** HTTP-01 tokens → key authorizations, answered by the HTTP listener. */
  readonly tokens = new Map<string, string>();
  private current: StoredCertificate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = false;
  private ordering: Promise<StoredCertificate> | undefined;

  constructor(
    private readonly config: AcmeConfig,
    private readonly store: AcmeStore,
    private readonly slot: CertificateSlot,
    private readonly log: Logger,
  ) {}

  use(c: StoredCertificate, how: string): void {
    this.current = c;
    this.slot.apply({ cert: { cert: c.cert, key: c.key } });
    this.log.info({ domains: this.config.domains, notAfter: c.notAfter.toISOString(), fingerprint: c.fingerprint }, `ACME: certificate ${how}`);
    this.failures = 0;
    this.schedule(this.renewalTime(c) - Date.now());
  }

  async ready(): Promise<void> {
    if (this.current) return;
    try {
      await this.order('obtained');
    } catch (err) {
      throw new AcmeStartError(`ACME: could not obtain a certificate for ${this.config.domains.join(', ')} from ${this.config.directoryUrl}: ${oneLine(err)}`);
    }
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private renewalTime(c: StoredCertificate): number {
    const start = c.notBefore.getTime();
    const end = c.notAfter.getTime();
    if (this.config.renewBefore !== undefined) return end - this.config.renewBefore;
    return start + ((end - start) * 2) / 3;
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const wait = Math.max(0, ms);
    this.timer = setTimeout(() => {
      const c = this.current;
      if (wait === MAX_TIMER && c && this.renewalTime(c) > Date.now()) this.schedule(this.renewalTime(c) - Date.now());
      else void this.renew();
    }, Math.min(wait, MAX_TIMER));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      await this.order('renewed');
    } catch (err) {
      if (this.stopped) return;
      this.failures++;
      const delay = this.retryDelay();
      const until = this.current ? `still serving the certificate valid until ${this.current.notAfter.toISOString()}` : 'no certificate to serve';
      this.log.error({ domains: this.config.domains, attempt: this.failures, retryInMs: delay },
        `ACME: renewal for ${this.config.domains.join(', ')} failed: ${oneLine(err)}; ${until}; next attempt in ${Math.ceil(delay / 1000)}s`);
      this.schedule(delay);
    }
  }

  /**
   * Quick retries while the certificate has time left (a quarter of what remains, at least a
   * thirtieth of its lifetime), a doubling backoff from one minute to one hour otherwise.
   */
  private retryDelay(): number {
    const backoff = Math.min(3_600_000, 60_000 * 2 ** (this.failures - 1));
    const c = this.current;
    if (!c) return backoff;
    const remaining = c.notAfter.getTime() - Date.now();
    if (remaining <= 0) return backoff;
    const floor = Math.min(60_000, (c.notAfter.getTime() - c.notBefore.getTime()) / 30);
    return Math.max(floor, Math.min(backoff, remaining / 4));
  }

  private order(how: string): Promise<StoredCertificate> {
    this.ordering ??= (async () => {
      const started = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no certificate after ${ORDER_TIMEOUT / 1000}s`)), ORDER_TIMEOUT);
      });
      try {
        const c = await Promise.race([this.issue(), timeout]);
        if (this.stopped) return c;
        this.store.save(c.cert, c.key);
        this.use(c, `${how} in ${Date.now() - started} ms`);
        return c;
      } finally {
        clearTimeout(timer);
        this.ordering = undefined;
      }
    })();
    return this.ordering;
  }

  private async issue(): Promise<StoredCertificate> {
    const { domains } = this.config;
    let accountKey = this.store.accountKey();
    if (accountKey === undefined) {
      accountKey = (await acme.crypto.createPrivateEcdsaKey()).toString();
      this.store.saveAccountKey(accountKey);
    }
    // No stored account URL: newAccount with a known key returns the existing account, and a
    // CA that forgot it (a test CA restarted) gets a new one instead of an error.
    await probe(this.config.directoryUrl);
    const client = new acme.Client({ directoryUrl: this.config.directoryUrl, accountKey, backoffAttempts: 10, backoffMin: 250, backoffMax: 5_000 });
    await register(client, this.config.email);
    const key = await acme.crypto.createPrivateEcdsaKey();
    const [, csr] = await acme.crypto.createCsr({ commonName: domains[0] as string, altNames: domains }, key);
    const alpnDomains = new Set<string>();
    const cert = await client.auto({
      csr,
      // Self-checks would resolve the names from here, which says nothing about the CA's view.
      skipChallengeVerification: true,
      challengePriority: this.config.httpAddr ? ['http-01', 'tls-alpn-01'] : ['tls-alpn-01'],
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        if (challenge.type === 'http-01') {
          this.tokens.set(challenge.token, keyAuthorization);
        } else if ((challenge.type as string) === 'tls-alpn-01') {
          const [alpnKey, alpnCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization);
          alpnDomains.add(authz.identifier.value);
          this.slot.apply({ alpn: authz.identifier.value, pair: { cert: alpnCert.toString(), key: alpnKey.toString() } });
        } else {
          throw new Error(`unsupported challenge ${challenge.type}`);
        }
      },
      challengeRemoveFn: async (authz, challenge) => {
        if (challenge.type === 'http-01') this.tokens.delete(challenge.token);
        else if (alpnDomains.delete(authz.identifier.value)) this.slot.apply({ alpn: authz.identifier.value });
      },
    });
    const checked = checkCertificate(cert, key.toString(), domains);
    if (typeof checked === 'string') throw new Error(`the CA returned an unusable certificate: ${checked}`);
    return checked;
  }
}

/**
 * newAccount, once per order. For a key the CA knows, acme-client follows the 200 with an account
 * update that some CAs (Pebble) refuse as empty; the account URL is known by then, which is all
 * an order needs.
 */
async function register(client: acme.Client, email: string | undefined): Promise<void> {
  try {
    await client.createAccount({ termsOfServiceAgreed: true, ...(email ? { contact: [`mailto:${email}`] } : {}) });
  } catch (err) {
    try {
      client.getAccountUrl();
    } catch {
      throw err;
    }
  }
}

/** Serves what the owner of the storage stored, and picks up its renewals. */
function follow(config: AcmeConfig, store: AcmeStore, slot: CertificateSlot, log: Logger, ownerPid: number | undefined): Acme {
  const owner = ownerPid === undefined ? 'another hub' : `another hub (pid ${ownerPid})`;
  let fingerprint: string | undefined;
  const look = (): string | undefined => {
    const c = store.load(config.domains);
    if (typeof c === 'string') return c;
    if (c.fingerprint !== fingerprint) {
      fingerprint = c.fingerprint;
      slot.apply({ cert: { cert: c.cert, key: c.key } });
      log.info({ domains: config.domains, notAfter: c.notAfter.toISOString(), fingerprint: c.fingerprint }, `ACME: serving the certificate ${owner} stored`);
    }
    return undefined;
  };
  const problem = look();
  log.info({ dir: config.dir }, `ACME: ${config.dir} is owned by ${owner}, which orders and renews; this hub serves its certificates and does not listen on the HTTP port`);
  const timer = setInterval(() => {
    try {
      look();
    } catch (err) {
      log.warn({}, `ACME: cannot read ${store.certFile}: ${oneLine(err)}`);
    }
  }, FOLLOW_EVERY);
  timer.unref();
  return {
    ready: async () => {
      if (problem !== undefined && fingerprint === undefined) {
        throw new AcmeStartError(`ACME: ${config.dir} is owned by ${owner}, and holds no usable certificate for ${config.domains.join(', ')} (${problem}); start that hub first, or give this one its own --acme-dir`);
      }
    },
    close: async () => clearInterval(timer),
  };
}

/** For a process that serves: the slot to pass to `serve` and the ACME run filling it, if configured. */
export async function startAcmeFromConfig(config: Config, logger: Logger): Promise<(Acme & { slot: CertificateSlot }) | undefined> {
  const acmeConfig = config.server.acme;
  if (!acmeConfig) return undefined;
  const slot = new CertificateSlot();
  const run = await startAcme(acmeConfig, slot, { logger, tlsPort: parseAddr(config.server.addr).port });
  return { ...run, slot };
}
