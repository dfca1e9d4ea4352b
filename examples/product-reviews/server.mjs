// Product reviews, live: a review submitted in one browser appears at once in every other page
// open on that product, and the quick stats (count, average, distribution) update, through Turbo
// Streams pushed by Quicksilver. The submitter gets the usual 303 redirect back to the page.
//
//   npm run example:product-reviews        # then open http://localhost:3030/ in two windows
//
// One Fastify app serves the pages and mounts the hub (quicksilver/fastify); the page holds a
// <turbo-stream-source> (quicksilver/turbo) and Turbo (served from node_modules, no CDN).
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { createHub, createLogger } from 'quicksilver';
import { mercure, mercureHub } from 'quicksilver/fastify';
import { Publisher } from 'quicksilver/publisher';
import { createPublisherToken, createTokenProvider } from 'quicksilver/token';
import { escapeHtml, publishTurboStream, turboStream, turboStreamSource } from 'quicksilver/turbo';
import { choosePort } from '../port.mjs';

const HOST = process.env.HOST ?? '127.0.0.1';
// 3030, not 3000: that is where `npm start` runs its development hub.
const PORT = await choosePort({ name: 'product-reviews', host: HOST, explicit: process.env.PORT, fallback: 3030 });
const KEY = process.env.MERCURE_JWT_SECRET ?? '!ChangeThisMercureHubJWTSecretKey!';
const HUB_PATH = '/.well-known/mercure';
const here = dirname(fileURLToPath(import.meta.url));
const turboFile = join(dirname(createRequire(import.meta.url).resolve('@hotwired/turbo')), 'turbo.es2017-esm.js');

// ---------------------------------------------------------------------------------------------
// An in-memory catalogue.

const products = new Map([
  ['quicksilver-barometer', {
    slug: 'quicksilver-barometer',
    name: 'Quicksilver Barometer',
    price: '€129',
    tagline: 'A brass mercury barometer, hand-calibrated. Knows the weather before your phone does.',
    hue: 205,
    reviews: [
      { id: 1, author: 'Ada', rating: 5, text: 'Beautiful instrument, and it predicted Sunday\'s storm.', at: '2025-03-02 09:14' },
      { id: 2, author: 'Linus', rating: 4, text: 'Lovely brass. Took a day to settle after shipping.', at: '2025-03-05 18:40' },
    ],
  }],
  ['winged-sandals', {
    slug: 'winged-sandals',
    name: 'Winged Sandals',
    price: '€89',
    tagline: 'As worn by the messenger of the gods. Deliveries at the speed of thought.',
    hue: 32,
    reviews: [],
  }],
]);
let nextReviewId = 3;

const FAVICON = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="hsl(205 55% 45%)"/></svg>';

/** The Mercure topic of a product: every page of the product listens to it. */
const topicOf = (product) => `https://example.com/products/${product.slug}`;

// ---------------------------------------------------------------------------------------------
// Rendering (shared by the page and the streams, so both always agree).

const stars = (rating) => `<span class="stars" aria-label="${rating} out of 5">${'★'.repeat(rating)}<span class="off">${'★'.repeat(5 - rating)}</span></span>`;

function stats(product) {
  const n = product.reviews.length;
  const avg = n === 0 ? 0 : product.reviews.reduce((s, r) => s + r.rating, 0) / n;
  const bars = [5, 4, 3, 2, 1].map((r) => {
    const count = product.reviews.filter((x) => x.rating === r).length;
    const pct = n === 0 ? 0 : Math.round((count / n) * 100);
    return `<div class="bar"><span>${r}★</span><span class="track"><span class="fill" style="width:${pct}%"></span></span><span>${count}</span></div>`;
  }).join('');
  return `<div class="average"><strong data-testid="average">${n === 0 ? '–' : avg.toFixed(1)}</strong>${stars(Math.round(avg))}
    <span class="count" data-testid="count">${n} review${n === 1 ? '' : 's'}</span></div><div class="bars">${bars}</div>`;
}

const reviewItem = (review, isNew = false) => `<li id="review_${review.id}" class="review${isNew ? ' new' : ''}">
  <div class="review-head">${stars(review.rating)}<strong>${escapeHtml(review.author)}</strong><time>${escapeHtml(review.at)}</time></div>
  <p>${escapeHtml(review.text)}</p></li>`;

// Ids are document-wide, and the home page draws every product: each gradient has its own id, or
// every picture would be painted with the first one's colour.
const art = (hue, key) => `<svg viewBox="0 0 200 200" class="art" aria-hidden="true">
  <defs><radialGradient id="glow-${key}" cx="35%" cy="30%"><stop offset="0" stop-color="hsl(${hue} 90% 92%)"/><stop offset="1" stop-color="hsl(${hue} 55% 45%)"/></radialGradient></defs>
  <circle cx="100" cy="100" r="78" fill="url(#glow-${key})"/><circle cx="100" cy="100" r="58" fill="none" stroke="hsl(${hue} 40% 25% / .35)" stroke-width="3" stroke-dasharray="2 9"/>
  <path d="M100 100 L138 70" stroke="hsl(${hue} 50% 18%)" stroke-width="5" stroke-linecap="round"/><circle cx="100" cy="100" r="8" fill="hsl(${hue} 50% 18%)"/></svg>`;

