/** Log-message helpers shared by the key sources, the claim parser and the authorizer. */

/** A token-supplied value, quoted and truncated for a log message. */
export function show(value: unknown, quote = true): string {
  const s = String(value).slice(0, 100);
  return quote ? JSON.stringify(s) : s.replace(/[^\x20-\x7e]/g, '?');
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
