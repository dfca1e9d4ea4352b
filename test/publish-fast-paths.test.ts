/**
 * The publish path's shortcuts must decide exactly what their slow versions decide: form fields
 * decoded by decodeURIComponent against the byte-by-byte decoder they replaced, and the
 * reserved-namespace check's plain-topic shortcut against its full URL resolution, on generated
 * hostile inputs.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseForm } from '../src/http/form.js';
import { isReservedTopic, resolvesIntoNamespace } from '../src/core/reserved-topic.js';

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** The byte-by-byte decoder the hub used before: the oracle. */
function decodeComponentBytes(s: string): string | null {
  const bytes = Buffer.allocUnsafe(Buffer.byteLength(s));
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 37 /* % */) {
      const h = hexValue(s.charCodeAt(i + 1));
      const l = hexValue(s.charCodeAt(i + 2));
      if (h < 0 || l < 0) return null;
      bytes[n++] = (h << 4) | l;
      i += 2;
    } else if (c === 43 /* + */) {
      bytes[n++] = 32;
    } else if (c < 128) {
      bytes[n++] = c;
    } else {
      n += bytes.write(s[i]! + (c >= 0xd800 && c <= 0xdbff ? s[i + 1] ?? '' : ''), n);
      if (c >= 0xd800 && c <= 0xdbff) i++;
    }
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(0, n));
  } catch {
    return null;
  }
}

// Upper- and lower-case hex digits both.
const hex = fc.integer({ min: 0, max: 255 }).map((b) => { const h = b.toString(16).padStart(2, '0'); return `%${b % 3 ? h.toUpperCase() : h}`; });
const piece = fc.oneof(
  { weight: 4, arbitrary: hex },
  { weight: 1, arbitrary: fc.constantFrom('%', '%4', '%G1', '+', '%2B', '%25', '%ED%A0%80', '%C0%AF', '%F4%90%80%80') },
  { weight: 3, arbitrary: fc.string({ maxLength: 3 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 2 }) },
);
const component = fc.array(piece, { maxLength: 12 }).map((p) => p.join('').replace(/[&=]/g, ''));

describe('form decoding', () => {
  it('decodeURIComponent decides as the byte decoder does', () => {
    fc.assert(
      fc.property(component, (s) => {
        const fields = parseForm(`k=${s}`);
        const expected = decodeComponentBytes(s);
        if (expected === null) expect('error' in fields).toBe(true);
        else expect(fields).toEqual([['k', expected]]);
      }),
      { numRuns: 5000 },
    );
  });

  it('refuses escapes that are not UTF-8', () => {
    for (const bad of ['%C3%28', '%ED%A0%80', '%C0%AF', '%F4%90%80%80', '%E2%82', '%4', '%zz']) {
      expect('error' in parseForm(`data=${bad}`), bad).toBe(true);
    }
    expect(parseForm('data=a+b%2Bc%C3%A9')).toEqual([['data', 'a b+cé']]);
  });
});

describe('reserved topics', () => {
  const hub = 'https://hub.example/.well-known/mercure';
  const parts = fc.constantFrom('/', '.', '..', '/.well-known', '/mercure', 'well-known', 'mercure', '\\', '\t', '%2E', '%6D', 'https://hub.example', 'https:', 'HTTPS://', 'urn:', 'ws:/', '//', '?', '#', ':', 'x', 'W');
  const topic = fc.oneof(fc.array(parts, { maxLength: 8 }).map((p) => p.join('')), fc.string({ maxLength: 30 }));

  it('the plain-topic shortcut agrees with URL resolution', () => {
    fc.assert(
      fc.property(topic, (t) => {
        expect(isReservedTopic(t, hub)).toBe(resolvesIntoNamespace(t, hub));
      }),
      { numRuns: 5000 },
    );
  });

  it('still sees the namespace behind escapes, dot-segments, tabs and backslashes', () => {
    for (const t of ['/.well-known/mercure', '/.well-known/%6Dercure/x', '/a/../.well-known/mercure', '/.well-kn\town/mercure', '\\.well-known\\mercure', 'https://hub.example/.well-known/mercure/../mercure/x', '', '?x', 'mercure', 'https:mercure', 'HTTPS:mercure/x']) {
      expect(isReservedTopic(t, hub), JSON.stringify(t)).toBe(true);
    }
    expect(isReservedTopic('https://example.com/books/1', hub)).toBe(false);
  });
});
