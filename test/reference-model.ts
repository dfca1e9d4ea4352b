/**
 * A small reference model of the Mercure delivery decision, written from the specification text
 * (draft-07 "Topic Selectors" / "Subscribers", draft-08 "Matcher Types" / "Subscribers" /
 * "Authorization Details" / "Topic Matcher List") and deliberately independent of src/: it does not
 * import the hub's matchers, URI-template compiler or authorizer.
 *
 *   deliver(sub, update) = (some topic of the update matches some routing matcher)
 *                          AND (update is public OR some topic matches some `subscribe` grant)
 *
 * It only understands a small, generated language, and refuses (throws ModelOutOfScope) anything
 * outside it rather than guess:
 *
 * - draft-07 selectors: `*`; exact string equality; RFC 6570 templates built only from literals and
 *   the expressions `{name}` (simple string expansion), `{+name}` (reserved expansion) and
 *   `{?name}` (form-style query, one variable), each variable name used once. Matching is decided
 *   by construction: "the topic is the expansion of the template for some variable values".
 *   A string with an unclosed `{` or an empty `{}` is not a valid template: it only matches itself.
 * - draft-08 `exact`: byte equality; `*` is the wildcard whatever the matcher type.
 * - draft-08 `urlpattern`: `https://ex.com/…` or relative `/…` patterns whose path segments are
 *   literal words or `:name`, optionally ending with `/*`. Per the URL Pattern standard (for a
 *   pattern string that names protocol/host/path), protocol and hostname are literal, the port is
 *   the default one, `:name` is one non-empty path segment, a trailing `*` is any rest (also empty),
 *   and the unnamed search and hash components are wildcards. Topics are parsed as URLs against
 *   the hub URL, as draft-08 requires; a topic that is not a URL does not match.
 *
 * Where the specifications leave the answer open the model says 'maybe' and the tests accept
 * either outcome: a variable expanding to the empty string (`https://ex.com/books/` against
 * `https://ex.com/books/{id}`), a comma in a simple/query value (the expansion of a list value),
 * and lowercase percent-encoding in a simple/query value.
 */

export type Truth = 'yes' | 'no' | 'maybe';

export function or(a: Truth, b: Truth): Truth {
  if (a === 'yes' || b === 'yes') return 'yes';
  if (a === 'maybe' || b === 'maybe') return 'maybe';
  return 'no';
}

export function and(a: Truth, b: Truth): Truth {
  if (a === 'no' || b === 'no') return 'no';
  if (a === 'maybe' || b === 'maybe') return 'maybe';
  return 'yes';
}

function some<T>(items: readonly T[], f: (item: T) => Truth): Truth {
  let r: Truth = 'no';
  for (const item of items) {
    r = or(r, f(item));
    if (r === 'yes') return r;
  }
  return r;
}

/** The model was handed something outside the language it can decide: a bug in the test. */
export class ModelOutOfScope extends Error {}

export type ModelMatcher =
  /** A draft-07 topic selector. */
  | { type: 'selector'; value: string }
  /** Draft-08 matcher types. */
  | { type: 'exact'; value: string }
  | { type: 'urlpattern'; value: string };

export interface ModelGrants {
  /** Matchers the token grants the `subscribe` action on. */
  readonly subscribe: readonly ModelMatcher[];
}

export interface ModelSubscription {
  readonly version: 7 | 8;
  /** Routing: `topic=` selectors (draft-07) or `match…=` matchers (draft-08). */
  readonly matchers: readonly ModelMatcher[];
  /** `null` for an anonymous subscriber. */
  readonly grants: ModelGrants | null;
}

export interface ModelUpdate {
  /** Canonical topic first, then the alternates: all count alike. */
  readonly topics: readonly string[];
  readonly private: boolean;
}

export interface Verdict {
  readonly routed: Truth;
  /** Only meaningful for private updates. */
  readonly authorized: Truth;
  readonly deliver: Truth;
}

/** The delivery decision, with its two halves (for error messages). */
export function decide(sub: ModelSubscription, update: ModelUpdate, baseUrl: string): Verdict {
  // "The hub sends updates to the subscriber for topics matching the provided topic selectors."
  const routed = some(update.topics, (t) => some(sub.matchers, (m) => matches(m, t, baseUrl)));
  // Private: "at least one topic of the update (canonical or alternate) matches at least one topic
  // selector provided in mercure.subscribe" / "a token that grants the subscribe action on at least
  // one topic of the update". Anonymous subscribers never receive private updates.
  const authorized =
    sub.grants === null ? 'no' : some(update.topics, (t) => some(sub.grants!.subscribe, (m) => matches(m, t, baseUrl)));
  return { routed, authorized, deliver: update.private ? and(routed, authorized) : routed };
}

export function shouldDeliver(sub: ModelSubscription, update: ModelUpdate, baseUrl: string): Truth {
  return decide(sub, update, baseUrl).deliver;
}

