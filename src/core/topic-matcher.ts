import { URLPattern as URLPatternPolyfill } from 'urlpattern-polyfill/urlpattern';
import { compileUriTemplate } from './uri-template.js';
import { LruCache } from '../util/lru-cache.js';

/**
 * How a matcher string is interpreted.
 * - `wildcard`: the reserved `*`, matches every topic (both protocol versions).
 * - `selector`: a draft-07 topic selector: equal string, else RFC 6570 URI template.
 * - `exact`: draft-08 byte-for-byte comparison.
 * - `urlpattern`: draft-08 WHATWG URL Pattern, relative values resolved against the hub URL.
 */
export type MatcherKind = 'wildcard' | 'selector' | 'exact' | 'urlpattern';

/** Draft-08 matcher type names, as they appear in `match_<type>` and `match_type`. */
export type MatcherType = 'exact' | 'urlpattern';
export const MATCHER_TYPES: readonly MatcherType[] = ['exact', 'urlpattern'];

export interface Matcher {
  readonly kind: MatcherKind;
  /** The string the client gave. */
  readonly source: string;
  /**
   * A literal prefix that every matching topic starts with (`''` when none can be promised).
   * Indexes use it to skip matchers that cannot match without evaluating them.
   */
  readonly prefix: string;
  /** True when only a topic equal to `source` can match: indexable by a hash map. */
  readonly literal: boolean;
  matches(topic: string): boolean;
}

/** Longest matcher accepted, in bytes (the reference hub's draft-08 limit). */
export const MAX_PATTERN_LENGTH = 4096;

export class MatcherError extends Error {}

type URLPatternLike = {
  test(input: string, base?: string): boolean;
  exec(input: string, base?: string): { pathname: { input: string } } | null;
};
type URLPatternCtor = new (input: string, base?: string) => URLPatternLike;
const NativeURLPattern = (globalThis as { URLPattern?: URLPatternCtor }).URLPattern;
const URLPatternImpl: URLPatternCtor =
  NativeURLPattern ?? (URLPatternPolyfill as unknown as URLPatternCtor);

const WILDCARD: Matcher = Object.freeze({
  kind: 'wildcard' as const,
  source: '*',
  prefix: '',
  literal: false,
  matches: () => true,
});

class ExactMatcher implements Matcher {
  readonly prefix: string;
  readonly literal = true;
  constructor(
    readonly kind: 'exact' | 'selector',
    readonly source: string,
  ) {
    this.prefix = source;
  }
  matches(topic: string): boolean {
    return topic === this.source;
  }
}

// Topic → result caches bound the cost of evaluating the same regex against hot topics.
const RESULT_CACHE_SIZE = 1024;

class TemplateMatcher implements Matcher {
  readonly kind = 'selector' as const;
  readonly literal = false;
  readonly prefix: string;
  private readonly results = new LruCache<string, boolean>(RESULT_CACHE_SIZE);
  constructor(
    readonly source: string,
    private readonly regexp: RegExp,
  ) {
    const brace = source.indexOf('{');
    this.prefix = brace < 0 ? source : source.slice(0, brace);
  }
  matches(topic: string): boolean {
    // Selectors also match their own text, so a template can be compared with a template.
    if (topic === this.source) return true;
    if (!topic.startsWith(this.prefix)) return false;
    let r = this.results.get(topic);
    if (r === undefined) {
      r = this.regexp.test(topic);
      this.results.set(topic, r);
    }
    return r;
  }
}

class UrlPatternMatcher implements Matcher {
  readonly kind = 'urlpattern' as const;
  readonly literal = false;
  readonly prefix = '';
  private readonly results = new LruCache<string, boolean>(RESULT_CACHE_SIZE);
  constructor(
    readonly source: string,
    private readonly pattern: URLPatternLike,
    private readonly baseUrl: string,
  ) {}
  matches(topic: string): boolean {
    let r = this.results.get(topic);
    if (r === undefined) {
      r = false;
      try {
        // A topic that is not a URL reference against the hub URL simply does not match.
        const url = new URL(topic, this.baseUrl);
        // urlpattern-polyfill re-parses the path as a URL, so `//x/users/42` is read as host `x`
        // plus `/users/42` and over-matches: refuse any match made on another path than the URL's.
        r = this.pattern.test(url.href) && this.pattern.exec(url.href)?.pathname.input === url.pathname;
      } catch {
        r = false;
      }
      this.results.set(topic, r);
    }
    return r;
  }
}

