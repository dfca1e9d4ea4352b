/**
 * transports/: the backends behind core/transport.ts, one file or folder each: memory, lmdb
 * (embedded default), redis/, postgres/, nats/ and cluster/ (worker processes reaching the
 * primary's transport over IPC). A transport stores updates in history and fans them out to every
 * hub process sharing it. It may import core/ (the interface and update types), observability/ and
 * util/ only. This file picks a backend from a transport URL.
 */
import { urlDuration } from '../util/duration.js';
import type { Logger } from '../observability/logger.js';
import type { Transport } from '../core/transport.js';
import { MemoryTransport } from './memory.js';
import { dedupeWindowParam } from './recent-ids.js';

/**
 * Builds the transport named by a URL (`memory://`, `lmdb:///path`, `redis://`, `redis+cluster://`, `postgres://`,
 * `nats://`). Server transports are loaded on demand so their clients cost nothing when unused.
 */
export async function createTransport(url: string, logger: Logger): Promise<Transport> {
  let u: URL;
  try {
    // A cluster URL may list several hosts, which a WHATWG URL cannot hold: rewritten first.
    u = /^rediss?\+cluster:/i.test(url.trim()) ? (await import('./redis/options.js')).parseTransportUrl(url) : new URL(url);
  } catch {
    throw new Error(`invalid transport URL "${url}"`);
  }
  const scheme = u.protocol.replace(/:$/, '');
  const num = (name: string): number | undefined => {
    const v = u.searchParams.get(name);
    if (v === null || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`transport URL: "${name}" must be a non-negative number, got "${v}"`);
    return n;
  };
  switch (scheme) {
    case 'memory':
    case 'local':
      const maxAge = u.searchParams.get('max_age');
      return new MemoryTransport({ size: num('size'), maxAge: maxAge ? urlDuration('max_age', maxAge) : undefined, dedupeWindow: dedupeWindowParam(u) });
    case 'lmdb':
    case 'bolt': {
      const { lmdbTransportFromUrl } = await import('./lmdb.js');
      if (scheme === 'bolt') logger.warn({ url }, 'bolt:// is deprecated: using an LMDB store at the same path + ".lmdb"');
      const t = lmdbTransportFromUrl(u, logger);
      // Owning the store is part of opening it: a store another hub owns is refused here.
      await t.claim();
      const h = t.health();
      if (!h.ready) throw new Error(`cannot open the LMDB store: ${h.reason ?? 'unknown error'}`);
      return t;
    }
    case 'postgres':
    case 'postgresql': {
      const { postgresTransportFromUrl } = await import('./postgres/index.js');
      return postgresTransportFromUrl(u, logger);
    }
    case 'nats': {
      const { natsTransportFromUrl } = await import('./nats/index.js');
      return natsTransportFromUrl(u, logger);
    }
    case 'redis':
    case 'rediss':
    case 'redis+cluster':
    case 'rediss+cluster': {
      const { redisTransportFromUrl } = await import('./redis/index.js');
      return redisTransportFromUrl(u, logger);
    }
    default:
      throw new Error(
        `unsupported transport "${scheme}://" (supported: lmdb://, memory://, redis://, rediss://, redis+cluster://, postgres://, nats://)`,
      );
  }
}
