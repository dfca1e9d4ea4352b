import type { Matcher } from './topic-matcher.js';
import type { Subscriber } from './subscriber.js';

interface PatternEntry {
  readonly matcher: Matcher;
  readonly subscribers: Set<Subscriber>;
}

/**
 * Routes a topic to the subscribers whose matchers select it without looking at the others:
 * literal matchers sit in a hash map, wildcards in a set, and each distinct pattern (template or
 * URL pattern) is evaluated once per topic, however many subscribers share it. Patterns are
 * bucketed by their literal prefix, so a publish only evaluates those whose prefix the topic has.
 */
const patternKey = (m: Matcher): string => `${m.kind}\u0000${m.source}`;

// Shared by every index: a subscriber's `mark` must never match a round of another index.
let rounds = 0;

export class TopicIndex {
  private readonly exact = new Map<string, Set<Subscriber>>();
  private readonly wildcard = new Set<Subscriber>();
  /** pattern key → entry */
  private readonly patterns = new Map<string, PatternEntry>();
  /** literal prefix → patterns with that prefix */
  private readonly byPrefix = new Map<string, Set<PatternEntry>>();
  /** prefix length → number of prefixes of that length (to know which slices to look up) */
  private readonly prefixLengths = new Map<number, number>();
  private sortedLengths: number[] = [];

  /** `matchersOf` picks what is indexed: routing selectors, or the grants of a subscriber's token. */
  constructor(private readonly matchersOf: (sub: Subscriber) => readonly Matcher[] = (sub) => sub.matchers) {}

  get size(): number {
    return this.exact.size + this.patterns.size + (this.wildcard.size > 0 ? 1 : 0);
  }

  add(sub: Subscriber): void {
    for (const m of this.matchersOf(sub)) this.slotOf(m, true)!.add(sub);
  }

  remove(sub: Subscriber): void {
    for (const m of this.matchersOf(sub)) {
      const set = this.slotOf(m, false);
      if (!set) continue;
      set.delete(sub);
      if (set.size > 0 || m.kind === 'wildcard') continue;
      if (m.literal) {
        this.exact.delete(m.source);
      } else {
        const key = patternKey(m);
        this.removePrefix(this.patterns.get(key)!);
        this.patterns.delete(key);
      }
    }
  }

  /** The set of subscribers a matcher files them under; created when `create` is set. */
  private slotOf(m: Matcher, create: boolean): Set<Subscriber> | undefined {
    if (m.kind === 'wildcard') return this.wildcard;
    if (m.literal) {
      let set = this.exact.get(m.source);
      if (!set && create) this.exact.set(m.source, (set = new Set()));
      return set;
    }
    const key = patternKey(m);
    let entry = this.patterns.get(key);
    if (!entry && create) {
      entry = { matcher: m, subscribers: new Set() };
      this.patterns.set(key, entry);
      this.addPrefix(entry);
    }
    return entry?.subscribers;
  }

  /**
   * Calls `visit` once for each subscriber selecting at least one of `topics`. Template
   * selectors also match a topic equal to their own text; that is checked by the matcher itself.
   */
  forEachMatch(topics: readonly string[], visit: (sub: Subscriber) => void): void {
    const round = ++rounds;
    const once = (sub: Subscriber): void => {
      if (sub.mark === round) return;
      sub.mark = round;
      visit(sub);
    };
    for (const sub of this.wildcard) once(sub);
    for (const topic of topics) {
      const set = this.exact.get(topic);
      if (set) for (const sub of set) once(sub);
      if (this.patterns.size === 0) continue;
      for (const len of this.sortedLengths) {
        if (len > topic.length) break;
        const bucket = this.byPrefix.get(len === 0 ? '' : topic.slice(0, len));
        if (!bucket) continue;
        for (const entry of bucket) {
          if (entry.matcher.matches(topic)) for (const sub of entry.subscribers) once(sub);
        }
      }
    }
  }

  private addPrefix(entry: PatternEntry): void {
    const p = entry.matcher.prefix;
    let bucket = this.byPrefix.get(p);
    if (!bucket) {
      this.byPrefix.set(p, (bucket = new Set()));
      const n = this.prefixLengths.get(p.length) ?? 0;
      this.prefixLengths.set(p.length, n + 1);
      if (n === 0) this.sortedLengths = [...this.prefixLengths.keys()].sort((a, b) => a - b);
    }
    bucket.add(entry);
  }

  private removePrefix(entry: PatternEntry): void {
    const p = entry.matcher.prefix;
    const bucket = this.byPrefix.get(p);
    if (!bucket) return;
    bucket.delete(entry);
    if (bucket.size > 0) return;
    this.byPrefix.delete(p);
    const n = (this.prefixLengths.get(p.length) ?? 1) - 1;
    if (n === 0) {
      this.prefixLengths.delete(p.length);
      this.sortedLengths = [...this.prefixLengths.keys()].sort((a, b) => a - b);
    } else {
      this.prefixLengths.set(p.length, n);
    }
  }
}