export function matches(m: ModelMatcher, topic: string, baseUrl: string): Truth {
  // Draft-07 rule 1; draft-08: `*` is recognised before the matcher type is resolved.
  if (m.value === '*') return 'yes';
  switch (m.type) {
    case 'exact':
      return topic === m.value ? 'yes' : 'no';
    case 'selector':
      return matchesSelector(m.value, topic);
    case 'urlpattern':
      return matchesUrlPattern(m.value, topic, baseUrl);
  }
}

// -------------------------------------------------------------------------------------------
// Draft-07 topic selectors
// -------------------------------------------------------------------------------------------

type TemplatePart = { literal: string } | { op: '' | '+' | '?'; name: string };

/** Draft-07 "To determine if a string matches a selector". */
export function matchesSelector(selector: string, topic: string): Truth {
  if (selector === '*') return 'yes'; // rule 1
  if (selector === topic) return 'yes'; // rule 2
  const template = parseTemplate(selector);
  if (template === null) return 'no'; // rule 4: not a valid template (or one without expressions)
  return matchTemplate(template, topic); // rule 3
}

/**
 * Is `literal` made of RFC 6570 `literals`? Excluded: controls, space, `"`, `'`, `<`, `>`, `\`,
 * `^`, `` ` ``, `{`, `|`, `}`, and `%` not starting a pct-encoded triplet. Non-ASCII characters
 * (ucschar) are valid literals but expand pct-encoded, which makes matching against a raw IRI
 * debatable: they are outside the model.
 */
function literalValid(literal: string, template: string): boolean {
  for (let k = 0; k < literal.length; k++) {
    const c = literal.charCodeAt(k);
    if (c > 0x7e) throw new ModelOutOfScope(`non-ASCII template literal: ${JSON.stringify(template)}`);
    if (c <= 0x20 || '"\'<>\\^`{|}'.includes(literal[k]!)) return false;
    if (c === 0x25 && !/^%[0-9A-Fa-f]{2}/.test(literal.slice(k))) return false;
  }
  return true;
}

/**
 * The template's parts, or null when the string is not a valid RFC 6570 template or has no
 * expression at all (then only rule 2, equality, can match it).
 */
export function parseTemplate(s: string): TemplatePart[] | null {
  if (!s.includes('{') && !s.includes('}')) return null;
  const parts: TemplatePart[] = [];
  const names = new Set<string>();
  let i = 0;
  while (i < s.length) {
    const open = s.indexOf('{', i);
    const literal = s.slice(i, open < 0 ? s.length : open);
    if (!literalValid(literal, s)) return null; // e.g. a `}` or a space: not a template
    if (literal) parts.push({ literal });
    if (open < 0) break;
    const close = s.indexOf('}', open);
    const nextOpen = s.indexOf('{', open + 1);
    if (close < 0 || (nextOpen >= 0 && nextOpen < close)) return null; // unclosed expression
    const body = s.slice(open + 1, close);
    if (body === '') return null; // `{}`: an expression needs a variable
    const m = /^([+?]?)([a-z]+)$/.exec(body);
    if (!m) throw new ModelOutOfScope(`template expression outside the model: ${JSON.stringify(s)}`);
    // A repeated variable takes one value in both places; this model does not track bindings.
    if (names.has(m[2]!)) throw new ModelOutOfScope(`repeated template variable: ${JSON.stringify(s)}`);
    names.add(m[2]!);
    parts.push({ op: m[1] as '' | '+' | '?', name: m[2]! });
    i = close + 1;
  }
  return parts;
}

