/**
 * Header values built from request or update data. Node writes header strings as latin1, one
 * byte per character, and refuses (or, on a hand-written path, would truncate) characters above
 * U+00FF. Values are therefore carried as their UTF-8 bytes, the way the reference hub (Go
 * writes strings as bytes) and browsers (Last-Event-ID) do, and a value a header cannot carry
 * at all is refused, never shortened.
 */

export class HeaderValueError extends Error {}

// What RFC 9110 field-content allows, once the value is a byte string: HTAB, SP, VCHAR, obs-text.
const FIELD_BYTES = /^[\t\x20-\x7e\x80-\xff]*$/;
const PRINTABLE_ASCII = /^[\t\x20-\x7e]*$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether `s` has characters no header can carry: ASCII controls but HTAB, DEL, lone surrogates. */
export function unfitForHeader(s: string): boolean {
  return CONTROL.test(s) || LONE_SURROGATE.test(s);
}

/**
 * The byte string (one char per byte) that carries `s` in a header: `s` itself when it is
 * printable ASCII, else its UTF-8 bytes. Throws HeaderValueError for what no header can carry.
 */
export function headerValue(s: string): string {
  if (PRINTABLE_ASCII.test(s)) return s;
  if (unfitForHeader(s)) throw new HeaderValueError(`value cannot be carried in an HTTP header: ${JSON.stringify(s.slice(0, 100))}`);
  return Buffer.from(s, 'utf8').toString('latin1');
}

/** A header value as received (latin1 chars, one per byte) back to text, when it is UTF-8. */
export function fromHeaderBytes(value: string): string {
  if (!/[\u0080-\u00ff]/.test(value)) return value;
  const bytes = Buffer.from(value, 'latin1');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return value;
  }
}

/** Whether a header value (as Node holds it, latin1) may be written as it is. */
export function isFieldValue(value: string): boolean {
  return FIELD_BYTES.test(value);
}

/**
 * Text for a quoted-string that must stay printable ASCII (RFC 6750's error_description):
 * `"` and `\` escaped, every other character outside %x20-7E percent-encoded as UTF-8 (and `%`
 * itself, so that the encoding reads back unambiguously).
 */
export function asciiQuoted(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (ch === '%' || c < 0x20 || c > 0x7e) {
      // A lone surrogate has no UTF-8: U+FFFD stands for it rather than dropping it silently.
      const bytes = Buffer.from(c >= 0xd800 && c <= 0xdfff ? '\ufffd' : ch, 'utf8');
      for (const b of bytes) out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
    } else out += ch;
  }
  return `"${out}"`;
}

// RFC 3986 host (reg-name, IPv4, IP-literal) and an optional port: what Go's net/http accepts
// in Host (httpguts.ValidHostHeader) is close to this; anything else is no host.
const HOST = /^(?:\[[0-9A-Za-z:.%_~-]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?$/;

/** Whether a Host / :authority / X-Forwarded-Host value is a host name (with its port). */
export function isHost(value: string): boolean {
  return value.length <= 1024 && HOST.test(value);
}

// An origin serialization: scheme "://" host [":" port], or the opaque "null".
const ORIGIN = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)(?::[0-9]{1,5})?$/;

/** Whether an Origin header value is an origin (and so may be echoed by CORS). */
export function isOrigin(value: string): boolean {
  return value === 'null' || (value.length <= 1024 && ORIGIN.test(value));
}

/**
 * Why the request's host cannot be used, or null. The host goes into headers the hub writes
 * (WWW-Authenticate's resource_metadata, Link) and into token audiences: a malformed one is
 * refused with 400 as Go's net/http does, never copied.
 */
export function hostProblem(headers: Readonly<Record<string, string | string[] | undefined>>, trustProxy: boolean): string | null {
  const first = (name: string): string | undefined => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const authority = first(':authority');
  if (authority !== undefined && !isHost(authority)) return 'malformed :authority pseudo-header';
  const host = first('host');
  if (host !== undefined && !isHost(host)) return 'malformed Host header';
  if (trustProxy) {
    const forwarded = first('x-forwarded-host')?.split(',')[0]?.trim();
    if (forwarded && !isHost(forwarded)) return 'malformed X-Forwarded-Host header';
  }
  return null;
}

// RFC 3986 characters allowed in a URI reference, `%` included since the input is already encoded.
const URI_CHAR = /[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]/;

/**
 * A request path and query made fit for a URI-reference header (`Link: <…>`, `Location`): every
 * character RFC 3986 does not allow is percent-encoded as UTF-8. HTTP/2 delivers `:path` with
 * characters an HTTP/1.1 parser would refuse (spaces, `<`, `>`, `"`, non-ASCII), which would
 * otherwise break out of the `<…>` of a Link or make the header unwritable.
 */
export function uriReference(s: string): string {
  let out = '';
  for (const ch of s) out += URI_CHAR.test(ch) ? ch : encodeURIComponent(ch.length === 1 && ch >= '\ud800' && ch <= '\udfff' ? '\ufffd' : ch);
  return out;
}
