/**
 * The `error` and `error_description` of a `WWW-Authenticate: Bearer` challenge (RFC 6750), which
 * draft-08 hubs send with a 401/403: the publisher and the subscriber both report them.
 */
export function bearerChallenge(value: string | null): { error?: string; description?: string } {
  if (!value) return {};
  const out: { error?: string; description?: string } = {};
  const re = /(error|error_description)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/gi;
  for (let m = re.exec(value); m; m = re.exec(value)) {
    const v = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!;
    if (m[1]!.toLowerCase() === 'error') out.error = v;
    else out.description = v;
  }
  return out;
}
