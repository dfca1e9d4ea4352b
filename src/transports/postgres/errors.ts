/*
 * Which PostgreSQL and driver errors mean "the database cannot serve us right now", and the text
 * to show for them. Every part of the transport uses this one judgement to decide between a 503
 * (TransportUnavailableError) and passing a genuine bug or bad value through.
 */
import { TransportUnavailableError } from '../../core/transport.js';

const NET_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH',
  'ENETDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ENOENT', 'EACCES', 'ERR_SOCKET_CLOSED', 'ESHUTDOWN',
]);

/**
 * Whether an error means "the database cannot serve us right now" (as opposed to a bad query or
 * value): network errors, connection loss, server shutting down or out of resources, login
 * failures, read-only server (a standby after failover).
 */
export function isUnavailableError(err: unknown): boolean {
  if (err instanceof TransportUnavailableError) return true;
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (NET_CODES.has(code)) return true;
    if (/^(08|53|28)/.test(code) || ['57P01', '57P02', '57P03', '57P05', '3D000', '25006', '55000'].includes(code)) {
      return true;
    }
  }
  const message = (err as { message?: unknown }).message;
  return (
    typeof message === 'string' &&
    /connection terminated|timeout exceeded when trying to connect|connection timeout|not queryable|query read timeout|timeout expired|cannot use a pool after calling end|connect ECONNREFUSED|socket/i.test(
      message,
    )
  );
}

/** The most telling message of a driver error (an AggregateError names its first cause). */
export function errorText(err: unknown): string {
  if (typeof err !== 'object' || err === null) return String(err);
  const e = err as { message?: unknown; code?: unknown; errors?: unknown };
  let message = typeof e.message === 'string' ? e.message : '';
  if (!message && Array.isArray(e.errors) && e.errors.length > 0) message = errorText(e.errors[0]);
  if (!message && typeof e.code === 'string') message = e.code;
  return message || String(err);
}
