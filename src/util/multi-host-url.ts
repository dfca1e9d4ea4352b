/**
 * Seed-node lists in a URL's authority (`redis+cluster://h1:7000,h2:7001/…`), the form cluster
 * clients document, which WHATWG URL parsing refuses. Kept here rather than in the Redis
 * transport so that the configuration can validate such a URL without importing a backend.
 */

/**
 * Parses a URL whose authority may list several `host:port` pairs separated by commas: the
 * first becomes the URL's host, the others are appended to its `nodes` query parameter. A URL
 * with one host is parsed as it is. Throws TypeError as `new URL` does.
 */
export function parseMultiHostUrl(raw: string): URL {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/i.exec(raw.trim());
  const hosts = m ? m[2]!.slice(m[2]!.lastIndexOf('@') + 1) : '';
  if (!m || !hosts.includes(',')) return new URL(raw);
  const auth = m[2]!.slice(0, m[2]!.length - hosts.length);
  const [first, ...others] = hosts.split(',').filter((h) => h !== '');
  const url = new URL(`${m[1]}${auth}${first ?? ''}${m[3]!.startsWith('/') || m[3] === '' ? m[3] : `/${m[3]}`}`);
  const extra = [url.searchParams.get('nodes'), ...others].filter((x) => x).join(',');
  url.searchParams.set('nodes', extra);
  return url;
}

/** The URL with its password replaced by `***`, in either form; unparseable input is returned as is. */
export function redactUrlPassword(raw: string): string {
  try {
    const u = parseMultiHostUrl(raw);
    if (!u.password) return raw;
    // Masked in the text itself, so a multi-host authority keeps the form the operator wrote.
    return raw.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/?#]*:)[^@/?#]*@/i, '$1***@');
  } catch {
    return raw;
  }
}
