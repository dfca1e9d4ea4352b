/*
 * Configuration of the LMDB transport: its options and how an `lmdb://` (or legacy `bolt://`) URL
 * maps onto them. Kept apart from the store so that URL syntax can change without touching it.
 */
import { parseDuration as parseDurationMs } from '../util/duration.js';

export interface LmdbTransportOptions {
  /**
   * Where the store lives. A path with an extension (`hub.lmdb`) is a single data file plus a
   * `<name>-lock` file next to it; a path without one (or an existing directory) is a directory
   * holding `data.mdb` and `lock.mdb`. Missing parent directories are created.
   */
  path: string;
  /** Most updates kept for replay, oldest dropped first. Default 100 000; 0 = no count limit. */
  size?: number | undefined;
  /** Drop updates older than this many ms. Default 7 days; 0 = no age limit. */
  maxAge?: number | undefined;
  /**
   * How often (ms) expired updates are deleted in the background. Default: a tenth of `maxAge`,
   * between 1 s and 60 s. Count retention runs after writes, whatever this says.
   */
  cleanupInterval?: number | undefined;
  /** A dispatch whose id was stored this recently (ms) is a duplicate. Default 2 minutes; 0 = off. */
  dedupeWindow?: number | undefined;
}

/** A duration from the URL: `7d`, `24h`, `30m`, `10s`, `500ms` or plain milliseconds. */
export function parseDuration(value: string): number {
  const ms = parseDurationMs(value, 1);
  if (ms === null) throw new Error(`invalid duration "${value}" (use e.g. 7d, 24h, 30m, 10s, 500ms or milliseconds)`);
  return ms;
}

const LMDB_PARAMS = new Set(['size', 'max_age', 'cleanup_interval', 'dedupe_window']);
/** Reference-hub Bolt parameters accepted (and ignored) on `bolt://` URLs. */
const BOLT_IGNORED_PARAMS = new Set(['cleanup_frequency', 'bucket_name']);

/**
 * Reads transport options from a URL.
 *
 * The store path is everything after `lmdb://`, i.e. the URL's host followed by its path,
 * percent-decoded:
 * - `lmdb:///var/lib/quicksilver/hub.lmdb` → `/var/lib/quicksilver/hub.lmdb` (absolute, empty host)
 * - `lmdb://./data/hub.lmdb` → `./data/hub.lmdb`, `lmdb://hub.lmdb` → `hub.lmdb` (relative to
 *   the working directory); `lmdb://~/hub.lmdb` → in the home directory
 * - `lmdb:data/hub.lmdb` (no slashes) also reads as a relative path.
 *
 * Query: `size` (count, 0 = no count limit), `max_age`, `cleanup_interval` and `dedupe_window`
 * (durations such as `7d`, `24h`, `30m`, `10s` or milliseconds; `max_age=0` = no age limit,
 * `dedupe_window=0` = reused ids are stored again).
 *
 * Legacy `bolt://path?size=N` (reference hub) maps to an LMDB store at the same path plus
 * `.lmdb` (the Bolt file itself is not read); `cleanup_frequency` and `bucket_name` are ignored.
 */
export function lmdbOptionsFromUrl(url: URL): LmdbTransportOptions {
  const scheme = url.protocol.replace(/:$/, '');
  if (scheme !== 'lmdb' && scheme !== 'bolt') throw new Error(`not an lmdb transport URL: "${scheme}://"`);
  let path: string;
  try {
    path = decodeURIComponent(url.host + url.pathname);
  } catch {
    throw new Error(`${scheme} transport URL: invalid percent-encoding in the path`);
  }
  if (process.platform === 'win32' && /^\/[A-Za-z]:[/\\]/.test(path)) path = path.slice(1);
  if (path === '' || path === '/') throw new Error(`${scheme} transport URL needs a store path, e.g. ${scheme}:///var/lib/quicksilver/hub.lmdb or ${scheme}://./data/hub.lmdb`);
  if (scheme === 'bolt') path += '.lmdb';

  const options: LmdbTransportOptions = { path };
  for (const [name, value] of url.searchParams) {
    if (scheme === 'bolt' && BOLT_IGNORED_PARAMS.has(name)) continue;
    if (!LMDB_PARAMS.has(name)) throw new Error(`${scheme} transport URL: unknown parameter "${name}" (supported: ${[...LMDB_PARAMS].join(', ')})`);
    if (name === 'size') {
      if (!/^\d+$/.test(value)) throw new Error(`${scheme} transport URL: "size" must be a non-negative integer, got "${value}"`);
      options.size = Number(value);
    } else {
      let ms: number;
      try {
        ms = parseDuration(value);
      } catch (err) {
        throw new Error(`${scheme} transport URL: "${name}": ${errorMessage(err)}`);
      }
      if (name === 'max_age') options.maxAge = ms;
      else if (name === 'dedupe_window') options.dedupeWindow = ms;
      else options.cleanupInterval = ms;
    }
  }
  return options;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
