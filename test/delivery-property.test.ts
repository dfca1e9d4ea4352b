/**
 * Property tests of the delivery decision: for random (token, matchers, update) triples, every
 * subscriber receives exactly the updates the reference model (test/reference-model.ts, written
 * from the spec) says it may — above all, no private update reaches a subscriber not entitled to
 * it. The generators are biased towards near-misses: topics built from the same words as the
 * matchers, template instantiations with `/`, `?x=y`, `#f` or `/reviews` appended, case changes,
 * look-alike hosts, percent-encodings, commas and empty values.
 *
 * Runs: FC_RUNS (default 200) in-process, FC_HTTP_RUNS (default 20) over sockets; FC_SEED to replay.
 */
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authorizer, type Grants } from '../src/auth/index.js';
import { Hub } from '../src/core/hub.js';
import { createLogger } from '../src/observability/logger.js';
import { Subscriber, type SubscriberSink } from '../src/core/subscriber.js';
import { selectorMatcher, typedMatcher, type Matcher } from '../src/core/topic-matcher.js';
import { MemoryTransport } from '../src/transports/memory.js';
import { KEY, legacyToken, publish, SseClient, startHub, SUB_KEY, subscribeUrl, type TestHub } from './helpers.js';
import {
  decide,
  grantsFromClaims,
  matchesSelector,
  matchesUrlPattern,
  MERCURE_DETAIL,
  selectorInScope,
  type ModelMatcher,
  type ModelSubscription,
  type Truth,
} from './reference-model.js';

const RUNS = Number(process.env.FC_RUNS ?? 200);
const HTTP_RUNS = Number(process.env.FC_HTTP_RUNS ?? 20);
const SEED = process.env.FC_SEED === undefined ? {} : { seed: Number(process.env.FC_SEED) };

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

type RouteSpec = ModelMatcher;

interface DetailSpec {
  type: string;
  actions: string[];
  topics: Array<{ match: string; match_type?: 'exact' | 'urlpattern' }>;
}

type TokenSpec =
  | { kind: 'anonymous' }
  /** `claim: null` = a valid token without a `mercure` claim. */
  | { kind: 'v7'; claim: { subscribe?: string[]; publish?: string[] } | null }
  | { kind: 'v8'; details: DetailSpec[] };

interface SubSpec {
  version: 7 | 8;
  routes: RouteSpec[];
  token: TokenSpec;
}

interface UpdateSpec {
  topics: string[];
  private: boolean;
}

interface Scenario {
  subs: SubSpec[];
  updates: UpdateSpec[];
}

const HOST = 'https://ex.com';
const WORDS = ['books', 'users', 'foo', '42', '1', 'reviews'];
/** Values put where a template variable or `:id` stands, and stray path segments. */
const VALUES = ['1', '2', '42', 'books', 'Books', 'A-b_c.d~', 'a%2Fb', '%2f', '%zz', 'x,y', '', 'a b', 'é', 'a:b', 'a@b', 'a+b', '..', '{id}'];
/** Values for `{+path}` and a trailing `*`. */
const REST_VALUES = ['', '1', '1/reviews', 'a/b/c', 'a?b=c', '#f', 'x,y', '{x}', 'é', '%zz', '%2f', '1/'];
const SUFFIXES = ['', '', '', '/', '?x=y', '?q=1', '?q=', '?q=a,b', '?q=1&x=y', '?', '#f', '?topic=https%3A%2F%2Fex.com%2Fbooks%2F1', '?topic=https://ex.com/books/1', '{?q}'];
const LOOKALIKE_HOSTS = ['https://EX.com', 'http://ex.com', 'https://ex.com:443', 'https://ex.com.evil', 'https://ex.co'];
const MUTATIONS = ['none', 'none', 'none', 'none', '/', '?x=y', '/reviews', '#f', 'HOST', 'Case', 'chop', 'absolute', '//x'] as const;
type Mutation = (typeof MUTATIONS)[number];
const FIXED_TEMPLATES = [
  'https://ex.com/books/{id}',
  'https://ex.com/users/foo/{?topic}',
  'https://ex.com/{a}/{b}',
  'https://ex.com/books/{id', // not a valid template: only matches itself
];

