/**
 * observability/: logs (pino), Prometheus metrics and tracing hooks. Leaf modules that every layer
 * may use and that import nothing of the project but util/. This file is the logger.
 */
import { pino } from 'pino';

/** The subset of pino's interface the hub uses, so any compatible logger can be injected. */
export interface Logger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
  child?(bindings: Record<string, unknown>): Logger;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

// Tokens must never reach the logs, wherever a careless caller put them.
const REDACT = [
  'authorization',
  'token',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  '*.authorization',
  '*.token',
];

export function createLogger(level: LogLevel = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    { name: 'quicksilver', level, redact: { paths: REDACT, censor: '[redacted]' } },
    destination as never,
  ) as unknown as Logger;
}

/** Strips the `authorization` query parameter (a token) from a URL before it is logged. */
export function redactUrl(url: string): string {
  return url.replace(/([?&]authorization=)[^&]*/gi, '$1[redacted]');
}
