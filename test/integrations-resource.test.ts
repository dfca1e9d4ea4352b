/**
 * quicksilver/resource: publishResource / publishDeletion (API Platform's `mercure: true`
 * payloads), and the autoPublish middleware: successful creates, updates and deletes publish the
 * right JSON on the right topic; failures publish nothing; a failing hub never fails the request.
 * Then end to end on a real hub.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Publisher, PublishError } from '../src/client/publisher.js';
import { MockPublisher, RecordingPublisher } from '../src/client/testing.js';
import { createPublisherToken } from '../src/client/token.js';
import { autoPublish, publishDeletion, publishResource, resourceTopic, type AutoPublishOptions } from '../src/integrations/resource.js';
import { KEY, SseClient, sleep, startHub, subscribeUrl, type TestHub } from './helpers.js';

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function close(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

describe('publishResource / publishDeletion', () => {
  it('publishes the JSON on the IRI, "@id" first when missing, alternates after the canonical topic', async () => {
    const p = new RecordingPublisher();
    const id = await publishResource(p, {
      iri: '/books/1',
      baseUrl: 'https://example.com',
      data: { title: 'Dune', year: 1965 },
      topics: ['https://example.com/users/42/books/1'],
      private: true,
      type: 'Book',
    });
    expect(id).toMatch(/^urn:uuid:/);
    expect(p.last!.topics).toEqual(['https://example.com/books/1', 'https://example.com/users/42/books/1']);
    expect(p.last!.data).toBe('{"@id":"/books/1","title":"Dune","year":1965}');
    expect(p.last).toMatchObject({ private: true, type: 'Book' });

    await publishResource(p, { iri: 'https://example.com/books/2', data: { '@id': '/books/2', title: 'Emma' } });
    expect(p.last!.topics).toEqual(['https://example.com/books/2']);
    expect(p.last!.data).toBe('{"@id":"/books/2","title":"Emma"}');
    expect(p.last!.private).toBe(false);

    await publishResource(p, { iri: 'https://example.com/books', data: [{ a: 1 }] });
    expect(p.last!.data).toBe('[{"a":1}]');
    await publishResource(p, { iri: 'https://example.com/raw', data: '<book/>', updateId: 'urn:uuid:fixed' });
    expect(p.last).toMatchObject({ data: '<book/>', id: 'urn:uuid:fixed' });
    expect(() => publishResource(p, { iri: 'x', data: undefined })).toThrow(/JSON/);
  });

  it('publishes a deletion as {"@id": iri} on the resource topic', async () => {
    const p = new RecordingPublisher();
    await publishDeletion(p, '/books/1', { baseUrl: 'https://example.com', private: true, topics: ['https://example.com/shelves/3'] });
    expect(p.last!.topics).toEqual(['https://example.com/books/1', 'https://example.com/shelves/3']);
    expect(JSON.parse(p.last!.data)).toEqual({ '@id': '/books/1' });
    expect(p.last!.private).toBe(true);
    expect(resourceTopic('https://a.example/x', 'https://b.example')).toBe('https://a.example/x');
    expect(() => resourceTopic('')).toThrow(/empty/);
  });
});

/** A small books API behind autoPublish. `fail` makes handlers fail in the ways APIs do. */
async function booksApp(options: AutoPublishOptions): Promise<{ url: string; close(): Promise<void> }> {
  const books = new Map<number, Record<string, unknown>>([[1, { '@id': '/books/1', id: 1, title: 'Dune' }]]);
  let next = 2;
  const app = express();
  app.use(express.json());
  app.use('/books', autoPublish(options));
  app.get('/books/:id', (req, res) => {
    res.json(books.get(Number(req.params.id)) ?? null);
  });
  app.post('/books', (req, res) => {
    if (!req.body?.title) {
      res.status(422).json({ error: 'title required' });
      return;
    }
    const id = next++;
    const book = { '@id': `/books/${id}`, id, title: req.body.title as string };
    books.set(id, book);
    res.status(201).location(`/books/${id}`).json(book);
  });
  app.post('/books/no-id', (_req, res) => {
    // No "@id" in the body: the Location header names the resource.
    res.status(201).location('/books/99').json({ title: 'anonymous' });
  });
  app.put('/books/:id', (req, res) => {
    const id = Number(req.params.id);
    if (!books.has(id)) {
      res.status(404).json({ error: 'not found' });
      return;
    }
    const book = { id, title: req.body.title as string }; // no "@id": the request path is the IRI
    books.set(id, book);
    res.json(book);
  });
  app.patch('/books/:id', () => {
    throw new Error('handler crashed');
  });
  app.delete('/books/:id', (req, res) => {
    if (!books.delete(Number(req.params.id))) {
      res.status(404).end();
      return;
    }
    res.status(204).end();
  });
  app.delete('/books', (_req, res) => {
    res.type('text').send('refusing to delete everything');
  });
  const server = http.createServer(app);
  const url = await listen(server);
  return { url, close: () => close(server) };
}

