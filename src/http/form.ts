/**
 * `application/x-www-form-urlencoded` parsing that, unlike URLSearchParams, refuses what it cannot
 * decode faithfully: invalid percent escapes and bytes that are not UTF-8 become an error instead
 * of silently turning into U+FFFD in a published payload.
 */
export type FormFields = Array<[name: string, value: string]>;

const decoder = new TextDecoder('utf-8', { fatal: true });

function decodeComponent(s: string): string | null {
  if (s.indexOf('%') < 0 && s.indexOf('+') < 0) return s;
  if (s.indexOf('%') < 0) return s.replace(/\+/g, ' ');
  // decodeURIComponent refuses malformed escapes and escapes that are not UTF-8 (overlong forms
  // and surrogates included), as the byte-by-byte decoder it replaced did (kept as the oracle of
  // test/publish-fast-paths.test.ts), and it is native.
  try {
    return decodeURIComponent(s.indexOf('+') < 0 ? s : s.replace(/\+/g, ' '));
  } catch {
    return null;
  }
}

/** Parses a form body or query string. Returns an error message instead of throwing. */
export function parseForm(input: string): FormFields | { error: string } {
  const fields: FormFields = [];
  if (input === '') return fields;
  for (const pair of input.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const rawName = eq < 0 ? pair : pair.slice(0, eq);
    const rawValue = eq < 0 ? '' : pair.slice(eq + 1);
    const name = decodeComponent(rawName);
    const value = decodeComponent(rawValue);
    if (name === null || value === null) {
      return { error: `malformed form field "${rawName.slice(0, 64)}": invalid percent-encoding or not UTF-8` };
    }
    fields.push([name, value]);
  }
  return fields;
}

export function getAll(fields: FormFields, name: string): string[] {
  const out: string[] = [];
  for (const [n, v] of fields) if (n === name) out.push(v);
  return out;
}

export function getFirst(fields: FormFields, name: string): string | undefined {
  for (const [n, v] of fields) if (n === name) return v;
  return undefined;
}

export function has(fields: FormFields, name: string): boolean {
  for (const [n] of fields) if (n === name) return true;
  return false;
}

/** Decodes UTF-8, or null when the bytes are not valid UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return decoder.decode(bytes);
  } catch {
    return null;
  }
}