function layout(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · Quicksilver Store</title><link rel="stylesheet" href="/assets/style.css">
<link rel="icon" href="/assets/favicon.svg" type="image/svg+xml">
<script type="module" src="/assets/turbo.js"></script></head>
<body><header class="topbar"><a href="/" class="brand">☿ Quicksilver Store</a><span class="hint">live reviews · Turbo Streams over Mercure</span></header>${body}</body></html>`;
}

function productPage(product, form = {}) {
  const { error, values = {} } = form;
  const rating = Number(values.rating ?? 5);
  return layout(product.name, `
${turboStreamSource(HUB_PATH, [topicOf(product)])}
<main class="product">
  <section class="card">
    ${art(product.hue, product.slug)}
    <h1>${escapeHtml(product.name)}</h1>
    <p class="price">${escapeHtml(product.price)}</p>
    <p class="tagline">${escapeHtml(product.tagline)}</p>
    <div id="quick-stats" class="stats">${stats(product)}</div>
  </section>
  <section class="reviews-panel">
    <h2>Reviews</h2>
    <form method="post" action="/products/${product.slug}/reviews" class="review-form">
      ${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
      <div class="row"><label>Your name <input name="author" maxlength="40" value="${escapeHtml(values.author ?? '')}" placeholder="Anonymous"></label>
      <label>Rating <select name="rating">${[5, 4, 3, 2, 1].map((r) => `<option value="${r}"${r === rating ? ' selected' : ''}>${'★'.repeat(r)}${'☆'.repeat(5 - r)}</option>`).join('')}</select></label></div>
      <label>Review <textarea name="text" rows="3" maxlength="1000" required placeholder="What did you think?">${escapeHtml(values.text ?? '')}</textarea></label>
      <button type="submit">Post review</button>
    </form>
    ${product.reviews.length === 0 ? '<p id="no-reviews" class="empty">No reviews yet: be the first!</p>' : ''}
    <ul id="reviews">${[...product.reviews].reverse().map((r) => reviewItem(r)).join('')}</ul>
  </section>
</main>`);
}

function homePage() {
  const items = [...products.values()].map((p) => `<li><a href="/products/${p.slug}">${art(p.hue, p.slug)}<span>${escapeHtml(p.name)}</span><small>${p.reviews.length} reviews</small></a></li>`).join('');
  return layout('Products', `<main class="home"><h1>Products</h1><ul class="catalogue">${items}</ul>
<p class="tagline">Open a product in two windows, post a review in one, watch the other.</p></main>`);
}

// ---------------------------------------------------------------------------------------------
// The app.

const app = Fastify({ logger: false });
const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: createLogger('warn') });
// The hub's routes; its own scope leaves request bodies to the hub.
await app.register(mercureHub, { hub, health: true });
// Discovery on the product pages: Link: </.well-known/mercure>; rel="mercure", <topic>; rel="self".
await app.register(mercure, {
  hubUrl: HUB_PATH,
  self: (req) => (req.params?.slug && products.has(req.params.slug) ? topicOf(products.get(req.params.slug)) : undefined),
});
// Forms: application/x-www-form-urlencoded (the hub's scope keeps its own handling).
app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
  done(null, Object.fromEntries(new URLSearchParams(body)));
});

// The app publishes over HTTP with a publisher token, as it would to a separate hub.
const publisher = new Publisher({
  hubUrl: `http://127.0.0.1:${PORT}${HUB_PATH}`,
  token: createTokenProvider(() => createPublisherToken({ key: KEY, publish: ['https://example.com/products/{slug}'], exp: '1h' })),
});

app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').send(homePage()));
app.get('/assets/turbo.js', async (_req, reply) => reply.type('text/javascript; charset=utf-8').send(await readFile(turboFile)));
app.get('/assets/favicon.svg', async (_req, reply) => reply.type('image/svg+xml').send(FAVICON));
app.get('/assets/style.css', async (_req, reply) => reply.type('text/css; charset=utf-8').send(await readFile(join(here, 'public/style.css'))));

app.get('/products/:slug', async (req, reply) => {
  const product = products.get(req.params.slug);
  if (!product) return reply.code(404).type('text/html; charset=utf-8').send(layout('Not found', '<main class="home"><h1>No such product</h1></main>'));
  return reply.type('text/html; charset=utf-8').send(productPage(product));
});

app.post('/products/:slug/reviews', async (req, reply) => {
  const product = products.get(req.params.slug);
  if (!product) return reply.code(404).send('No such product');
  const values = req.body ?? {};
  const rating = Number(values.rating);
  const text = String(values.text ?? '').trim();
  const author = String(values.author ?? '').trim().slice(0, 40) || 'Anonymous';
  if (!Number.isInteger(rating) || rating < 1 || rating > 5 || text === '') {
    // Turbo renders a 422 answer in place: the form comes back with the error.
    return reply.code(422).type('text/html; charset=utf-8').send(productPage(product, { error: 'Give a rating from 1 to 5 and a few words.', values }));
  }
  const review = { id: nextReviewId++, author, rating, text: text.slice(0, 1000), at: new Date().toISOString().slice(0, 16).replace('T', ' ') };
  product.reviews.push(review);
  // Every page of the product (the submitter's too) gets the review and the new stats.
  await publishTurboStream(publisher, topicOf(product), [
    turboStream('prepend', 'reviews', reviewItem(review, true)),
    turboStream('update', 'quick-stats', stats(product)),
    turboStream('remove', 'no-reviews'),
  ]);
  // The submitter still gets a redirect, as after any successful form post.
  return reply.redirect(`/products/${product.slug}`, 303);
});

await app.listen({ host: HOST, port: PORT });
const shown = HOST === '127.0.0.1' || HOST === '0.0.0.0' || HOST === '::' ? 'localhost' : HOST;
console.log(`Product reviews: http://${shown}:${PORT}/ (hub at http://${shown}:${PORT}${HUB_PATH})`);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    app.close().then(() => process.exit(0), () => process.exit(1));
  });
}