function mutate(topic: string, mutation: Mutation, origin: string): string {
  switch (mutation) {
    case 'none':
      return topic;
    case '/':
    case '?x=y':
    case '/reviews':
    case '#f':
      return topic + mutation;
    case 'HOST':
      return topic.replace(HOST, 'https://EX.com');
    case 'Case':
      return topic.replace('/books', '/Books').replace('/users', '/Users');
    case 'chop':
      return topic.length > 1 ? topic.slice(0, -1) : topic;
    case 'absolute':
      return topic.startsWith('/') ? origin + topic : topic;
    case '//x':
      // Authority/path confusion: `https://ex.com//x/books/1` has the path `//x/books/1`.
      return topic.replace(/^(https?:\/\/[^/?#]+)\//, '$1//x/');
  }
}

/** Topics made of the same words as the matchers, on the right host or a look-alike, or relative. */
function rawTopicArb(origin: string): fc.Arbitrary<string> {
  return fc.oneof(
    fc
      .tuple(
        fc.oneof({ weight: 4, arbitrary: fc.constant(HOST) }, fc.constantFrom(...LOOKALIKE_HOSTS, origin, '/books', '/users')),
        fc.array(fc.constantFrom(...WORDS, ...VALUES), { minLength: 1, maxLength: 3 }),
        fc.constantFrom(...SUFFIXES),
      )
      .map(([host, segments, suffix]) => host + segments.map((s) => '/' + s).join('') + suffix),
    fc.constantFrom('bar', 'books/1', 'urn:ex:books:1', 'https://ex.com', 'https://ex.com/'),
  );
}

/** Draft-07 selectors: URI templates over the same words (variables named once each). */
const templateArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc
    .tuple(
      fc.array(fc.oneof(fc.constantFrom(...WORDS), fc.constant('{}')), { minLength: 1, maxLength: 3 }),
      fc.constantFrom('', '', '/', '{?q}', '{?topic}', '/{+path}', '{+path}'),
    )
    .map(([parts, tail]) => {
      let n = 0;
      return HOST + parts.map((p) => '/' + (p === '{}' ? `{${'abc'[n++]}}` : p)).join('') + tail;
    }) },
  { weight: 1, arbitrary: fc.constantFrom(...FIXED_TEMPLATES) },
);

/** Draft-08 URL patterns: `https://ex.com/…` or relative, words and `:name` segments, optional `/*`. */
const urlPatternArb: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom(HOST, HOST, ''),
    fc.array(fc.oneof(fc.constantFrom('books', 'users', '42', 'foo', 'reviews'), fc.constant(':')), { minLength: 1, maxLength: 3 }),
    fc.constantFrom('', '/*'),
  )
  .map(([host, parts, tail]) => {
    let n = 0;
    const segs = parts.map((p) => (p === ':' ? `:${'abc'[n++]}` : p));
    if (host === '' && segs[0]!.startsWith(':')) segs.unshift('books'); // relative topics never start with `//`
    return host + segs.map((s) => '/' + s).join('') + tail;
  });

function instantiateTemplate(template: string, values: string[], rest: string, query: string | null): string {
  let k = 0;
  return template
    .replace(/\{\+[a-z]+\}/g, () => rest)
    .replace(/\{\?([a-z]+)\}/g, (_, name: string) => (query === null ? '' : `?${name}=${query}`))
    .replace(/\{[a-z]+\}/g, () => values[k++ % values.length]!);
}

function instantiatePattern(pattern: string, values: string[], rest: string): string {
  let k = 0;
  return pattern.replace(/\/\*$/, '/' + rest).replace(/\/:[a-z]+/g, () => '/' + values[k++ % values.length]!);
}

interface Universe {
  templates: string[];
  patterns: string[];
  topics: string[];
}

function universeArb(origin: string): fc.Arbitrary<Universe> {
  return fc
    .record({
      templates: fc.uniqueArray(templateArb, { minLength: 1, maxLength: 4 }),
      patterns: fc.uniqueArray(urlPatternArb, { minLength: 1, maxLength: 3 }),
    })
    .chain(({ templates, patterns }) => {
      const values = fc.array(fc.constantFrom(...VALUES), { minLength: 3, maxLength: 3 });
      const mutation = fc.constantFrom(...MUTATIONS);
      const fromTemplate = fc
        .tuple(fc.constantFrom(...templates), values, fc.constantFrom(...REST_VALUES), fc.option(fc.constantFrom(...VALUES)), mutation)
        .map(([t, v, r, q, m]) => mutate(instantiateTemplate(t, v, r, q), m, origin));
      const fromPattern = fc
        .tuple(fc.constantFrom(...patterns), values, fc.constantFrom(...REST_VALUES), mutation)
        .map(([p, v, r, m]) => mutate(instantiatePattern(p, v, r), m, origin));
      return fc.record({
        templates: fc.constant(templates),
        patterns: fc.constant(patterns),
        topics: fc.uniqueArray(
          fc.oneof(
            { weight: 3, arbitrary: fromTemplate },
            { weight: 2, arbitrary: fromPattern },
            { weight: 2, arbitrary: rawTopicArb(origin) },
            { weight: 1, arbitrary: fc.constantFrom(...templates, ...patterns) },
          ),
          { minLength: 3, maxLength: 8 },
        ),
      });
    });
}

