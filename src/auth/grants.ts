/**
 * What a verified token permits: its claims (draft-08 `authorization_details` or the draft-07
 * `mercure` claim) parsed into topic matchers, and the publish/subscribe checks on them.
 * Claim errors are returned as messages; the authorizer turns them into `invalid_token`.
 */
import type { JWTPayload } from 'jose';
import { isMatcherType, MatcherError, selectorMatcher, typedMatcher, type Matcher } from '../core/topic-matcher.js';
import { show } from './messages.js';

export type Role = 'publisher' | 'subscriber';

/** What a verified token permits. Immutable; the same object may be shared by many requests. */
export interface Grants {
  /** 8 = RFC 9068 access token (`typ: at+jwt`); 7 = legacy token with the `mercure` claim. */
  readonly version: 7 | 8;
  /** Draft-07: `mercure.publish` is an array (possibly empty). Draft-08: some detail grants `publish`. */
  readonly canPublish: boolean;
  readonly publish: readonly Matcher[];
  readonly subscribe: readonly Matcher[];
  /** From `exp`, in ms since the epoch. */
  readonly expiresAt: number | undefined;
  readonly subject: string | undefined;
  readonly issuer: string | undefined;
  /**
   * The payload attached to a subscription whose matcher string is `match`. Draft-08: the
   * payload of the first `subscribe` detail carrying a payload one of whose topic matchers
   * matches `match` taken as a topic (`*` matches everything). Draft-07: `mercure.payload`.
   */
  payloadFor(match: string): unknown;
}

export const MERCURE_DETAIL_TYPE = 'https://mercure.rocks/authorization-detail';
/** Draft-07 namespaced fallback claim (for identity providers that require namespaced claims). */
export const NAMESPACED_CLAIM = 'https://mercure.rocks/';
/** Most selectors in `mercure.publish` / `mercure.subscribe` (reference hub constant). */
export const MAX_LEGACY_SELECTORS = 1000;
/** Most authorization details per token, and topic matchers per detail. */
export const MAX_DETAILS = 100;
export const MAX_DETAIL_TOPICS = 100;

interface PayloadRule {
  readonly matchers: readonly Matcher[];
  readonly payload: unknown;
}

class TokenGrants implements Grants {
  readonly #legacyPayload: unknown;
  readonly #rules: readonly PayloadRule[];

  constructor(
    readonly version: 7 | 8,
    readonly canPublish: boolean,
    readonly publish: readonly Matcher[],
    readonly subscribe: readonly Matcher[],
    readonly expiresAt: number | undefined,
    readonly subject: string | undefined,
    readonly issuer: string | undefined,
    payload: { legacy: unknown } | { rules: readonly PayloadRule[] },
  ) {
    Object.freeze(publish);
    Object.freeze(subscribe);
    // Grants are cached and shared between requests: nothing in them may be mutated.
    this.#legacyPayload = 'legacy' in payload ? deepFreeze(payload.legacy) : undefined;
    this.#rules = 'rules' in payload ? payload.rules.map((r) => Object.freeze({ ...r, payload: deepFreeze(r.payload) })) : [];
    Object.freeze(this);
  }

  payloadFor(match: string): unknown {
    if (this.version === 7) return this.#legacyPayload;
    for (const rule of this.#rules) {
      if (rule.matchers.some((m) => m.matches(match))) return rule.payload;
    }
    return undefined;
  }
}

/** Every topic is matched by some publish matcher. False for an empty topic list. */
export function canPublish(grants: Grants, topics: readonly string[]): boolean {
  if (!grants.canPublish || topics.length === 0) return false;
  const matchers = grants.publish;
  return topics.every((t) => matchers.some((m) => m.matches(t)));
}

/** Some topic is matched by some subscribe matcher. Anonymous (`null`) never is. */
export function canSubscribe(grants: Grants | null, topics: readonly string[]): boolean {
  if (grants === null) return false;
  const matchers = grants.subscribe;
  if (matchers.length === 0) return false;
  return topics.some((t) => matchers.some((m) => m.matches(t)));
}

// ---------------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------------

/**
 * Draft-08 grants of a verified access token, or why it is refused. `resource` is the required
 * `aud`; `baseUrl` resolves relative URL patterns.
 */
