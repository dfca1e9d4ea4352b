/**
 * RFC 6570 URI Template → RegExp compiler (levels 1–4), used to decide whether a topic matches a
 * draft-07 topic selector.
 *
 * The question answered is "could some assignment of values to the variables expand to exactly
 * this string". Who receives private updates depends on the answer, so the regex must not accept
 * what no expansion can produce, in particular no `/`, `?`, `#`... where the operator encodes them.
 *
 * Selectors come from subscribers, so both the template and the topic may be hostile. JavaScript
 * has no linear-time regex engine: the regex is built so that, at every boundary between two
 * pieces, the next characters decide which piece they belong to (or a rewrite with the same
 * language makes it so, or the backtracking it can cause is provably bounded). A valid template
 * for which none of that holds (e.g. `{a}{/b}{c}`, where the variables can share the same text in
 * many ways) is refused like an invalid one: the caller then treats it as a plain string.
 *
 * Decisions:
 * - Undefined variables are omitted and an empty string expands to nothing (RFC 6570 §3.2.1), so
 *   `{id}` matches the empty string and `/books/{id}` matches `/books/`.
 * - Values are Unicode strings; characters outside the operator's allowed set are percent-encoded
 *   (UTF-8). Any `%XX` triplet is accepted, in either hex case, without checking that the octets
 *   form valid UTF-8: the triplets carry no structure, whatever they decode to. Raw non-ASCII
 *   characters are never produced by an expression, so `{id}` does not match `é`.
 * - A prefix `{var:n}` counts characters: a well-formed UTF-8 triplet sequence counts as one. With
 *   `+`/`#`, a triplet passed through from the value also counts as one (strictly, three).
 * - Literals outside expressions match as written (topics are IRIs; this is also what lets the
 *   matcher filter on the literal prefix). A pct-encoded literal matches that exact triplet.
 * - Each occurrence of a variable is matched on its own: `{a}/{a}` also matches `x/y`.
 * - Otherwise exact, but for a few loosenings inside one expression, none of which lets an
 *   expression produce a character, separator or (without an exploded variable) parameter name
 *   it cannot write: several prefixed variables with different lengths, or several prefixed
 *   variables in `+`, `#` and `.`, are bounded per position or in total rather than per
 *   variable; an exploded variable among others, or a repeated name, loosens which variable
 *   produced which piece (and, for `;`, `?`, `&`, the order of the pairs).
 */
import { joinVarLists, parse, type Expression, type Part, type VarSpec } from './uri-template-parser.js';

/** What may come next, for the "can the next characters be claimed by two pieces" test. */
interface Tokens {
  readonly chars: ReadonlySet<string>;
  /** Multi-character strings (e.g. `&name=`): only a shared prefix is a conflict. */
  readonly strs: readonly string[];
}

interface Fragment {
  readonly re: string;
  /** Tokens a non-empty match can start with. */
  readonly first: Tokens;
  /** Tokens that can extend a complete match (every fragment is nullable, so ⊇ first). */
  readonly cont: Tokens;
  /** Every character a match can contain. */
  readonly chars: ReadonlySet<string>;
  /** Characters that occur at most once in a match. */
  readonly once: ReadonlySet<string>;
  readonly maxLen: number;
  /** The language is exactly `atom*` over this set (`%` standing for any triplet). */
  readonly star: ReadonlySet<string> | null;
  /** The language is exactly `char{0,n}` over this set, `char` counting a UTF-8 character. */
  readonly bounded: { readonly set: ReadonlySet<string>; readonly n: number } | null;
  /** Characters any non-empty match can be extended with, any number of times. */
  readonly tail: ReadonlySet<string>;
}

type Item = { readonly literal: string } | Fragment;

const HEX = '[0-9A-Fa-f]';
const PCT = `%${HEX}{2}`;
const CONT_OCTET = `%[89ABab]${HEX}`;
// The lead octet fixes how many continuation octets follow, so a run of triplets splits into
// characters in exactly one way: counting them cannot backtrack.
const UTF8_CHAR =
  `%(?:[0-7]${HEX}|[Cc][2-9A-Fa-f]${CONT_OCTET}|[Dd]${HEX}${CONT_OCTET}` +
  `|[Ee]${HEX}(?:${CONT_OCTET}){2}|[Ff][0-4](?:${CONT_OCTET}){3})`;
/** Longest pct-encoded character: four triplets. */
const MAX_CHAR_LEN = 12;