const json = (method: string, body: unknown) => ({ method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

describe('autoPublish middleware', () => {
  it('create, update and delete publish the right JSON to the right topic', async () => {
    const publisher = new RecordingPublisher();
    const app = await booksApp({ publisher, baseUrl: 'https://example.com' });
    try {
      const created = await fetch(`${app.url}/books`, json('POST', { title: 'Emma' }));
      expect(created.status).toBe(201);
      const createdBody = await created.json();
      expect(publisher.updates).toHaveLength(1);
      expect(publisher.last!.topics).toEqual(['https://example.com/books/2']);
      expect(JSON.parse(publisher.last!.data)).toEqual(createdBody);
      expect(publisher.last!.private).toBe(false);

      await fetch(`${app.url}/books/no-id`, json('POST', {}));
      expect(publisher.last!.topics).toEqual(['https://example.com/books/99']);
      expect(JSON.parse(publisher.last!.data)).toEqual({ '@id': '/books/99', title: 'anonymous' });

      const updated = await fetch(`${app.url}/books/2?notify=1`, json('PUT', { title: 'Emma (annotated)' }));
      expect(updated.status).toBe(200);
      expect(publisher.last!.topics).toEqual(['https://example.com/books/2']);
      expect(JSON.parse(publisher.last!.data)).toEqual({ '@id': '/books/2', id: 2, title: 'Emma (annotated)' });

      const deleted = await fetch(`${app.url}/books/2`, { method: 'DELETE' });
      expect(deleted.status).toBe(204);
      expect(publisher.last!.topics).toEqual(['https://example.com/books/2']);
      expect(JSON.parse(publisher.last!.data)).toEqual({ '@id': '/books/2' });
      expect(publisher.updates).toHaveLength(4);
    } finally {
      await app.close();
    }
  });

  it('failed handlers, reads and non-JSON answers publish nothing', async () => {
    const publisher = new RecordingPublisher();
    const app = await booksApp({ publisher, baseUrl: 'https://example.com', onError: () => undefined });
    try {
      expect((await fetch(`${app.url}/books`, json('POST', {}))).status).toBe(422);
      expect((await fetch(`${app.url}/books/404`, json('PUT', { title: 'x' }))).status).toBe(404);
      expect((await fetch(`${app.url}/books/1`, json('PATCH', { title: 'x' }))).status).toBe(500);
      expect((await fetch(`${app.url}/books/404`, { method: 'DELETE' })).status).toBe(404);
      expect((await fetch(`${app.url}/books/1`)).status).toBe(200);
      expect((await fetch(`${app.url}/books`, { method: 'DELETE' })).status).toBe(200);
      await sleep(50);
      // The text/plain 200 to DELETE /books is still a delete: only its status counts.
      expect(publisher.updates.map((u) => u.data)).toEqual(['{"@id":"/books"}']);
    } finally {
      await app.close();
    }
  });

  it('custom iri, alternate topics, private per change, methods', async () => {
    const publisher = new RecordingPublisher();
    const app = await booksApp({
      publisher,
      baseUrl: (req) => `https://${req.headers['x-tenant'] as string}.example.com`,
      iri: (req, body) => (req.method === 'DELETE' ? `/archive${req.originalUrl}` : (body as { '@id'?: string })['@id']),
      topics: (change) => [`https://example.com/feed/${change.kind}`],
      private: (change) => change.kind === 'delete',
      methods: ['post', 'delete'],
    });
    try {
      await fetch(`${app.url}/books`, { ...json('POST', { title: 'Kim' }), headers: { 'Content-Type': 'application/json', 'X-Tenant': 'acme' } });
      expect(publisher.last!.topics).toEqual(['https://acme.example.com/books/2', 'https://example.com/feed/write']);
      expect(publisher.last!.private).toBe(false);
      await fetch(`${app.url}/books/2`, { ...json('PUT', { title: 'Kim' }), headers: { 'Content-Type': 'application/json', 'X-Tenant': 'acme' } });
      expect(publisher.updates).toHaveLength(1); // PUT is not in `methods`
      await fetch(`${app.url}/books/1`, { method: 'DELETE', headers: { 'X-Tenant': 'acme' } });
      expect(publisher.last!.topics).toEqual(['https://acme.example.com/archive/books/1', 'https://example.com/feed/delete']);
      expect(JSON.parse(publisher.last!.data)).toEqual({ '@id': '/archive/books/1' });
      expect(publisher.last!.private).toBe(true);
    } finally {
      await app.close();
    }
  });

  it('holds the response until the hub accepted the update (or not, with waitForHub: false)', async () => {
    const order: string[] = [];
    const slow = new MockPublisher(async () => {
      await sleep(150);
      order.push('published');
      return 'urn:uuid:slow';
    });
    const app = await booksApp({ publisher: slow, baseUrl: 'https://example.com' });
    try {
      const t0 = Date.now();
      await fetch(`${app.url}/books`, json('POST', { title: 'A' }));
      order.push('response');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
      expect(order).toEqual(['published', 'response']);
    } finally {
      await app.close();
    }
    order.length = 0;
    const app2 = await booksApp({ publisher: slow, baseUrl: 'https://example.com', waitForHub: false });
    try {
      await fetch(`${app2.url}/books`, json('POST', { title: 'B' }));
      order.push('response');
      await sleep(250);
      expect(order).toEqual(['response', 'published']);
    } finally {
      await app2.close();
    }
  });

  it('a failed publish goes to onError and never fails the request', async () => {
    const publisher = new RecordingPublisher().failAlways('unavailable');
    const errors: Array<[unknown, string]> = [];
    const app = await booksApp({ publisher, baseUrl: 'https://example.com', onError: (err, change) => errors.push([err, change.iri]) });
    try {
      const res = await fetch(`${app.url}/books`, json('POST', { title: 'C' }));
      expect(res.status).toBe(201);
      expect((await res.json()) as unknown).toMatchObject({ title: 'C' });
      expect(errors).toHaveLength(1);
      expect(errors[0]![0]).toBeInstanceOf(PublishError);
      expect(errors[0]![1]).toBe('/books/2');
    } finally {
      await app.close();
    }
    expect(() => autoPublish({} as never)).toThrow(/publisher/);
  });
});

describe('autoPublish on a real hub', () => {
  let h: TestHub;
  let app: { url: string; close(): Promise<void> };

  beforeAll(async () => {
    h = await startHub({ anonymous: true });
    const publisher = new Publisher({ hubUrl: h.hubUrl, token: await createPublisherToken({ key: KEY, publish: ['https://example.com/books/{id}'] }) });
    app = await booksApp({ publisher, baseUrl: 'https://example.com' });
  });
  afterAll(async () => {
    await app.close();
    await h.close();
  });

  it('a subscriber to /books/{id} sees the create, the update and the deletion, in order', async () => {
    const sse = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'https://example.com/books/{id}']]));
    try {
      await fetch(`${app.url}/books`, json('POST', { title: 'Middlemarch' }));
      await fetch(`${app.url}/books/2`, json('PUT', { title: 'Middlemarch (2nd ed.)' }));
      await fetch(`${app.url}/books/2`, { method: 'DELETE' });
      await sse.waitForEvents(3);
      expect(sse.events.map((e) => JSON.parse(e.data))).toEqual([
        { '@id': '/books/2', id: 2, title: 'Middlemarch' },
        { '@id': '/books/2', id: 2, title: 'Middlemarch (2nd ed.)' },
        { '@id': '/books/2' },
      ]);
    } finally {
      sse.close();
    }
  });
});