/** Whether the model can decide matches against this draft-07 selector. */
export function selectorInScope(selector: string): boolean {
  try {
    parseTemplate(selector);
    return true;
  } catch (err) {
    if (err instanceof ModelOutOfScope) return false;
    throw err;
  }
}

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
const RESERVED = /^[:/?#[\]@!$&'()*+,;=]$/;

/**
 * Can `v` be the expansion of one variable's value? Simple and query expansion pct-encode every
 * character outside `unreserved` (so a raw `/`, `?`, `&`, `=`, `:`… or a non-ASCII character can
 * never appear); reserved expansion (`{+x}`) also lets reserved characters and pct-encoded
 * triplets through. Anything else (`{`, `}`, space, `%` not starting a triplet…) never appears.
 */
export function valueTruth(v: string, reservedExpansion: boolean): Truth {
  if (v === '') return 'maybe'; // an empty (or undefined) value: spec does not say if that matches
  let t: Truth = 'yes';
  for (let k = 0; k < v.length; k++) {
    const c = v[k]!;
    if (c === '%') {
      const hex = v.slice(k + 1, k + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return 'no';
      // Expansion writes uppercase hex; whether `%2f` is accepted is left open.
      if (!reservedExpansion && /[a-f]/.test(hex)) t = and(t, 'maybe');
      k += 2;
    } else if (UNRESERVED.test(c)) {
      // always allowed
    } else if (reservedExpansion && RESERVED.test(c)) {
      // reserved expansion keeps reserved characters
    } else if (c === ',') {
      t = and(t, 'maybe'); // list / associative values are joined with `,`
    } else {
      return 'no';
    }
  }
  return t;
}

/** Is there an assignment of the variables whose expansion is exactly `topic`? (Tries every split.) */
export function matchTemplate(parts: readonly TemplatePart[], topic: string): Truth {
  const go = (i: number, pos: number): Truth => {
    if (i === parts.length) return pos === topic.length ? 'yes' : 'no';
    const part = parts[i]!;
    if ('literal' in part) return topic.startsWith(part.literal, pos) ? go(i + 1, pos + part.literal.length) : 'no';
    let result: Truth = 'no';
    let start = pos;
    if (part.op === '?') {
      // Undefined variable: the expression expands to nothing.
      result = or(result, and('maybe', go(i + 1, pos)));
      const head = `?${part.name}=`;
      if (!topic.startsWith(head, pos)) return result;
      start = pos + head.length;
    }
    for (let end = start; end <= topic.length; end++) {
      const v = valueTruth(topic.slice(start, end), part.op === '+');
      if (v === 'no') continue;
      result = or(result, and(v, go(i + 1, end)));
      if (result === 'yes') return result;
    }
    return result;
  };
  return go(0, 0);
}

// -------------------------------------------------------------------------------------------
// Draft-08 URL patterns
// -------------------------------------------------------------------------------------------

type PathPart = { literal: string } | { param: string } | { rest: true };

interface UrlPatternModel {
  protocol: string;
  hostname: string;
  port: string;
  path: PathPart[];
}

const PATTERN = /^(https:\/\/ex\.com)?((?:\/(?:[a-z0-9]+|:[a-z]+))+)(\/\*)?$/;

export function parseUrlPattern(pattern: string, baseUrl: string): UrlPatternModel {
  const m = PATTERN.exec(pattern);
  if (!m) throw new ModelOutOfScope(`URL pattern outside the model: ${JSON.stringify(pattern)}`);
  const path: PathPart[] = m[2]!
    .slice(1)
    .split('/')
    .map((seg) => (seg.startsWith(':') ? { param: seg.slice(1) } : { literal: seg }));
  if (m[3]) path.push({ rest: true });
  if (m[1]) return { protocol: 'https:', hostname: 'ex.com', port: '', path };
  // A relative pattern takes protocol, host and port from the hub URL.
  const base = new URL(baseUrl);
  return { protocol: base.protocol, hostname: base.hostname, port: base.port, path };
}

export function matchesUrlPattern(pattern: string, topic: string, baseUrl: string): Truth {
  const p = parseUrlPattern(pattern, baseUrl);
  let url: URL;
  try {
    url = new URL(topic, baseUrl);
  } catch {
    return 'no'; // "A topic that cannot be parsed as a URL reference … MUST [be treated] as not matching."
  }
  if (url.username !== '' || url.password !== '') throw new ModelOutOfScope(`topic with userinfo: ${topic}`);
  if (url.protocol !== p.protocol || url.hostname !== p.hostname || url.port !== p.port) return 'no';
  if (!url.pathname.startsWith('/')) return 'no';
  const segments = url.pathname.slice(1).split('/');
  for (let i = 0; i < p.path.length; i++) {
    const part = p.path[i]!;
    if ('rest' in part) return i < segments.length ? 'yes' : 'no'; // `/*`: the `/` then anything
    if (i >= segments.length) return 'no';
    if ('literal' in part && segments[i] !== part.literal) return 'no';
    if ('param' in part && segments[i] === '') return 'no'; // `:name` is one non-empty segment
  }
  return segments.length === p.path.length ? 'yes' : 'no';
}

// -------------------------------------------------------------------------------------------
// Token claims → subscribe grants
// -------------------------------------------------------------------------------------------

export const MERCURE_DETAIL = 'https://mercure.rocks/authorization-detail';

/**
 * What a token's claims grant the `subscribe` action on. Draft-07: `mercure.subscribe` (topic
 * selectors). Draft-08: the `topics` of every Mercure authorization detail whose `actions`
 * include `subscribe` (`match_type` defaults to `exact`); details of other types grant nothing.
 */
export function grantsFromClaims(version: 7 | 8, claims: Record<string, unknown>): ModelGrants {
  if (version === 7) {
    const mercure = claims.mercure as { subscribe?: unknown } | undefined;
    const list = Array.isArray(mercure?.subscribe) ? (mercure.subscribe as string[]) : [];
    return { subscribe: list.map((value) => ({ type: 'selector', value })) };
  }
  const details = (claims.authorization_details ?? []) as Array<{
    type: string;
    actions: string[];
    topics: Array<{ match: string; match_type?: 'exact' | 'urlpattern' }>;
  }>;
  return {
    subscribe: details
      .filter((d) => d.type === MERCURE_DETAIL && d.actions.includes('subscribe'))
      .flatMap((d) => d.topics.map((t): ModelMatcher => ({ type: t.match_type ?? 'exact', value: t.match }))),
  };
}
