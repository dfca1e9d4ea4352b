/**
 * The publish path's shortcuts must decide exactly what their slow versions decide: form fields
 * decoded by decodeURIComponent against the byte-by-byte decoder, and the reserved-namespace
 * check's plain-topic shortcut against a full URL resolution, on generated hostile inputs.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeComponentBytes, parseForm } from '../src/http/form.js';
import { isReservedTopic } from '../src/core/reserved-topic.js';

const hex = fc.integer({ min: 0, max: 255 }).map((b) => `%${b.toString(16).padStart(2, b % 3 ? '0' : '0').toUpperCase()}`);
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

const UNRESERVED = /%(2[dDeE]|3[0-9]|4[1-9a-fA-F]|5[0-9aA]|5[fF]|6[1-9a-fA-F]|7[0-9aA]|7[eE])/g;
function reservedByUrl(topic: string, hubUrl: string): boolean {
  let path: string;
  try {
    path = new URL(topic.replace(UNRESERVED, (m) => decodeURIComponent(m)), hubUrl).pathname;
  } catch {
    return false;
  }
  path = path.replace(UNRESERVED, (m) => decodeURIComponent(m));
  return path === '/.well-known/mercure' || path.startsWith('/.well-known/mercure/');
}

describe('reserved topics', () => {
  const hub = 'https://hub.example/.well-known/mercure';
  const parts = fc.constantFrom('/', '.', '..', '/.well-known', '/mercure', 'well-known', 'mercure', '\\', '\t', '%2E', '%6D', 'https://hub.example', 'https:', 'HTTPS://', 'urn:', 'ws:/', '//', '?', '#', ':', 'x', 'W');
  const topic = fc.oneof(fc.array(parts, { maxLength: 8 }).map((p) => p.join('')), fc.string({ maxLength: 30 }));

  it('the plain-topic shortcut agrees with URL resolution', () => {
    fc.assert(
      fc.property(topic, (t) => {
        expect(isReservedTopic(t, hub)).toBe(reservedByUrl(t, hub));
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
