/**
 * util/: small helpers with no project imports (durations, an LRU cache, UUIDv7), kept apart so
 * that any layer may use them without depending on another layer. This file parses durations.
 */
const UNITS: Record<string, number> = {
  ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000,
};

/**
 * Parses a Go-like duration into milliseconds: `40s`, `10m`, `1h30m`, `1.5h`, `500ms`, `7d`, `0s`
 * (units ns, us/µs, ms, s, m, h, d, w). A bare number counts in `bareUnit` milliseconds: seconds
 * (1000) where the reference hub's settings are read, milliseconds (1) in transport URLs. Negative,
 * empty or malformed values give null. A non-zero duration never rounds to 0, which would mean
 * "disabled".
 */
export function parseDuration(value: string, bareUnit = 1000): number | null {
  const s = value.trim();
  if (s === '') return null;
  let total: number;
  if (/^(?:\d+(?:\.\d*)?|\.\d+)$/.test(s)) {
    total = Number(s) * bareUnit;
  } else {
    const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w)/gy;
    total = 0;
    let pos = 0;
    for (let m = re.exec(s); m !== null; m = re.exec(s)) {
      total += Number(m[1]) * UNITS[m[2]!]!;
      pos = re.lastIndex;
    }
    if (pos !== s.length) return null;
  }
  if (!Number.isFinite(total)) return null;
  const ms = Math.round(total);
  return ms === 0 && total > 0 ? 1 : ms;
}

/** A duration from a transport URL parameter (bare numbers in ms); throws a message naming it. */
export function urlDuration(name: string, value: string): number {
  const ms = parseDuration(value, 1);
  if (ms === null) throw new Error(`transport URL: "${name}" must be a duration (e.g. 500ms, 30s, 15m, 24h, 7d), got "${value}"`);
  return ms;
}