export function accessTokenGrants(
  payload: JWTPayload,
  resource: string,
  baseUrl: string,
  expiresAt: number | undefined,
  subject: string | undefined,
  issuer: string | undefined,
): Grants | string {
  if (expiresAt === undefined) return 'exp claim missing';
  const aud = payload.aud;
  if (aud === undefined) return 'aud claim missing';
  const auds = typeof aud === 'string' ? [aud] : aud;
  if (!Array.isArray(auds) || !auds.every((a) => typeof a === 'string')) {
    return 'aud claim must be a string or an array of strings';
  }
  if (!auds.includes(resource)) return `aud does not include ${resource}`;

  const details = payload.authorization_details;
  const publish: Matcher[] = [];
  const subscribe: Matcher[] = [];
  const rules: PayloadRule[] = [];
  let publishes = false;
  if (details !== undefined) {
    if (!Array.isArray(details)) return 'authorization_details must be an array';
    if (details.length > MAX_DETAILS) return `more than ${MAX_DETAILS} authorization details`;
    for (let i = 0; i < details.length; i++) {
      const parsed = parseDetail(details[i], `authorization_details[${i}]`, baseUrl);
      if (typeof parsed === 'string') return parsed;
      if (parsed === null) continue;
      if (parsed.publish) {
        publishes = true;
        publish.push(...parsed.matchers);
      }
      if (parsed.subscribe) {
        subscribe.push(...parsed.matchers);
        if (parsed.payload !== undefined) rules.push({ matchers: parsed.matchers, payload: parsed.payload });
      }
    }
  }
  return new TokenGrants(8, publishes, unique(publish), unique(subscribe), expiresAt, subject, issuer, { rules });
}

export function legacyGrants(
  payload: JWTPayload,
  expiresAt: number | undefined,
  subject: string | undefined,
  issuer: string | undefined,
): Grants | string {
  let claim = payload.mercure;
  let name = 'mercure';
  if (claim === undefined || claim === null) {
    claim = payload[NAMESPACED_CLAIM];
    name = NAMESPACED_CLAIM;
  }
  if (claim === undefined || claim === null) {
    return new TokenGrants(7, false, [], [], expiresAt, subject, issuer, { legacy: undefined });
  }
  if (!isObject(claim)) return `${name} claim must be an object`;
  const publish = selectors(claim.publish, `${name}.publish`);
  if (typeof publish === 'string') return publish;
  const subscribe = selectors(claim.subscribe, `${name}.subscribe`);
  if (typeof subscribe === 'string') return subscribe;
  return new TokenGrants(7, publish !== null, publish ?? [], subscribe ?? [], expiresAt, subject, issuer, {
    legacy: claim.payload,
  });
}

function selectors(value: unknown, name: string): Matcher[] | null | string {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value)) return `${name} must be an array`;
  if (value.length > MAX_LEGACY_SELECTORS) return `${name} has more than ${MAX_LEGACY_SELECTORS} entries`;
  const out: Matcher[] = [];
  for (const s of value) {
    if (typeof s !== 'string') return `${name} entries must be strings`;
    out.push(selectorMatcher(s));
  }
  return unique(out);
}

interface ParsedDetail {
  readonly publish: boolean;
  readonly subscribe: boolean;
  readonly matchers: readonly Matcher[];
  readonly payload: unknown;
}

/** A Mercure detail, `null` for a detail of another type, or an error message. */
function parseDetail(detail: unknown, where: string, baseUrl: string): ParsedDetail | null | string {
  if (!isObject(detail)) return `${where} is not an object`;
  if (typeof detail.type !== 'string') return `${where}.type must be a string`;
  if (detail.type !== MERCURE_DETAIL_TYPE) return null;

  const actions = detail.actions;
  if (!Array.isArray(actions) || actions.length === 0) return `${where}.actions must be a non-empty array`;
  let publish = false;
  let subscribe = false;
  for (const action of actions) {
    if (typeof action !== 'string') return `${where}.actions entries must be strings`;
    // Unknown actions grant nothing and do not invalidate the token.
    if (action === 'publish') publish = true;
    else if (action === 'subscribe') subscribe = true;
  }

  const topics = detail.topics;
  if (!Array.isArray(topics) || topics.length === 0) return `${where}.topics must be a non-empty array`;
  if (topics.length > MAX_DETAIL_TOPICS) return `${where}.topics has more than ${MAX_DETAIL_TOPICS} entries`;
  const matchers: Matcher[] = [];
  for (let j = 0; j < topics.length; j++) {
    const topic: unknown = topics[j];
    const at = `${where}.topics[${j}]`;
    if (!isObject(topic)) return `${at} is not an object`;
    if (typeof topic.match !== 'string') return `${at}.match must be a string`;
    const type = topic.match_type === undefined ? 'exact' : topic.match_type;
    if (typeof type !== 'string' || !isMatcherType(type)) return `${at}.match_type ${show(type)} is not supported`;
    try {
      matchers.push(typedMatcher(type, topic.match, baseUrl));
    } catch (err) {
      if (err instanceof MatcherError) return `${at}.match is invalid: ${err.message}`;
      throw err;
    }
  }

  const payload = detail.payload;
  if (payload !== undefined && !isObject(payload)) return `${where}.payload must be an object`;
  return { publish, subscribe, matchers, payload };
}

function unique(matchers: Matcher[]): Matcher[] {
  if (matchers.length < 2) return matchers;
  const seen = new Set<string>();
  return matchers.filter((m) => {
    const k = `${m.kind}\u0000${m.source}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
