/*
 * The `nats://` transport URL and the options it maps to. Separate from the transport so that
 * the URL syntax (query parameters, credentials in the authority) is read in one place and the
 * transport only ever sees typed options.
 */
import type { Logger } from '../../observability/logger.js';
import { urlDuration } from '../../util/duration.js';
import { NatsTransport } from './transport.js';

/**
 * `nats://[user:pass@|token@]host:4222?stream=MERCURE&subject=mercure.updates&size=100000&max_age=7d&replicas=1`
 * plus `servers=host2:4222,host3:4222` (more seed servers), `tls=1`, `publish_timeout=2s`,
 * `presence_ttl=15s` and `dedupe_window=2m` (the stream's duplicate window; 0 = reused ids are
 * stored again).
 */
export function natsTransportFromUrl(url: URL, logger: Logger): NatsTransport {
  const q = url.searchParams;
  const str = (name: string) => {
    const v = q.get(name);
    return v === null || v === '' ? undefined : v;
  };
  const int = (name: string) => {
    const v = str(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`transport URL: "${name}" must be a non-negative integer, got "${v}"`);
    return n;
  };
  const duration = (name: string) => {
    const v = str(name);
    return v === undefined ? undefined : urlDuration(name, v);
  };
  const servers = [`${url.hostname || '127.0.0.1'}:${url.port || '4222'}`];
  for (const s of (str('servers') ?? '').split(',')) if (s.trim()) servers.push(s.trim());
  const user = url.username ? decodeURIComponent(url.username) : undefined;
  const pass = url.password ? decodeURIComponent(url.password) : undefined;
  const tls = str('tls');
  return new NatsTransport({
    servers,
    ...(user !== undefined && pass === undefined ? { token: user } : { user, pass }),
    tls: tls !== undefined && tls !== '0' && tls !== 'false',
    stream: str('stream'),
    subject: str('subject'),
    size: int('size'),
    maxAge: duration('max_age'),
    replicas: int('replicas'),
    publishTimeout: duration('publish_timeout'),
    presenceTtl: duration('presence_ttl'),
    dedupeWindow: duration('dedupe_window'),
    logger,
  });
}