const UNRESERVED = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~';
const RESERVED = ":/?#[]@!$&'()*+,;=";

const set = (chars: string): ReadonlySet<string> => new Set(chars);
const U = set(UNRESERVED + '%');
const U_LIST = set(UNRESERVED + '%,');
const U_ASSOC = set(UNRESERVED + '%=');
const U_ANY = set(UNRESERVED + '%,=');
const R = set(UNRESERVED + '%' + RESERVED);
const NONE: ReadonlySet<string> = new Set();

// Bounds on the work a single test may do: each tolerated ambiguity multiplies the number of
// times the rest of the regex can be tried, see analyse().
const COST_BUDGET = 256;
const MAX_BOUNDED_ENDS = 64;
const MAX_TEMPERED_LITERAL = 64;
const MAX_EXACT_SLOTS = 64;
const MAX_COUNTED_PIECES = 4;

/**
 * Returns an anchored RegExp matching exactly the strings the template can expand to, or null when
 * the template is not a valid RFC 6570 template (or is one that cannot be matched without risking
 * catastrophic backtracking, see above).
 */
export function compileUriTemplate(template: string): RegExp | null {
  const parts = parse(template);
  if (!parts) return null;
  const items = merge(build(joinVarLists(parts)));
  if (!analyse(items)) return null;
  let source = '^';
  for (const item of items) source += 're' in item ? item.re : escapeLiteral(item.literal);
  return new RegExp(source + '$');
}

// ---------------------------------------------------------------------------------------------
// Regex building blocks

// Only what the regex syntax needs is escaped, so that the generated source stays readable.
function escapeChar(code: number, inClass = false): string {
  const c = String.fromCharCode(code);
  if (code < 0x20 || code >= 0x7f) return `\\u${code.toString(16).padStart(4, '0')}`;
  if ((inClass ? /[\\\]^-]/ : /[\\^$.|?*+()[\]{}\/]/).test(c)) return `\\${c}`;
  return c;
}

function escapeLiteral(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) out += escapeChar(text.charCodeAt(i));
  return out;
}

function charClass(chars: ReadonlySet<string>): string {
  const codes = [...chars]
    .filter((c) => c !== '%')
    .map((c) => c.charCodeAt(0))
    .sort((a, b) => a - b);
  let out = '';
  for (let i = 0; i < codes.length; ) {
    let j = i;
    while (j + 1 < codes.length && codes[j + 1] === (codes[j] as number) + 1) j++;
    if (j - i >= 2) out += `${escapeChar(codes[i] as number, true)}-${escapeChar(codes[j] as number, true)}`;
    else for (let k = i; k <= j; k++) out += escapeChar(codes[k] as number, true);
    i = j + 1;
  }
  return `[${out}]`;
}

/** One unit of an unbounded run: an allowed character or any triplet (`%` is never allowed bare). */
function atom(chars: ReadonlySet<string>): string {
  return chars.has('%') ? `(?:${charClass(chars)}|${PCT})` : charClass(chars);
}

function starRe(chars: ReadonlySet<string>): string {
  return `${atom(chars)}*`;
}

/**
 * One character of a prefix-limited value. The negative lookahead keeps the two triplet forms
 * exclusive, so a bounded repetition of it has a single way to split any input.
 */
function charAtom(chars: ReadonlySet<string>): string {
  return `(?:${charClass(chars)}|${UTF8_CHAR}|(?!${UTF8_CHAR})${PCT})`;
}

function boundedRe(chars: ReadonlySet<string>, n: number, min = 0): string {
  return `${charAtom(chars)}{${min},${n}}`;
}

function union<T>(...sets: ReadonlySet<T>[]): Set<T> {
  const out = new Set<T>();
  for (const s of sets) for (const x of s) out.add(x);
  return out;
}

function intersect<T>(a: ReadonlySet<T>, b: ReadonlySet<T>): Set<T> {
  const out = new Set<T>();
  for (const x of a) if (b.has(x)) out.add(x);
  return out;
}

