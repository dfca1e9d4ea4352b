// Private, per-user notifications with cookie authorization. Logging in (/login?user=alice) sets
// the mercureAuthorization cookie: a subscriber token granting only
// https://example.com/users/alice/notifications. Notifications are published private on each
// user's topic. Every page subscribes to ALL users' topics (the URI template
// https://example.com/users/{user}/notifications), yet the hub delivers to each only what its
// cookie grants: alice never sees bob's.
//
//   npm run example:private-notifications  # then open http://localhost:3020/login?user=alice
//                                          # and, in a private window, /login?user=bob
//
// The hub runs on its own port (createHub + serve), as a separate hub would: the page's
// EventSource is cross-origin, with `withCredentials` so that the browser sends the cookie.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { createHub, createLogger, serve } from 'quicksilver';
import { clearAuthorizationCookie, setAuthorizationCookie } from 'quicksilver/discovery';
import { mercure } from 'quicksilver/express';
import { Publisher } from 'quicksilver/publisher';
import { createPublisherToken, createSubscriberToken, createTokenProvider } from 'quicksilver/token';
import { choosePort } from '../port.mjs';

const HOST = process.env.HOST ?? '127.0.0.1';
const PORT = await choosePort({ name: 'private-notifications', host: HOST, explicit: process.env.PORT, fallback: 3020 });
const HUB_PORT = await choosePort({ name: 'private-notifications (hub)', host: HOST, explicit: process.env.HUB_PORT, fallback: PORT + 1, variable: 'HUB_PORT' });
const PUBLISHER_KEY = process.env.MERCURE_PUBLISHER_JWT_KEY ?? '!ChangeThisMercureHubJWTSecretKey!';
const SUBSCRIBER_KEY = process.env.MERCURE_SUBSCRIBER_JWT_KEY ?? '!ChangeThisSubscriberJWTSecretKey!';
const here = dirname(fileURLToPath(import.meta.url));

const USERS = ['alice', 'bob', 'carol'];
const topicOf = (user) => `https://example.com/users/${user}/notifications`;
/** What every page subscribes to: every user's notifications. The cookie decides what arrives. */
const ALL_TOPICS = 'https://example.com/users/{user}/notifications';

// ---------------------------------------------------------------------------------------------
// The hub: no anonymous subscribers; the app's origins may open cross-origin streams with cookies.

const hub = createHub({
  publisher: { key: PUBLISHER_KEY },
  subscriber: { key: SUBSCRIBER_KEY },
  corsOrigins: process.env.APP_ORIGINS?.split(/[\s,]+/).filter(Boolean) ?? [`http://localhost:${PORT}`, `http://127.0.0.1:${PORT}`],
  logger: createLogger('warn'),
});
const hubServer = await serve(hub, { addr: `${HOST}:${HUB_PORT}`, shutdownTimeout: 2000 });

/** The hub URL as the browser reaches it: same host name as the page (so the cookie goes along), hub port. */
const hubUrlFor = (req) => `${req.protocol}://${req.hostname.includes(':') ? `[${req.hostname}]` : req.hostname}:${HUB_PORT}/.well-known/mercure`;

const publisher = new Publisher({
  hubUrl: `http://127.0.0.1:${HUB_PORT}/.well-known/mercure`,
  token: createTokenProvider(() => createPublisherToken({ key: PUBLISHER_KEY, publish: [ALL_TOPICS], exp: '1h' })),
});

// ---------------------------------------------------------------------------------------------
// A fake session: a `user` cookie.

function sessionUser(req) {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [name, value] = part.trim().split('=');
    if (name === 'user' && USERS.includes(value)) return value;
  }
  return null;
}

const app = express();
app.disable('x-powered-by');
app.use(express.urlencoded({ extended: false }));
app.use(express.json());
app.use(express.static(join(here, 'public')));

app.get('/login', async (req, res) => {
  const user = String(req.query.user ?? '');
  if (!USERS.includes(user)) return res.status(400).send(`Unknown user; try ${USERS.map((u) => `/login?user=${u}`).join(', ')}`);
  res.setHeader('Set-Cookie', `user=${user}; Path=/; HttpOnly; SameSite=Lax`);
  // The subscriber token: this user's notifications, nothing else.
  const token = await createSubscriberToken({ key: SUBSCRIBER_KEY, subscribe: [topicOf(user)], payload: { user }, exp: '1h' });
  setAuthorizationCookie(res, token, { hubUrl: hubUrlFor(req) }); // HttpOnly; SameSite=Strict; Path=/.well-known/mercure
  res.redirect(303, '/');
});

