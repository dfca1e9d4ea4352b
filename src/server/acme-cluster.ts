/**
 * Certificates in a cluster: the primary alone runs ACME (one owner of the storage and of the
 * orders), and every worker serves what the primary's slot holds. A worker asks for the current
 * state once it can receive it (messages sent before it listens would be lost), then gets every
 * change: a renewed certificate, a TLS-ALPN-01 challenge added or removed.
 */
import type { Worker } from 'node:cluster';
import { CertificateSlot, type SlotEvent } from './acme-tls.js';

type AcmeMessage = { qsAcme: 'hello' | SlotEvent | { snapshot: SlotEvent[] } };

function acmePart(m: unknown): AcmeMessage['qsAcme'] | undefined {
  return typeof m === 'object' && m !== null && 'qsAcme' in m ? (m as AcmeMessage).qsAcme : undefined;
}

/** In the primary, for each forked worker. */
export function shareCertificates(slot: CertificateSlot, worker: Worker): void {
  const send = (message: AcmeMessage): void => {
    if (!worker.isConnected()) return;
    try {
      worker.send(message);
    } catch {
      // A worker going away gets its state again when it is restarted.
    }
  };
  const off = slot.onChange((e) => send({ qsAcme: e }));
  worker.on('message', (m: unknown) => {
    if (acmePart(m) === 'hello') send({ qsAcme: { snapshot: slot.snapshot() } });
  });
  worker.once('exit', off);
}

/** In a worker, before it listens: the slot the primary keeps up to date. */
export function workerCertificates(timeoutMs = 10_000): Promise<CertificateSlot> {
  const slot = new CertificateSlot();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no certificate state from the primary within ${timeoutMs} ms`)), timeoutMs);
    process.on('message', (m: unknown) => {
      const part = acmePart(m);
      if (part === undefined || part === 'hello') return;
      if ('snapshot' in part) {
        for (const e of part.snapshot) slot.apply(e);
        clearTimeout(timer);
        resolve(slot);
      } else {
        slot.apply(part);
      }
    });
    process.send?.({ qsAcme: 'hello' });
  });
}