function subset<T>(a: ReadonlySet<T>, b: ReadonlySet<T>): boolean {
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

function tokens(chars: Iterable<string>, strs: Iterable<string> = []): Tokens {
  const c = new Set(chars);
  const s: string[] = [];
  for (const str of strs) {
    if (str.length === 1) c.add(str);
    else if (str.length > 1) s.push(str);
  }
  return { chars: c, strs: s };
}

function tokenUnion(a: Tokens, b: Tokens): Tokens {
  return tokens(union(a.chars, b.chars), [...a.strs, ...b.strs]);
}

function overlap(a: Tokens, b: Tokens): boolean {
  for (const c of a.chars) if (b.chars.has(c)) return true;
  for (const s of a.strs) {
    if (b.chars.has(s[0] as string)) return true;
    for (const t of b.strs) if (s.startsWith(t) || t.startsWith(s)) return true;
  }
  for (const t of b.strs) if (a.chars.has(t[0] as string)) return true;
  return false;
}

const EMPTY_TOKENS = tokens([]);

function fragment(f: Partial<Fragment> & Pick<Fragment, 're' | 'first' | 'cont' | 'chars' | 'maxLen'>): Fragment {
  // Every fragment can match nothing, so whatever can start it can also follow an (empty) match.
  return { once: NONE, star: null, bounded: null, tail: NONE, ...f, cont: tokenUnion(f.cont, f.first) };
}

function starFragment(chars: ReadonlySet<string>): Fragment {
  const t = tokens(chars);
  return fragment({ re: starRe(chars), first: t, cont: t, chars, maxLen: Infinity, star: chars, tail: chars });
}

function boundedFragment(chars: ReadonlySet<string>, n: number): Fragment {
  const t = tokens(chars);
  return fragment({ re: boundedRe(chars, n), first: t, cont: t, chars, maxLen: n * MAX_CHAR_LEN, bounded: { set: chars, n } });
}

// ---------------------------------------------------------------------------------------------
// Expressions (RFC 6570 §3.2 and appendix A)

function build(parts: Part[]): Item[] {
  return parts.map((p) => ('literal' in p ? p : expressionFragment(p.expression)));
}

function expressionFragment({ op, vars }: Expression): Fragment {
  switch (op) {
    case '':
      return simpleFragment(vars);
    case '+':
      return reservedBody(vars);
    case '#': {
      const body = reservedBody(vars);
      return fragment({
        re: `(?:#${body.re})?`,
        first: tokens('#'),
        cont: tokens(union(body.chars, set('#'))),
        chars: body.chars,
        maxLen: 1 + body.maxLen,
        tail: body.tail,
      });
    }
    case '.':
      return labelFragment(vars);
    case '/':
      return pathFragment(vars);
    default:
      return namedFragment(op, vars);
  }
}

const isPlain = (v: VarSpec): boolean => v.prefix === null && !v.explode;
const prefixOf = (v: VarSpec): number => v.prefix ?? 0;
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/**
 * `{x,y}`: values joined by `,`, which unreserved-only values never contain. A list value is
 * joined by `,` too, so one unlimited variable already yields every string of units and commas.
 */
function simpleFragment(vars: readonly VarSpec[]): Fragment {
  const explode = vars.some((v) => v.explode);
  if (!explode && vars.some(isPlain)) return starFragment(U_LIST);
  if (!explode) {
    if (vars.length === 1) return boundedFragment(U, prefixOf(vars[0] as VarSpec));
    const re = pieces(vars, '', ',', (window) => boundedRe(U, Math.max(...window.map(prefixOf))));
    const t = tokens(U_LIST);
    return fragment({ re, first: t, cont: t, chars: U_LIST, maxLen: sum(vars.map((v) => 1 + prefixOf(v) * MAX_CHAR_LEN)) });
  }
  const unit = starRe(U);
  const pair = `${unit}=${unit}`;
  // An exploded associative array gives `k=v` pieces, a list plain pieces; alone, one kind only.
  const re =
    vars.length === 1
      ? `${unit}(?:=${unit}(?:,${pair})*|(?:,${unit})*)`
      : `${unit}(?:=${unit})?(?:,${unit}(?:=${unit})?)*`;
  const t = tokens(U_ANY);
  return fragment({ re, first: t, cont: t, chars: U_ANY, maxLen: Infinity, tail: U });
}

/** `+` (and the body of `#`): reserved characters pass through, so `,` no longer delimits values. */
function reservedBody(vars: readonly VarSpec[]): Fragment {
  if (vars.some((v) => v.prefix === null)) return starFragment(R);
  // Several prefixed variables: total length only (each value may itself contain commas).
  return boundedFragment(R, sum(vars.map(prefixOf)) + vars.length - 1);
}

/** `.`: the separator is itself unreserved, so the body is one run of units. */
function labelFragment(vars: readonly VarSpec[]): Fragment {
  const explode = vars.some((v) => v.explode);
  const unlimited = explode || vars.some(isPlain);
  const bodyChars = explode ? (vars.some(isPlain) ? U_ANY : U_ASSOC) : U_LIST;
  const chars = unlimited ? bodyChars : U;
  const n = sum(vars.map(prefixOf)) + vars.length - 1;
  let body = unlimited ? starRe(bodyChars) : boundedRe(U, n);
  if (explode && vars.length === 1) {
    // Alone, an exploded map gives `k=v.k=v`: keys and values may contain dots but not `=`, so
    // two `=` always have a dot between them. Each run is delimited, the loop cannot backtrack.
    const any = starRe(U);
    const noDot = starRe(set(UNRESERVED.replace('.', '') + '%'));
    body = `${any}(?:=${noDot}(?:\\.${any}=${noDot})*(?:\\.${any})?)?`;
  }
  return fragment({
    re: `(?:\\.${body})?`,
    first: tokens('.'),
    cont: tokens(chars),
    chars,
    maxLen: unlimited ? Infinity : 1 + n * MAX_CHAR_LEN,
    tail: unlimited ? (explode ? U : bodyChars) : NONE,
  });
}

/** `/`: one segment per variable, any number for an exploded one; `/` never occurs in a value. */
function pathFragment(vars: readonly VarSpec[]): Fragment {
  const explode = vars.some((v) => v.explode);
  const unit = starRe(U);
  const hasPlain = vars.some(isPlain);
  let re: string;
  let chars: Set<string>;
  let maxLen = Infinity;
  let tail: ReadonlySet<string> = NONE;
  if (explode && vars.length === 1) {
    // Alone, an exploded value is a list (plain segments) or a map (`k=v` segments), not both.
    re = `(?:\\/${unit}(?:=${unit}(?:\\/${unit}=${unit})*|(?:\\/${unit})*))?`;
    chars = union(U_ASSOC, set('/'));
    tail = U;
  } else if (explode) {
    const segment = hasPlain ? `${unit}(?:=${unit}|(?:,${unit})+)?` : `${unit}(?:=${unit})?`;
    re = `(?:\\/${segment})*`;
    chars = union(hasPlain ? U_ANY : U_ASSOC, set('/'));
    if (!vars.some((v) => v.prefix !== null)) tail = U;
  } else if (vars.every(isPlain)) {
    re = `(?:\\/${starRe(U_LIST)}){0,${vars.length}}`;
    chars = union(U_LIST, set('/'));
    tail = U_LIST;
  } else {
    const segment = (window: readonly VarSpec[]): string =>
      window.some(isPlain) ? starRe(U_LIST) : boundedRe(U, Math.max(...window.map(prefixOf)));
    re = `(?:${pieces(vars, '\\/', '\\/', segment)})?`;
    chars = union(hasPlain ? U_LIST : U, set('/'));
    if (!hasPlain) maxLen = sum(vars.map((v) => 1 + prefixOf(v) * MAX_CHAR_LEN));
  }
  return fragment({
    re,
    first: tokens('/'),
    cont: tokens(chars),
    chars,
    once: vars.length === 1 && !explode ? set('/') : NONE,
    maxLen,
    tail,
  });
}

/** `;`, `?` and `&`: `name=value` pairs. An exploded variable may be a map: then any name goes. */
function namedFragment(op: ';' | '?' | '&', vars: readonly VarSpec[]): Fragment {
  const sep = op === '?' ? '&' : op;
  const semi = op === ';';
  const names = vars.map((v) => v.name);
  const explode = vars.some((v) => v.explode);
  const distinct = !explode && new Set(names).size === names.length && names.length <= MAX_EXACT_SLOTS;
  const more = explode || vars.length > 1;
  // Only a non-exploded list joins with `,`; `;` writes `name` alone for an empty value.
  const valueChars = explode && vars.length === 1 ? U : U_LIST;
  const value = (v: VarSpec | null): string => {
    if (v?.prefix != null) return semi ? `(?:=${boundedRe(U, v.prefix, 1)})?` : `=${boundedRe(U, v.prefix)}`;
    return semi ? `(?:=${atom(valueChars)}+)?` : `=${starRe(valueChars)}`;
  };
  const chars = union(valueChars, set(`=${op}${more ? sep : ''}`));
  let re: string;
  let first: Tokens;
  let cont: Tokens;
  if (distinct) {
    const items = vars.map((v) => escapeLiteral(v.name) + value(v));
    const key = (n: string): string => (semi ? `${sep}${n}` : `${sep}${n}=`);
    if (op === '?') {
      // The first pair follows the `?`, the others a `&`; lookbehind tells the two apart, and
      // the final one rejects a `?` that no pair follows.
      re = `(?:\\?${items.map((i) => `(?:(?:(?<=\\?)|(?<!\\?)&)${i})?`).join('')}(?<!\\?))?`;
      first = tokens([], names.map((n) => `?${n}=`));
    } else {
      re = items.map((i) => `(?:${escapeLiteral(sep)}${i})?`).join('');
      first = tokens([], names.map(key));
    }
    cont = tokens(union(valueChars, set('=')), names.slice(1).map(key));
  } else {
    // Repeated names lose their order and exploded maps allow any name: only the number of
    // pairs (for repeated names) and their syntax are kept.
    const nameRe = explode
      ? starRe(U)
      : `(?:${[...new Set(names)]
          .sort((a, b) => b.length - a.length)
          .map(escapeLiteral)
          .join('|')})`;
    const item = nameRe + value(null);
    re =
      op === '?'
        ? `(?:\\?${item}(?:&${item})${explode ? '*' : `{0,${vars.length - 1}}`})?`
        : `(?:${escapeLiteral(sep)}${item})${explode ? '*' : `{0,${vars.length}}`}`;
    first = tokens(op);
    cont = tokens(chars);
  }
  const noPrefix = vars.every((v) => v.prefix === null);
  const allPrefixed = distinct && vars.every((v) => v.prefix !== null);
  return fragment({
    re,
    first,
    cont,
    chars,
    once: op === '?' ? set('?') : more ? NONE : set(op),
    maxLen: allPrefixed ? sum(vars.map((v) => 2 + v.name.length + prefixOf(v) * MAX_CHAR_LEN)) : Infinity,
    // An exploded variable's values never contain `,`, even next to a list variable.
    tail: semi || !noPrefix ? NONE : explode ? U : U_LIST,
  });
}

/**
 * `c` pieces from `m` variables taken in order, where a piece's allowed length depends on which
 * variable produced it. With one alternative per count `c`, the j-th piece can only come from
 * variables j to m−c+j. The alternatives end after different numbers of separators, so at most
 * one of them reaches a given end; still, their number is kept small, and longer lists fall back
 * to "the j-th piece comes from the j-th variable or a later one".
 */
function pieces(vars: readonly VarSpec[], lead: string, sep: string, piece: (window: readonly VarSpec[]) => string): string {
  const m = vars.length;
  if (m <= MAX_COUNTED_PIECES) {
    const alternatives: string[] = [];
    for (let c = m; c >= 1; c--) {
      alternatives.push(lead + Array.from({ length: c }, (_, j) => piece(vars.slice(j, m - c + j + 1))).join(sep));
    }
    return `(?:${alternatives.join('|')})`;
  }
  let re = '';
  for (let j = m - 1; j >= 0; j--) re = piece(vars.slice(j)) + (re ? `(?:${sep}${re})?` : '');
  return lead + re;
}

// ---------------------------------------------------------------------------------------------
// Joining adjacent expressions

const isFragment = (item: Item | undefined): item is Fragment => item !== undefined && 're' in item;

/** Replaces adjacent expressions by one with the same language when their boundary is unclear. */
function merge(items: Item[]): Item[] {
  const out: Item[] = [];
  for (let item of items) {
    let top = out[out.length - 1];
    while (isFragment(item) && isFragment(top)) {
      const merged = mergePair(top, item);
      if (!merged) break;
      out.pop();
      item = merged;
      top = out[out.length - 1];
    }
    out.push(item);
  }
  return out;
}

function mergePair(a: Fragment, b: Fragment): Fragment | null {
  // Both nullable: a run that can hold every string of the other absorbs it, on either side.
  if (a.star && subset(b.chars, a.star)) return a;
  if (b.star && subset(a.chars, b.star)) return b;
  // Same language, and a non-empty `a` absorbs whatever `b` adds: `{#x}{#y}` is `{#x}`.
  if (a.re === b.re && subset(b.chars, a.tail)) return a;
  if (a.bounded && b.bounded && sameSet(a.bounded.set, b.bounded.set)) {
    return boundedFragment(a.bounded.set, a.bounded.n + b.bounded.n);
  }
  // A non-empty `a` already contains every `a` followed by `b`: the pair is `a` or `b` alone.
  if (overlap(a.cont, b.first) && subset(b.chars, a.tail) && !overlap(a.first, b.first)) {
    return fragment({
      re: `(?:${a.re}|${b.re})`,
      first: tokenUnion(a.first, b.first),
      cont: tokenUnion(a.cont, b.cont),
      chars: union(a.chars, b.chars),
      once: new Set(
        [...union(a.once, b.once)].filter(
          (x) => (a.once.has(x) || !a.chars.has(x)) && (b.once.has(x) || !b.chars.has(x)),
        ),
      ),
      maxLen: Math.max(a.maxLen, b.maxLen),
      tail: intersect(a.tail, b.tail),
    });
  }
  return null;
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && subset(a, b);
}

// ---------------------------------------------------------------------------------------------
// Backtracking analysis

/**
 * Walks the pieces right to left. Where what can extend a fragment may also start what follows
 * it, the engine may try the rest from many split points. That is accepted only when:
 * - (leftmost) a run is followed by a literal and then a run accepting all of its characters and
 *   the literal's: the split at the first occurrence of the literal is always a valid one, so the
 *   run is rewritten to stop there, which makes the boundary deterministic;
 * - (anchor) the literal contains a character, or the rest starts with a set of characters, that
 *   the rest can contain only K times: then each topic character is scanned by at most K+1 of the
 *   attempts, and the cost is multiplied by about K+1;
 * - (bounded) the fragment can end at only a few positions.
 * The product of these factors must stay under COST_BUDGET, else the template is refused.
 */
function analyse(items: Item[]): boolean {
  const n = items.length;
  const firstFrom: Tokens[] = new Array<Tokens>(n + 1);
  firstFrom[n] = EMPTY_TOKENS;
  for (let i = n - 1; i >= 0; i--) {
    const item = items[i] as Item;
    firstFrom[i] = isFragment(item) ? tokenUnion(item.first, firstFrom[i + 1] as Tokens) : tokens([], [item.literal]);
  }
  const cost: number[] = new Array<number>(n + 1).fill(1);
  for (let i = n - 1; i >= 0; i--) {
    const item = items[i] as Item;
    const after = cost[i + 1] as number;
    if (!isFragment(item) || !overlap(item.cont, firstFrom[i + 1] as Tokens)) {
      cost[i] = after;
      continue;
    }
    const next = items[i + 1];
    const w = next && !isFragment(next) ? next.literal : null;
    const run = item.star ?? item.bounded?.set ?? null;
    const following = items[i + 2];
    let c = Infinity;
    if (
      w !== null &&
      run &&
      w.length <= MAX_TEMPERED_LITERAL &&
      isFragment(following) &&
      following.star &&
      subset(union(run, set(w)), following.star)
    ) {
      const stop = `(?!${escapeLiteral(w)})`;
      const re = item.star
        ? `(?:${stop}${atom(item.star)})*`
        : `(?:${stop}${charAtom(run)}){0,${item.bounded?.n ?? 0}}`;
      items[i] = { ...item, re };
      c = after + w.length;
    } else {
      if (w !== null) {
        const k = anchorCount(w, items.slice(i + 2), firstFrom[i + 2] as Tokens);
        if (k < Infinity) c = w.length + (k + 1) * after;
      }
      const ends = item.bounded ? item.bounded.n + 1 : item.maxLen + 1;
      if (ends <= MAX_BOUNDED_ENDS) c = Math.min(c, ends * after);
    }
    if (!(c <= COST_BUDGET)) return false;
    cost[i] = c;
  }
  return true;
}

/** Fewest characters, from the literal or starting the rest, that the rest can contain. */
function anchorCount(w: string, rest: Item[], restFirst: Tokens): number {
  let best = Infinity;
  for (const x of new Set(w)) best = Math.min(best, countIn(rest, set(x)));
  if (restFirst.chars.size + restFirst.strs.length > 0) {
    const starts = union(restFirst.chars, new Set(restFirst.strs.map((s) => s[0] as string)));
    best = Math.min(best, countIn(rest, starts));
  }
  return best;
}

function countIn(items: Item[], xs: ReadonlySet<string>): number {
  let total = 0;
  for (const item of items) {
    if (isFragment(item)) {
      for (const x of xs) {
        if (!item.chars.has(x)) continue;
        total += item.once.has(x) ? 1 : item.maxLen;
      }
    } else {
      for (const ch of item.literal) if (xs.has(ch)) total++;
    }
    if (total === Infinity) return total;
  }
  return total;
}