app.get('/logout', (req, res) => {
  res.setHeader('Set-Cookie', 'user=; Path=/; Max-Age=0');
  clearAuthorizationCookie(res, { hubUrl: hubUrlFor(req) });
  res.redirect(303, '/');
});

// On every page: Link: <hub>; rel="mercure", and a fresh cookie for the logged-in user (or the
// cookie cleared for a visitor who has none). res.locals.mercure.absoluteHubUrl is for the page.
const mercureAuth = mercure({
  hubUrl: hubUrlFor,
  key: SUBSCRIBER_KEY,
  authorize: (req) => {
    const user = sessionUser(req);
    return user ? { subscribe: [topicOf(user)], payload: { user } } : null;
  },
});

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

app.get('/', mercureAuth, (req, res) => {
  const user = sessionUser(req);
  res.type('html');
  if (!user) {
    return res.send(`<!doctype html><meta charset="utf-8"><title>Log in</title><link rel="stylesheet" href="/style.css"><link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Ccircle cx='8' cy='8' r='7' fill='%238a94a8'/%3E%3C/svg%3E">
<main class="login"><h1>Private notifications</h1><p>Log in as:</p><p>${USERS.map((u) => `<a class="button" href="/login?user=${u}">${u}</a>`).join(' ')}</p>
<p class="muted">Use another browser (or a private window) for a second user.</p></main>`);
  }
  const config = { user, hubUrl: res.locals.mercure.absoluteHubUrl, topic: ALL_TOPICS, users: USERS };
  res.send(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(user)}'s notifications</title>
<link rel="stylesheet" href="/style.css"><link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Ccircle cx='8' cy='8' r='7' fill='%238a94a8'/%3E%3C/svg%3E"><script type="application/json" id="config">${JSON.stringify(config).replace(/</g, '\\u003c')}</script>
<script type="module" src="/app.mjs"></script></head>
<body><header class="topbar"><strong>Notifications</strong><span class="who">signed in as <b id="user">${esc(user)}</b> · <a href="/logout">log out</a></span>
<span id="status" class="status" data-state="connecting">connecting…</span></header>
<main>
  <form id="send" class="send"><label>To <select name="to">${USERS.map((u) => `<option${u === USERS.find((x) => x !== user) ? ' selected' : ''}>${u}</option>`).join('')}</select></label>
    <input name="text" placeholder="Say something private" required maxlength="200"><button>Send</button>
    <span id="sent" class="sent" role="status" aria-live="polite"></span></form>
  <p class="explain">This page subscribes to <code>${esc(ALL_TOPICS)}</code>: every user's topic. The hub still
    delivers only the private updates the <code>mercureAuthorization</code> cookie grants: <code>${esc(topicOf(user))}</code>.</p>
  <ul id="notifications"></ul><p id="none" class="muted">Nothing yet.</p>
</main></body></html>`);
});

app.post('/notify', async (req, res) => {
  const from = sessionUser(req) ?? 'system';
  const to = String(req.body?.to ?? '');
  const text = String(req.body?.text ?? '').trim().slice(0, 200);
  if (!USERS.includes(to) || text === '') return res.status(422).json({ error: 'give `to` (a user) and `text`' });
  const notification = { to, from, text, at: new Date().toISOString() };
  // Private: only subscribers whose token grants the recipient's topic receive it.
  const id = await publisher.publish({ topics: topicOf(to), data: JSON.stringify(notification), private: true });
  res.status(202).json({ id, ...notification });
});

const server = app.listen(PORT, HOST);
await new Promise((resolve, reject) => server.once('listening', resolve).once('error', reject));
const shown = HOST === '127.0.0.1' || HOST === '0.0.0.0' || HOST === '::' ? 'localhost' : HOST;
console.log(`Private notifications: http://${shown}:${PORT}/login?user=alice (hub at http://${shown}:${HUB_PORT}/.well-known/mercure)`);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await hubServer.close();
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
