import { execFileSync } from 'node:child_process';
import { decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { describe, expect, it } from 'vitest';
import { KEY, legacyToken, publish, SseClient, startHub, subscribeUrl } from './helpers.js';

describe('OpenTelemetry tracing', () => {
  it('records a span per publish, subscription and subscriptions API request', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const h = await startHub({ anonymous: true, subscriptions: true, tracer: provider.getTracer('quicksilver') });
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'traced']]));
    await s.until(() => s.raw.length > 0);
    expect((await publish(h.hubUrl, { topic: 'traced' }, await legacyToken({ publish: ['*'] }))).status).toBe(200);
    expect((await publish(h.hubUrl, { topic: 'traced' })).status).toBe(401);
    await fetch(`${h.hubUrl}/subscriptions`);
    s.close();
    await h.close();
    const spans = exporter.getFinishedSpans().map((sp) => [sp.name, sp.attributes['http.response.status_code']]);
    expect(spans).toEqual([
      ['mercure.subscribe', 200],
      ['mercure.publish', 200],
      ['mercure.publish', 401],
      ['mercure.subscriptions', 401],
    ]);
  });
});

describe('metrics', () => {
  it('measure the transport lag of this node\'s updates', async () => {
    const h = await startHub({ anonymous: true });
    await publish(h.hubUrl, { topic: 'lag' }, await legacyToken({ publish: ['*'] }));
    expect(h.hub.metrics()).toMatch(/^quicksilver_transport_lag_seconds_count 1$/m);
    await h.close();
  });
});

describe('quicksilver token', () => {
  const run = (args: string[], env: Record<string, string> = {}) =>
    execFileSync(process.execPath, ['dist/cli.js', 'token', ...args], { env: { PATH: process.env.PATH ?? '', ...env } }).toString().trim();

  it('mints a draft-07 token from the configured key that the hub accepts', async () => {
    const token = run(['--publish', '*', '--subscribe', 'https://example.com/{id}', '--exp', '1h'], { MERCURE_PUBLISHER_JWT_KEY: KEY });
    const { payload } = await jwtVerify(token, new TextEncoder().encode(KEY));
    expect(payload.mercure).toEqual({ publish: ['*'], subscribe: ['https://example.com/{id}'] });
    expect(payload.exp! - Math.floor(Date.now() / 1000)).toBeGreaterThan(3500);
    const h = await startHub({ anonymous: true });
    expect((await publish(h.hubUrl, { topic: 'https://example.com/1' }, token)).status).toBe(200);
    await h.close();
  });

  it('mints a draft-08 RFC 9068 access token', async () => {
    const h = await startHub({ anonymous: true });
    const token = run(['--draft', '8', '--publish', 'https://example.com/books/:id', '--match-type', 'urlpattern', '--aud', h.hubUrl, '--iss', 'https://app.example', '--exp', '5m'], { JWT_KEY: KEY });
    expect(decodeProtectedHeader(token).typ).toBe('at+jwt');
    expect(decodeJwt(token)).toMatchObject({
      iss: 'https://app.example',
      aud: h.hubUrl,
      authorization_details: [{ type: 'https://mercure.rocks/authorization-detail', actions: ['publish'], topics: [{ match: 'https://example.com/books/:id', match_type: 'urlpattern' }] }],
    });
    expect((await publish(h.hubUrl, { topic: 'https://example.com/books/7' }, token)).status).toBe(200);
    expect((await publish(h.hubUrl, { topic: 'https://example.com/users/7' }, token)).status).toBe(403);
    await h.close();
  });

  it('explains bad options', () => {
    expect(() => run(['--draft', '9', '--publish', '*'])).toThrow();
  });
});
