import { HUB_PATH } from './subscription.js';

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;
const SPECIAL = new Set(['http', 'https', 'ws', 'wss', 'ftp', 'file']);
const PLAIN = /^[\x21-\x24\x26-\x5b\x5d-\x7e]*$/;
const UNRESERVED = /%(2[dDeE]|3[0-9]|4[1-9a-fA-F]|5[0-9aA]|5[fF]|6[1-9a-fA-F]|7[0-9aA]|7[eE])/g;

/**
 * Whether a topic addresses the hub's reserved namespace once resolved against the hub URL, with
 * dot-segments removed and unreserved percent-escapes decoded, so that `/.well-known/%6Dercure/x`
 * or `https://hub/.well-known/mercure/../mercure/x` cannot forge hub events.
 */
export function isReservedTopic(topic: string, hubUrl: string): boolean {
  // An absolute topic without escapes, backslashes, whitespace or controls (which the URL parser
  // decodes, turns into slashes or strips) can only resolve into the namespace by spelling it.
  // Relative ones resolve against the hub URL ("", "?x", "mercure"), and so does a special
  // scheme without "//" ("https:mercure"): those take the full resolution.
  if (PLAIN.test(topic) && !topic.includes('well-known')) {
    const scheme = SCHEME.exec(topic);
    if (scheme && (!SPECIAL.has(scheme[1]!.toLowerCase()) || topic.startsWith('//', scheme[0].length))) return false;
  }
  return resolvesIntoNamespace(topic, hubUrl);
}

/** The full check, resolving the topic as a URL: what the shortcut above must agree with (tests). */
export function resolvesIntoNamespace(topic: string, hubUrl: string): boolean {
  let path: string;
  try {
    // Decoding first lets URL's own dot-segment removal see `%2E%2E` as `..`.
    path = new URL(topic.replace(UNRESERVED, (m) => decodeURIComponent(m)), hubUrl).pathname;
  } catch {
    return false;
  }
  path = path.replace(UNRESERVED, (m) => decodeURIComponent(m));
  return path === HUB_PATH || path.startsWith(HUB_PATH + '/');
}