// A custom regexp group whose body is itself quantified, followed by a quantifier, is the shape
// of catastrophic backtracking ((a+)+, (a|a)*). JS has no linear-time engine, so such groups are
// refused up front: the spec lets a hub bound evaluation cost by rejecting the pattern.
const NESTED_QUANTIFIER = /\([^()]*[+*}][^()]*\)\s*[+*{?]|\\[1-9]|\(\?<?[=!]/;

function checkValue(source: string): void {
  if (Buffer.byteLength(source) > MAX_PATTERN_LENGTH) {
    throw new MatcherError(`matcher longer than ${MAX_PATTERN_LENGTH} bytes`);
  }
  if (hasForbiddenCharacter(source)) {
    throw new MatcherError('matcher contains a control or format character');
  }
}

/** C0, DEL, C1 and Unicode format (Cf) characters: forbidden in draft-08 topics and matchers. */
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\p{Cf}]/u;
export function hasForbiddenCharacter(value: string): boolean {
  return FORBIDDEN.test(value);
}

const selectorCache = new LruCache<string, Matcher>(100_000);
const templateCache = new LruCache<string, RegExp | null>(10_000);

/**
 * A copy that owns its characters. Selectors are sliced from the request head, and a slice keeps
 * the whole head alive for as long as the matcher lives (the whole connection, or in the cache).
 */
function flat(s: string): string {
  return s.length > 0 ? Buffer.from(s, 'utf8').toString('utf8') : s;
}

/** A draft-07 topic selector (`*`, a plain string, or an RFC 6570 URI template). Never fails. */
export function selectorMatcher(source: string): Matcher {
  if (source === '*') return WILDCARD;
  let m = selectorCache.get(source);
  if (m) return m;
  source = flat(source);
  let regexp: RegExp | null = null;
  if (source.includes('{')) {
    regexp = templateCache.get(source) ?? null;
    if (!templateCache.has(source)) {
      regexp = compileUriTemplate(source);
      templateCache.set(source, regexp);
    }
  }
  // A string that is not a valid template only matches itself, as the reference hub does.
  m = regexp ? new TemplateMatcher(source, regexp) : new ExactMatcher('selector', source);
  selectorCache.set(source, m);
  return m;
}

const matcherCache = new LruCache<string, Matcher>(100_000);

/**
 * A draft-08 topic matcher. Throws MatcherError for a value that is invalid for its type
 * (control characters, too long, malformed or unsafe URL pattern).
 */
export function typedMatcher(type: MatcherType, source: string, baseUrl: string): Matcher {
  if (source === '*') return WILDCARD;
  const key = `${type}\u0000${baseUrl}\u0000${source}`;
  const cached = matcherCache.get(key);
  if (cached) return cached;
  checkValue(source);
  source = flat(source);
  let m: Matcher;
  if (type === 'exact') {
    m = new ExactMatcher('exact', source);
  } else {
    if (NESTED_QUANTIFIER.test(source)) {
      throw new MatcherError('URL pattern has a regular expression group that could backtrack catastrophically');
    }
    let pattern: URLPatternLike;
    try {
      pattern = new URLPatternImpl(source, baseUrl);
    } catch (err) {
      throw new MatcherError(`invalid URL pattern: ${(err as Error).message}`);
    }
    m = new UrlPatternMatcher(source, pattern, baseUrl);
  }
  matcherCache.set(`${type}\u0000${baseUrl}\u0000${source}`, m);
  return m;
}

export function isMatcherType(value: string): value is MatcherType {
  return value === 'exact' || value === 'urlpattern';
}

/** The draft-08 type name under which a matcher is reported (subscription events, API paths). */
export function matcherTypeName(m: Matcher): MatcherType {
  return m.kind === 'urlpattern' ? 'urlpattern' : 'exact';
}
