// A REST resource published on every change, like API Platform's `mercure: true`:
// POST/PUT/PATCH/DELETE on /books publish the new JSON (or {"@id": …} for a deletion) on the
// book's IRI, through quicksilver/resource's autoPublish middleware. The page at / discovers the
// hub from the Link header of /books and keeps its list live.
//
//   npm run example:books-api              # then open http://localhost:3010/ in two windows
//   curl -X POST localhost:3010/books -H 'Content-Type: application/json' -d '{"title":"Dune","author":"Frank Herbert"}'
//
// One Express app serves the API and the page and mounts the hub (app.use(hub.handler)).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { createHub, createLogger } from 'quicksilver';
import { mercure } from 'quicksilver/express';
import { Publisher } from 'quicksilver/publisher';
import { autoPublish } from 'quicksilver/resource';
import { createPublisherToken, createTokenProvider } from 'quicksilver/token';
import { choosePort } from '../port.mjs';

const HOST = process.env.HOST ?? '127.0.0.1';
const PORT = await choosePort({ name: 'books-api', host: HOST, explicit: process.env.PORT, fallback: 3010 });
const KEY = process.env.MERCURE_JWT_SECRET ?? '!ChangeThisMercureHubJWTSecretKey!';
const HUB_PATH = '/.well-known/mercure';
const here = dirname(fileURLToPath(import.meta.url));
const distClient = join(here, '../../dist/client');

// ---------------------------------------------------------------------------------------------
// An in-memory store. Resources carry their IRI in "@id", as JSON-LD (and API Platform) do.

const books = new Map();
let nextId = 1;
const iriOf = (id) => `/books/${id}`;
function save(id, fields) {
  const book = { '@id': iriOf(id), '@type': 'Book', id, title: fields.title, author: fields.author, year: fields.year ?? null, status: fields.status ?? 'available' };
  books.set(id, book);
  return book;
}
save(nextId++, { title: 'The Left Hand of Darkness', author: 'Ursula K. Le Guin', year: 1969 });
save(nextId++, { title: 'Dune', author: 'Frank Herbert', year: 1965, status: 'on loan' });

const STATUSES = ['available', 'on loan', 'lost'];
/** Validates a full (PUT/POST) or partial (PATCH) representation; returns the error or null. */
function invalid(body, partial) {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'a JSON object';
  for (const f of ['title', 'author']) {
    if (!partial || f in body) {
      if (typeof body[f] !== 'string' || body[f].trim() === '') return `"${f}" must be a non-empty string`;
    }
  }
  if ('year' in body && body.year !== null && !Number.isInteger(body.year)) return '"year" must be an integer or null';
  if ('status' in body && !STATUSES.includes(body.status)) return `"status" must be one of ${STATUSES.join(', ')}`;
  return null;
}

// ---------------------------------------------------------------------------------------------
// The app.

const app = express();
app.disable('x-powered-by');
const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: createLogger('warn') });
app.use(hub.handler); // the hub's routes; everything else falls through

// The base of the topics (the books' absolute IRIs): http://localhost:3010/books/1, …
const publicUrl = process.env.PUBLIC_URL ?? `http://localhost:${PORT}`;
// The app publishes over HTTP with a publisher token, as it would to a separate hub.
const publisher = new Publisher({
  hubUrl: `http://127.0.0.1:${PORT}${HUB_PATH}`,
  token: createTokenProvider(() => createPublisherToken({ key: KEY, publish: [`${publicUrl}/books/{id}`], exp: '1h' })),
});

// Discovery on the API: Link: </.well-known/mercure>; rel="mercure"; last-event-id="…", <IRI>; rel="self".
// The page subscribes to <self>/{id} from that last-event-id: nothing published in between is missed.
const discovery = mercure({
  hubUrl: HUB_PATH,
  lastEventId: () => hub.hub.lastEventId(),
  self: (req) => new URL(req.originalUrl.split('?')[0], publicUrl).href,
});

const api = express.Router();
api.use(express.json({ type: ['application/json', 'application/ld+json', 'application/merge-patch+json'] }));
// Successful writes publish their JSON on the book's IRI; a 2xx DELETE publishes {"@id": iri}.
api.use(autoPublish({ publisher, baseUrl: publicUrl }));

api.get('/', discovery, (_req, res) => {
  res.json({ '@id': '/books', '@type': 'Collection', totalItems: books.size, member: [...books.values()] });
});
api.get('/:id', discovery, (req, res) => {
  const book = books.get(Number(req.params.id));
  if (!book) return res.status(404).json({ error: 'Not found' });
  res.json(book);
});
api.post('/', (req, res) => {
  const error = invalid(req.body, false);
  if (error) return res.status(422).json({ error });
  const book = save(nextId++, req.body);
  res.status(201).location(book['@id']).json(book);
});
api.put('/:id', (req, res) => {
  const id = Number(req.params.id);
  if (!books.has(id)) return res.status(404).json({ error: 'Not found' });
  const error = invalid(req.body, false);
  if (error) return res.status(422).json({ error });
  res.json(save(id, req.body));
});
api.patch('/:id', (req, res) => {
  const id = Number(req.params.id);
  const book = books.get(id);
  if (!book) return res.status(404).json({ error: 'Not found' });
  const error = invalid(req.body, true);
  if (error) return res.status(422).json({ error });
  res.json(save(id, { ...book, ...req.body }));
});
api.delete('/:id', (req, res) => {
  if (!books.delete(Number(req.params.id))) return res.status(404).json({ error: 'Not found' });
  res.status(204).end();
});
app.use('/books', api);

// The page, and the browser builds of quicksilver/discovery and quicksilver/subscriber (no bundler).
app.use('/quicksilver', express.static(distClient));
app.use(express.static(join(here, 'public')));

const server = app.listen(PORT, HOST);
await new Promise((resolve, reject) => server.once('listening', resolve).once('error', reject));
const shown = HOST === '127.0.0.1' || HOST === '0.0.0.0' || HOST === '::' ? 'localhost' : HOST;
console.log(`Books API: http://${shown}:${PORT}/ (API at /books, hub at ${HUB_PATH})`);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await hub.close();
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