function scenarioArb(origin: string, options: { mixVersions: boolean }): fc.Arbitrary<Scenario> {
  return universeArb(origin).chain((u) => {
    // Topics reused as draft-07 selectors: only those the model can decide (no non-ASCII template
    // literal, no repeated variable); plain strings always are.
    const selectable = u.topics.filter(selectorInScope);
    const selector = fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(...u.templates) },
      { weight: selectable.length > 0 ? 3 : 0, arbitrary: fc.constantFrom(...(selectable.length > 0 ? selectable : u.templates)) },
      { weight: 1, arbitrary: fc.constantFrom(...u.patterns) }, // `:id` means nothing to draft-07
      { weight: 1, arbitrary: fc.constant('*') },
    );
    const typed: fc.Arbitrary<ModelMatcher> = fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom(...u.patterns).map((value) => ({ type: 'urlpattern' as const, value })) },
      { weight: 3, arbitrary: fc.constantFrom(...u.topics).map((value) => ({ type: 'exact' as const, value })) },
      { weight: 1, arbitrary: fc.constantFrom(...u.templates).map((value) => ({ type: 'exact' as const, value })) },
      { weight: 1, arbitrary: fc.constantFrom('exact' as const, 'urlpattern' as const).map((type) => ({ type, value: '*' })) },
    );
    const v7Token: fc.Arbitrary<TokenSpec> = fc.oneof(
      { weight: 6, arbitrary: fc.array(selector, { minLength: 1, maxLength: 3 }).map((subscribe) => ({ kind: 'v7' as const, claim: { subscribe } })) },
      { weight: 1, arbitrary: fc.constantFrom<TokenSpec>(
        { kind: 'v7', claim: null },
        { kind: 'v7', claim: {} },
        { kind: 'v7', claim: { subscribe: [] } },
        { kind: 'v7', claim: { publish: ['*'] } },
      ) },
    );
    const detail: fc.Arbitrary<DetailSpec> = fc.record({
      type: fc.oneof({ weight: 9, arbitrary: fc.constant(MERCURE_DETAIL) }, fc.constant('https://example.com/other-detail')),
      actions: fc.constantFrom(['subscribe'], ['subscribe'], ['publish'], ['subscribe', 'publish'], ['read'], ['read', 'subscribe']),
      topics: fc.array(
        fc.tuple(typed, fc.boolean()).map(([m, explicit]) =>
          m.type === 'exact' && !explicit ? { match: m.value } : { match: m.value, match_type: m.type as 'exact' | 'urlpattern' },
        ),
        { minLength: 1, maxLength: 3 },
      ),
    });
    const v8Token: fc.Arbitrary<TokenSpec> = fc.array(detail, { minLength: 1, maxLength: 2 }).map((details) => ({ kind: 'v8' as const, details }));
    const anonymous = fc.constant<TokenSpec>({ kind: 'anonymous' });
    const sub = fc.constantFrom<7 | 8>(7, 8).chain((version) =>
      fc.record({
        version: fc.constant(version),
        routes:
          version === 7
            ? fc.array(selector.map((value): RouteSpec => ({ type: 'selector', value })), { minLength: 1, maxLength: 3 })
            : fc.array(typed, { minLength: 1, maxLength: 3 }),
        token: options.mixVersions
          ? fc.oneof({ weight: 1, arbitrary: anonymous }, { weight: 2, arbitrary: v7Token }, { weight: 2, arbitrary: v8Token })
          : fc.oneof({ weight: 1, arbitrary: anonymous }, { weight: 4, arbitrary: version === 7 ? v7Token : v8Token }),
      }),
    );
    const update = fc.record({
      topics: fc.array(fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...u.topics) }, { weight: 1, arbitrary: rawTopicArb(origin) }), {
        minLength: 1,
        maxLength: 3,
      }),
      private: fc.integer({ min: 0, max: 99 }).map((n) => n < 65),
    });
    return fc.record({
      subs: fc.array(sub, { minLength: 1, maxLength: 5 }),
      updates: fc.array(update, { minLength: 1, maxLength: 8 }),
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

const subKey = new TextEncoder().encode(SUB_KEY);
let jti = 0;

/** Signs the token and returns it with the claims the model reads. */
async function mint(spec: TokenSpec, audience: string): Promise<{ token: string; claims: Record<string, unknown> } | null> {
  if (spec.kind === 'anonymous') return null;
  if (spec.kind === 'v7') {
    const claims: Record<string, unknown> = spec.claim === null ? {} : { mercure: spec.claim };
    const token = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(subKey);
    return { token, claims };
  }
  const claims: Record<string, unknown> = {
    authorization_details: spec.details,
    client_id: 'property-test',
    jti: `jti-${++jti}`,
    sub: 'property-test',
  };
  const token = await new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' })
    .setIssuer('https://issuer.example')
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(subKey);
  return { token, claims };
}

function modelOf(spec: SubSpec, claims: Record<string, unknown> | null, extraRoutes: RouteSpec[] = []): ModelSubscription {
  const tokenVersion = spec.token.kind === 'v8' ? 8 : 7;
  return {
    version: spec.version,
    matchers: [...spec.routes, ...extraRoutes],
    grants: claims === null ? null : grantsFromClaims(tokenVersion, claims),
  };
}

// ---------------------------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------------------------

interface RunResult {
  models: ModelSubscription[];
  /** Per subscriber, the indexes of the updates it received, in order. */
  received: number[][];
}

type Check = 'safety' | 'completeness';

function violations(scenario: Scenario, result: RunResult, baseUrl: string, check: Check): string[] {
  const out: string[] = [];
  scenario.subs.forEach((spec, i) => {
    const got = result.received[i]!;
    const seen = new Set<number>();
    for (const j of got) {
      if (seen.has(j) && check === 'safety') out.push(`subscriber #${i} received update #${j} twice`);
      seen.add(j);
    }
    scenario.updates.forEach((update, j) => {
      const v = decide(result.models[i]!, update, baseUrl);
      const delivered = seen.has(j);
      const describe = () =>
        `subscriber #${i} ${JSON.stringify(spec)}\n  update #${j} ${JSON.stringify(update)}\n  model: routed=${v.routed} authorized=${v.authorized}`;
      if (check === 'safety' && v.deliver === 'no' && delivered) {
        const what = update.private && v.routed !== 'no' ? 'PRIVATE LEAK' : 'unrouted delivery';
        out.push(`${what}: ${describe()}`);
      }
      if (check === 'completeness' && v.deliver === 'yes' && !delivered) out.push(`missing delivery: ${describe()}`);
    });
  });
  return out;
}

function assertNoViolations(scenario: Scenario, result: RunResult, baseUrl: string, check: Check): void {
  const found = violations(scenario, result, baseUrl, check);
  if (found.length > 0) throw new Error(`${found.length} violation(s):\n${found.slice(0, 5).join('\n')}`);
}

// ---------------------------------------------------------------------------------------------
// In-process: the real Hub, Subscriber, matchers and Authorizer, no sockets
// ---------------------------------------------------------------------------------------------

const BASE = 'http://localhost/.well-known/mercure';
const ORIGIN = 'http://localhost';
const silent = createLogger('silent');
const authorizer = new Authorizer({ publisher: { key: KEY }, subscriber: { key: SUB_KEY } });

async function grantsOf(token: string): Promise<Grants> {
  const r = await authorizer.verify(token, 'subscriber', BASE);
  if ('error' in r) throw new Error(`test token rejected: ${r.message}`);
  return r;
}

function routingMatcher(r: RouteSpec): Matcher {
  return r.type === 'selector' ? selectorMatcher(r.value) : typedMatcher(r.type, r.value, BASE);
}

async function runInProcess(scenario: Scenario): Promise<RunResult> {
  const hub = new Hub({ transport: new MemoryTransport({ size: 0 }), logger: silent, subscriptions: false, heartbeat: 0, dispatchTimeout: 0 });
  await hub.start();
  try {
    const models: ModelSubscription[] = [];
    const received: number[][] = [];
    for (const [i, spec] of scenario.subs.entries()) {
      const minted = await mint(spec.token, BASE);
      const got: number[] = [];
      received.push(got);
      models.push(modelOf(spec, minted?.claims ?? null));
      const sink: SubscriberSink = {
        write(chunk) {
          // A write carries every frame of a turn (the hub batches per turn).
          for (const m of chunk.toString().matchAll(/^id: u(\d+)$/gm)) got.push(Number(m[1]));
          return true;
        },
        end() {},
        destroy() {},
      };
      const sub = new Subscriber({
        id: `urn:uuid:sub-${i}`,
        version: spec.version,
        matchers: spec.routes.map(routingMatcher),
        grants: minted ? await grantsOf(minted.token) : null,
        sink,
        bufferSize: 10_000,
        deadline: 0,
      });
      (await hub.connect(sub)).resume();
    }
    for (const [j, u] of scenario.updates.entries()) {
      await hub.publish({ topics: u.topics, private: u.private, id: `u${j}`, data: String(j) });
    }
    return { models, received };
  } finally {
    await hub.close();
  }
}

describe('reference model (spec examples)', () => {
  it('decides draft-07 selectors as the spec describes', () => {
    const cases: Array<[string, string, Truth]> = [
      ['*', 'anything', 'yes'],
      ['https://example.com/books/{id}', 'https://example.com/books/{id}', 'yes'], // rule 2
      ['https://example.com/books/{id}', 'https://example.com/books/1', 'yes'],
      ['https://example.com/books/{id}', 'https://example.com/books/a%2Fb', 'yes'],
      ['https://example.com/books/{id}', 'https://example.com/books/1/reviews', 'no'],
      ['https://example.com/books/{id}', 'https://example.com/books/1?x=y', 'no'],
      ['https://example.com/books/{id}', 'https://example.com/books/1#f', 'no'],
      ['https://example.com/books/{id}', 'https://example.com/books/é', 'no'],
      ['https://example.com/books/{id}', 'https://example.com/books/', 'maybe'],
      ['https://example.com/books/{id}', 'https://example.com/books/1,2', 'maybe'],
      ['https://example.com/users/foo/{?topic}', 'https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1', 'yes'],
      ['https://example.com/users/foo/{?topic}', 'https://example.com/users/foo/?topic=https://example.com/books/1', 'no'],
      ['https://example.com/users/foo/{?topic}', 'https://example.com/users/foo/?topic=a&x=y', 'no'],
      ['https://example.com/users/foo/{?topic}', 'https://example.com/users/bar/?topic=a', 'no'],
      ['https://example.com/files/{+path}', 'https://example.com/files/a/b?c=d', 'yes'],
      ['https://example.com/files/{+path}', 'https://example.com/files/{x}', 'no'],
      ['https://example.com/books/{id', 'https://example.com/books/1', 'no'],
      ['https://example.com/books/{id', 'https://example.com/books/{id', 'yes'],
      ['https://example.com/foo', 'https://example.com/foo/', 'no'],
    ];
    for (const [selector, topic, expected] of cases) expect([selector, topic, matchesSelector(selector, topic)]).toEqual([selector, topic, expected]);
  });

  it('decides draft-08 URL patterns as the spec describes', () => {
    const cases: Array<[string, string, Truth]> = [
      ['https://ex.com/books/:id', 'https://ex.com/books/1', 'yes'],
      ['https://ex.com/books/:id', 'https://EX.com/books/1', 'yes'], // hosts are case-insensitive
      ['https://ex.com/books/:id', 'https://ex.com/Books/1', 'no'], // paths are not
      ['https://ex.com/books/:id', 'https://ex.com/books/1/reviews', 'no'],
      ['https://ex.com/books/:id', 'https://ex.com/books/', 'no'],
      ['https://ex.com/books/:id', 'https://ex.com/books/1?x=y', 'yes'], // search is a wildcard
      ['https://ex.com/books/:id', 'http://ex.com/books/1', 'no'],
      ['https://ex.com/books/:id', 'https://ex.com.evil/books/1', 'no'],
      ['https://ex.com/users/42/*', 'https://ex.com/users/42/books/1', 'yes'],
      ['https://ex.com/users/42/*', 'https://ex.com/users/42', 'no'],
      ['https://ex.com/users/42/*', 'https://ex.com/users/420/x', 'no'],
      ['/books/:id', '/books/1', 'yes'],
      ['/books/:id', 'http://localhost/books/1', 'yes'],
      ['/books/:id', 'https://ex.com/books/1', 'no'],
      ['/books/:id', 'bar', 'no'],
    ];
    for (const [pattern, topic, expected] of cases) {
      expect([pattern, topic, matchesUrlPattern(pattern, topic, BASE)]).toEqual([pattern, topic, expected]);
    }
  });
});

describe('delivery property (in-process hub core)', () => {
  const arb = scenarioArb(ORIGIN, { mixVersions: true });

  it(`never delivers an update the model forbids: no private leak, no unrouted update (${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(arb, async (scenario) => assertNoViolations(scenario, await runInProcess(scenario), BASE, 'safety')),
      { numRuns: RUNS, ...SEED },
    );
  });

  it(`delivers every update the model requires (${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(arb, async (scenario) => assertNoViolations(scenario, await runInProcess(scenario), BASE, 'completeness')),
      { numRuns: RUNS, ...SEED },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Over real sockets: subscribe with SSE, publish with HTTP
// ---------------------------------------------------------------------------------------------

describe('delivery property (HTTP)', () => {
  let h: TestHub;
  let pub: string;
  let run = 0;
  beforeAll(async () => {
    h = await startHub({ anonymous: true });
    pub = await legacyToken({ publish: ['*'] });
  });
  afterAll(() => h.close());

  async function runHttp(scenario: Scenario): Promise<RunResult> {
    const r = ++run;
    const prefix = `urn:run:${r}:`;
    // Every subscriber also listens to a sentinel topic no generated topic can equal (a literal
    // matches only itself); the sentinel, published last, tells that all earlier updates arrived.
    const sentinel = `urn:quicksilver:sentinel:${r}`;
    const endId = `${prefix}end`;
    const clients: SseClient[] = [];
    const models: ModelSubscription[] = [];
    try {
      for (const spec of scenario.subs) {
        const extra: RouteSpec = { type: spec.version === 7 ? 'selector' : 'exact', value: sentinel };
        const params: Array<[string, string]> = [...spec.routes, extra].map((m) => [
          m.type === 'selector' ? 'topic' : m.type === 'exact' ? 'match' : 'match_urlpattern',
          m.value,
        ]);
        const minted = await mint(spec.token, h.hubUrl);
        models.push(modelOf(spec, minted?.claims ?? null, [extra]));
        const c = await SseClient.connect(subscribeUrl(h.hubUrl, params), {
          headers: minted ? { Authorization: `Bearer ${minted.token}` } : {},
        });
        clients.push(c);
        if (c.status !== 200) throw new Error(`subscribe answered ${c.status} for ${JSON.stringify(spec)}`);
      }
      for (const [j, u] of scenario.updates.entries()) {
        const fields: Array<[string, string]> = u.topics.map((t) => ['topic', t]);
        fields.push(['id', `${prefix}${j}`], ['data', String(j)]);
        if (u.private) fields.push(['private', 'on']);
        const res = await publish(h.hubUrl, fields, pub);
        if (res.status !== 200) throw new Error(`publish answered ${res.status} ${res.body} for ${JSON.stringify(u)}`);
      }
      const res = await publish(h.hubUrl, { topic: sentinel, id: endId, data: 'end' }, pub);
      if (res.status !== 200) throw new Error(`sentinel publish answered ${res.status}`);
      await Promise.all(clients.map((c) => c.until(() => c.events.some((e) => e.id === endId), 5000, 'the sentinel')));
      const received = clients.map((c) =>
        c.events.filter((e) => e.id !== endId && e.id?.startsWith(prefix)).map((e) => Number(e.id!.slice(prefix.length))),
      );
      return { models, received };
    } finally {
      for (const c of clients) c.close();
    }
  }

  it(`never delivers an update the model forbids over HTTP (${HTTP_RUNS} runs)`, async () => {
    const arb = scenarioArb(new URL(h.hubUrl).origin, { mixVersions: false });
    await fc.assert(
      fc.asyncProperty(arb, async (scenario) => assertNoViolations(scenario, await runHttp(scenario), h.hubUrl, 'safety')),
      { numRuns: HTTP_RUNS, ...SEED },
    );
  });

  it(`delivers every update the model requires over HTTP (${HTTP_RUNS} runs)`, async () => {
    const arb = scenarioArb(new URL(h.hubUrl).origin, { mixVersions: false });
    await fc.assert(
      fc.asyncProperty(arb, async (scenario) => assertNoViolations(scenario, await runHttp(scenario), h.hubUrl, 'completeness')),
      { numRuns: HTTP_RUNS, ...SEED },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Regressions: the dangerous over-matches, checked against the hub and the model alike
// ---------------------------------------------------------------------------------------------

describe('private updates and over-matching templates (regressions)', () => {
  const v7 = (subscribe: string[]): TokenSpec => ({ kind: 'v7', claim: { subscribe } });
  const v8 = (topics: DetailSpec['topics']): TokenSpec => ({ kind: 'v8', details: [{ type: MERCURE_DETAIL, actions: ['subscribe'], topics }] });
  const everything: RouteSpec[] = [{ type: 'selector', value: '*' }];
  const BOOK = 'https://ex.com/books/{id}';

  const cases: Array<{ name: string; routes: RouteSpec[]; token: TokenSpec; topics: string[]; private: boolean; delivered: boolean }> = [
    // The grant `https://ex.com/books/{id}` covers one path segment, nothing more.
    { name: 'grant {id} vs private …/books/1/reviews', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/1/reviews'], private: true, delivered: false },
    { name: 'grant {id} vs private …/books/1?x=y', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/1?x=y'], private: true, delivered: false },
    { name: 'grant {id} vs private …/books/1#f', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/1#f'], private: true, delivered: false },
    { name: 'grant {id} vs private …/books/1/', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/1/'], private: true, delivered: false },
    { name: 'grant {id} vs private …/books (no segment)', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books'], private: true, delivered: false },
    { name: 'grant {id} vs private …/books/{id}/reviews', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/{id}/reviews'], private: true, delivered: false },
    { name: 'grant {id} vs private …/Books/1', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/Books/1'], private: true, delivered: false },
    { name: 'grant {id} vs private …/books/1:2 (reserved char)', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/1:2'], private: true, delivered: false },
    { name: 'grant {id} vs private …/books/é (unencoded)', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/é'], private: true, delivered: false },
    { name: 'grant {id} vs private https://ex.com.evil/books/1', routes: everything, token: v7([BOOK]), topics: ['https://ex.com.evil/books/1'], private: true, delivered: false },
    { name: 'grant {id}: a public …/books/1/reviews is still delivered', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/1/reviews'], private: false, delivered: true },
    { name: 'grant {id}: the template text itself (rule 2)', routes: everything, token: v7([BOOK]), topics: [BOOK], private: true, delivered: true },
    { name: 'grant {id} vs private …/books/1 (needs URI templates)', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/1'], private: true, delivered: true },
    { name: 'grant {id} vs private …/books/a%2Fb (needs URI templates)', routes: everything, token: v7([BOOK]), topics: ['https://ex.com/books/a%2Fb'], private: true, delivered: true },
    // Routing by the same template must not over-select either.
    { name: 'route {id} vs public …/books/1/reviews', routes: [{ type: 'selector', value: BOOK }], token: v7(['*']), topics: ['https://ex.com/books/1/reviews'], private: false, delivered: false },
    { name: 'route {id} vs public …/books/1?x=y', routes: [{ type: 'selector', value: BOOK }], token: v7(['*']), topics: ['https://ex.com/books/1?x=y'], private: false, delivered: false },
    // The draft-07 alternate-topic example.
    {
      name: 'draft-07 example: private book via the encoded alternate (needs URI templates)',
      routes: [{ type: 'selector', value: BOOK }],
      token: v7(['https://ex.com/users/foo/{?topic}']),
      topics: ['https://ex.com/books/1', 'https://ex.com/users/foo/?topic=https%3A%2F%2Fex.com%2Fbooks%2F1'],
      private: true,
      delivered: true,
    },
    {
      name: 'draft-07 example: an unencoded alternate does not match {?topic}',
      routes: [{ type: 'selector', value: BOOK }],
      token: v7(['https://ex.com/users/foo/{?topic}']),
      topics: ['https://ex.com/books/1', 'https://ex.com/users/foo/?topic=https://ex.com/books/1'],
      private: true,
      delivered: false,
    },
    {
      name: 'draft-07 example: {?topic} does not take extra parameters',
      routes: [{ type: 'selector', value: BOOK }],
      token: v7(['https://ex.com/users/foo/{?topic}']),
      topics: ['https://ex.com/books/1', 'https://ex.com/users/foo/?topic=1&admin=1'],
      private: true,
      delivered: false,
    },
    {
      name: 'draft-07 example: another user’s alternate',
      routes: [{ type: 'selector', value: BOOK }],
      token: v7(['https://ex.com/users/foo/{?topic}']),
      topics: ['https://ex.com/books/1', 'https://ex.com/users/bar/?topic=https%3A%2F%2Fex.com%2Fbooks%2F1'],
      private: true,
      delivered: false,
    },
    // Draft-08 grants.
    { name: 'exact grant vs private topic with a trailing slash', routes: everything, token: v8([{ match: 'https://ex.com/books/1' }]), topics: ['https://ex.com/books/1/'], private: true, delivered: false },
    { name: 'exact grant vs private topic with another host case', routes: everything, token: v8([{ match: 'https://ex.com/books/1' }]), topics: ['https://EX.com/books/1'], private: true, delivered: false },
    { name: 'exact grant of a template string is not a template', routes: everything, token: v8([{ match: BOOK }]), topics: ['https://ex.com/books/1'], private: true, delivered: false },
    { name: 'urlpattern :id grant vs private …/books/1/reviews', routes: everything, token: v8([{ match: 'https://ex.com/books/:id', match_type: 'urlpattern' }]), topics: ['https://ex.com/books/1/reviews'], private: true, delivered: false },
    { name: 'urlpattern users/42/* grant vs private …/users/420/x', routes: everything, token: v8([{ match: 'https://ex.com/users/42/*', match_type: 'urlpattern' }]), topics: ['https://ex.com/users/420/x'], private: true, delivered: false },
    { name: 'urlpattern users/42/* grant vs private …/users/42/books/1', routes: everything, token: v8([{ match: 'https://ex.com/users/42/*', match_type: 'urlpattern' }]), topics: ['https://ex.com/users/42/books/1'], private: true, delivered: true },
    // A path starting with `//` is a path, not an authority: `https://ex.com//x/users/42/s` has the
    // pathname `//x/users/42/s` (the URL Pattern standard canonicalizes pathnames in "path start
    // state"). urlpattern-polyfill 10.1 re-parses it as a protocol-relative URL (`/users/42/s`).
    { name: 'urlpattern users/42/* grant vs private …//x/users/42/s', routes: everything, token: v8([{ match: 'https://ex.com/users/42/*', match_type: 'urlpattern' }]), topics: ['https://ex.com//x/users/42/s'], private: true, delivered: false },
    { name: 'urlpattern :id grant vs private …//tenant-b/books/1', routes: everything, token: v8([{ match: 'https://ex.com/books/:id', match_type: 'urlpattern' }]), topics: ['https://ex.com//tenant-b/books/1'], private: true, delivered: false },
    { name: 'relative urlpattern grant vs private http://localhost//evil/books/1', routes: everything, token: v8([{ match: '/books/:id', match_type: 'urlpattern' }]), topics: ['http://localhost//evil/books/1'], private: true, delivered: false },
    { name: 'urlpattern users/42/* grant vs private …/users/42//x (a real match)', routes: everything, token: v8([{ match: 'https://ex.com/users/42/*', match_type: 'urlpattern' }]), topics: ['https://ex.com/users/42//x'], private: true, delivered: true },
    { name: 'a publish-only detail grants no subscribe', routes: everything, token: { kind: 'v8', details: [{ type: MERCURE_DETAIL, actions: ['publish'], topics: [{ match: '*' }] }] }, topics: ['https://ex.com/books/1'], private: true, delivered: false },
    { name: 'anonymous never gets a private update', routes: everything, token: { kind: 'anonymous' }, topics: ['https://ex.com/books/1'], private: true, delivered: false },
  ];

  it.each(cases)('$name', async (c) => {
    const spec: SubSpec = { version: 7, routes: c.routes, token: c.token };
    const scenario: Scenario = { subs: [spec], updates: [{ topics: c.topics, private: c.private }] };
    const result = await runInProcess(scenario);
    // The model must agree with the expectation written here, and the hub with both.
    expect(decide(result.models[0]!, scenario.updates[0]!, BASE).deliver).toBe(c.delivered ? 'yes' : 'no');
    expect(result.received[0]!.includes(0)).toBe(c.delivered);
  });
});
