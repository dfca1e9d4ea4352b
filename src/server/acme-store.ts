/**
 * ACME storage on disk: one directory per CA (a staging certificate must never be served as a
 * production one), holding the account key and one directory per certificate:
 *
 *     <acme-dir>/                                   0700
 *       <ca>/account.key                            0600  (ECDSA P-256, PEM)
 *       <ca>/certificates/<first-domain>/cert.pem   0600  (leaf + chain)
 *       <ca>/certificates/<first-domain>/key.pem    0600
 *
 * `<ca>` is the directory URL's host and path, e.g. `acme-v02.api.letsencrypt.org-directory`.
 * Files are written to a temporary name and renamed, so a reader never sees half a file; a
 * reader may see a new certificate with the old key for an instant, which `loadCertificate`
 * rejects (the pair must match).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import nodePath from 'node:path';

export interface StoredCertificate {
  cert: string;
  key: string;
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 fingerprint of the leaf, to tell certificates apart in logs. */
  fingerprint: string;
}

export function caDirName(directoryUrl: string): string {
  const u = new URL(directoryUrl);
  return `${u.host}${u.pathname}`.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^-+|-+$/g, '').toLowerCase();
}

export class AcmeStore {
  readonly caDir: string;
  readonly certDir: string;

  constructor(readonly root: string, directoryUrl: string, domains: readonly string[]) {
    this.caDir = nodePath.join(root, caDirName(directoryUrl));
    this.certDir = nodePath.join(this.caDir, 'certificates', domains[0] as string);
  }

  get certFile(): string { return nodePath.join(this.certDir, 'cert.pem'); }
  get keyFile(): string { return nodePath.join(this.certDir, 'key.pem'); }

  /** Creates the directories (0700 each; existing ones are tightened). */
  prepare(): void {
    for (const d of [this.root, this.caDir, nodePath.dirname(this.certDir), this.certDir]) {
      fs.mkdirSync(d, { recursive: true, mode: 0o700 });
      fs.chmodSync(d, 0o700);
    }
  }

  accountKey(): string | undefined {
    return readOrUndefined(nodePath.join(this.caDir, 'account.key'));
  }

  saveAccountKey(pem: string): void {
    writeAtomic(nodePath.join(this.caDir, 'account.key'), pem);
  }

  save(cert: string, key: string): void {
    // The key first: a reader pairing the new certificate with the old key retries, the other
    // order would pair an old certificate with a new key just the same.
    writeAtomic(this.keyFile, key);
    writeAtomic(this.certFile, cert);
  }

  /** The stored certificate if it covers `domains`, is current and matches its key; else why not. */
  load(domains: readonly string[], now = Date.now()): StoredCertificate | string {
    const cert = readOrUndefined(this.certFile);
    const key = readOrUndefined(this.keyFile);
    if (cert === undefined || key === undefined) return 'none stored';
    return checkCertificate(cert, key, domains, now);
  }
}

export function checkCertificate(cert: string, key: string, domains: readonly string[], now = Date.now()): StoredCertificate | string {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
    if (!x509.checkPrivateKey(createPrivateKey(key))) return 'the key does not match the certificate';
  } catch (err) {
    return `unreadable: ${(err as Error).message}`;
  }
  const notBefore = new Date(x509.validFrom);
  const notAfter = new Date(x509.validTo);
  if (notAfter.getTime() <= now) return `expired on ${notAfter.toISOString()}`;
  const names = (x509.subjectAltName ?? '').split(/,\s*/).filter((n) => n.startsWith('DNS:')).map((n) => n.slice(4).toLowerCase());
  const missing = domains.filter((d) => !names.includes(d));
  if (missing.length > 0) return `it does not cover ${missing.join(', ')}`;
  return { cert, key, notBefore, notAfter, fingerprint: x509.fingerprint256 };
}

function readOrUndefined(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}
