import { HUB_PATH } from './subscription.js';

const UNRESERVED = /%(2[dDeE]|3[0-9]|4[1-9a-fA-F]|5[0-9aA]|5[fF]|6[1-9a-fA-F]|7[0-9aA]|7[eE])/g;

/**
 * Whether a topic addresses the hub's reserved namespace once resolved against the hub URL, with
 * dot-segments removed and unreserved percent-escapes decoded, so that `/.well-known/%6Dercure/x`
 * or `https://hub/.well-known/mercure/../mercure/x` cannot forge hub events.
 */
export function isReservedTopic(topic: string, hubUrl: string): boolean {
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
