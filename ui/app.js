// Quicksilver debugging UI. Plain browser JavaScript, no build step, no external resources: the
// hub serves this page with `Content-Security-Policy: default-src 'self'`, so everything here is
// same-origin and no inline script or style is used.

const SUBSCRIPTIONS_SUFFIX = '/subscriptions';
const WATCH_PATTERN = '/.well-known/mercure/subscriptions/*';
const MAX_EVENTS = 500;

const $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
};

/** Builds an element: h('span', { class: 'x', text: 'y' }, child…). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') el.textContent = v;
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

const pageHub = new URL('..', location.href).href.replace(/\/$/, '');
const demoBase = new URL('demo/', location.href);
const config = { hubUrl: pageHub, cookieName: 'mercureAuthorization', demo: false, devToken: undefined };

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

const settings = {
  hubUrl() {
    const v = $('hub-url').value.trim();
    return v || pageHub;
  },
  auth() {
    return document.querySelector('input[name="auth"]:checked')?.value ?? 'none';
  },
  jwt() {
    return $('jwt').value.trim();
  },
  /** fetch() options carrying the configured authorization. */
  init(extra = {}) {
    const headers = new Headers(extra.headers ?? {});
    const mode = this.auth();
    const token = this.jwt();
    if (mode === 'header' && token) headers.set('Authorization', `Bearer ${token}`);
    // 'omit' keeps a stale cookie from authorizing requests when another mode is chosen.
    return { ...extra, headers, credentials: mode === 'cookie' ? 'include' : 'omit' };
  },
};

function decodeJwt(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const json = (s) => JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(s.length / 4) * 4, '=')), (c) => c.charCodeAt(0))));
    return { header: json(parts[0]), payload: json(parts[1]) };
  } catch {
    return null;
  }
}

function describeToken() {
  const token = settings.jwt();
  const claims = $('claims');
  const note = $('jwt-note');
  if (!token) {
    claims.hidden = true;
    note.textContent = '';
    return;
  }
  const decoded = decodeJwt(token);
  claims.hidden = false;
  if (!decoded) {
    $('claims-body').textContent = 'Not a JWT (expected three base64url parts separated by dots).';
    note.textContent = '(not a JWT)';
    return;
  }
  const p = decoded.payload;
  const bits = [];
  if (token === config.devToken) bits.push('development token');
  if (decoded.header.typ && /at\+jwt/i.test(decoded.header.typ)) bits.push('draft-08 access token');
  else if (p.mercure || p['https://mercure.rocks/']) bits.push('draft-07 token');
  if (typeof p.exp === 'number') {
    const left = p.exp * 1000 - Date.now();
    bits.push(left <= 0 ? 'EXPIRED' : `expires ${new Date(p.exp * 1000).toLocaleString()}`);
  }
  note.textContent = bits.length ? `(${bits.join(', ')})` : '';
  $('claims-body').textContent = JSON.stringify(decoded, null, 2);
}

function updateAuthHint() {
  const mode = settings.auth();
  const hint = $('auth-hint');
  if (mode === 'none') {
    hint.textContent = 'Anonymous: subscribing works when the hub allows anonymous subscribers (public updates only); publishing needs a token.';
  } else if (mode === 'header') {
    hint.textContent = 'Sent as "Authorization: Bearer <JWT>". Browsers cannot add headers to EventSource, so subscriptions use a fetch() stream.';
  } else if (config.demo) {
    hint.textContent = `Stored by the hub's demo endpoint in the ${config.cookieName} cookie (Path /.well-known/mercure), which EventSource and fetch() then send. Publishing with a cookie needs the page's origin in publish_origins.`;
  } else {
    hint.textContent = `The ${config.cookieName} cookie must already be set by your application: this hub's demo endpoint, which can set it, is off (enable "demo").`;
  }
}

/** Cookie mode: the demo endpoint stores the JWT in the hub's cookie; other modes remove it. */
async function syncCookie() {
  if (!config.demo) return;
  const url = new URL('cookie', demoBase);
  const token = settings.jwt();
  if (settings.auth() === 'cookie' && token) url.searchParams.set('jwt', token);
  try {
    await fetch(url, { credentials: 'include', cache: 'no-store' });
  } catch {
    // The next request reports the problem.
  }
}

let cookieSync = Promise.resolve();
/** Header auth forces the fetch() client; EventSource-only fields are hidden when fetch() is used. */
let chosenClient = 'auto';
function updateClientFields(e) {
  const select = $('sub-client');
  if (e?.target === select) chosenClient = select.value;
  const header = settings.auth() === 'header';
  select.disabled = header;
  select.value = header ? 'fetch' : chosenClient;
  select.title = header ? 'Header authorization needs fetch(): EventSource cannot send headers' : '';
  $('sub-types-field').hidden = select.value === 'fetch';
}

function settingsChanged() {
  describeToken();
  updateAuthHint();
  updateClientFields();
  $('hub-label').textContent = settings.hubUrl();
  cookieSync = syncCookie();
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events over fetch() (any header; every event type), and EventSource
// ---------------------------------------------------------------------------------------------

/** Parses an SSE stream per the HTML standard; calls onEvent({ type, data, id }) per event. */
async function readEventStream(body, handlers, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
  let buffer = '';
  let data = [];
  let type = '';
  const line = (l) => {
    if (l === '') {
      if (data.length > 0) handlers.onEvent({ type: type || 'message', data: data.join('\n'), id: handlers.lastId() ?? '' });
      data = [];
      type = '';
      return;
    }
    if (l.startsWith(':')) return;
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') type = value;
    else if (field === 'id' && !value.includes('\0')) handlers.setLastId(value);
    else if (field === 'retry' && /^\d+$/.test(value)) handlers.setRetry(Number(value));
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let m;
    const eol = /\r\n|\r|\n/g;
    let start = 0;
    while ((m = eol.exec(buffer))) {
      // A lone CR at the end may be the first half of a CRLF split across chunks.
      if (m[0] === '\r' && m.index === buffer.length - 1) break;
      line(buffer.slice(start, m.index));
      start = m.index + m[0].length;
    }
    buffer = buffer.slice(start);
  }
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

/**
 * A subscription over fetch(): reconnects like EventSource (after `retry`, with Last-Event-ID),
 * but gives up on a non-200 answer and reports its status and body.
 */
function fetchStream(url, init, cb, lastEventId) {
  const ctrl = new AbortController();
  let lastId = lastEventId || null;
  let retry = 3000;
  (async () => {
    let first = true;
    while (!ctrl.signal.aborted) {
      cb.status(first ? 'connecting' : 'reconnecting');
      first = false;
      const headers = new Headers(init.headers);
      headers.set('Accept', 'text/event-stream');
      if (lastId !== null) {
        try { headers.set('Last-Event-ID', lastId); } catch { /* not a valid header value */ }
      }
      let res;
      try {
        res = await fetch(url, { ...init, headers, cache: 'no-store', signal: ctrl.signal });
      } catch {
        if (ctrl.signal.aborted) return;
        await sleep(retry, ctrl.signal);
        continue;
      }
      const type = res.headers.get('content-type') ?? '';
      if (!res.ok || !type.startsWith('text/event-stream')) {
        const text = await res.text().catch(() => '');
        cb.fail({ status: res.status, statusText: res.statusText, text, headers: res.headers });
        return;
      }
      cb.status('open');
      try {
        await readEventStream(res.body, {
          onEvent: cb.event,
          lastId: () => lastId,
          setLastId: (v) => { lastId = v; },
          setRetry: (v) => { retry = v; },
        }, ctrl.signal);
      } catch {
        // network error: reconnect below
      }
      if (ctrl.signal.aborted) return;
      await sleep(retry, ctrl.signal);
    }
  })();
  return { close: () => ctrl.abort(), kind: 'fetch' };
}

/** A subscription with the browser's EventSource (sends cookies; cannot send headers). */
function eventSource(url, types, cb) {
  const es = new EventSource(url, { withCredentials: settings.auth() === 'cookie' });
  const onMessage = (e) => cb.event({ type: e.type, data: e.data, id: e.lastEventId });
  es.addEventListener('message', onMessage);
  for (const t of new Set(['mercure', ...types])) es.addEventListener(t, onMessage);
  es.onopen = () => cb.status('open');
  es.onerror = () => {
    if (es.readyState === EventSource.CONNECTING) {
      cb.status('reconnecting');
      return;
    }
    // EventSource hides the status of a refused connection: ask again with fetch() to show it.
    es.close();
    const ctrl = new AbortController();
    fetch(url, settings.init({ cache: 'no-store', signal: ctrl.signal })).then(
      async (res) => {
        if (res.ok) {
          ctrl.abort();
          cb.fail({ status: 0, text: 'The connection was closed. Connect again to resume.' });
        } else {
          cb.fail({ status: res.status, statusText: res.statusText, text: await res.text().catch(() => ''), headers: res.headers });
        }
      },
      () => cb.fail({ status: 0, text: 'The hub cannot be reached.' }),
    );
  };
  return { close: () => es.close(), kind: 'eventsource' };
}

/** Opens a subscription with the client the settings call for. */
function openStream(url, { forceFetch = false, types = [], lastEventId = '' }, cb) {
  if (forceFetch || settings.auth() === 'header') {
    return fetchStream(url, settings.init(), cb, lastEventId);
  }
  return eventSource(url, types, cb);
}

function statusText(s) {
  return { idle: 'Not connected', connecting: 'Connecting…', open: 'Connected', reconnecting: 'Reconnecting…', closed: 'Disconnected', error: 'Error' }[s] ?? s;
}

function setStatus(el, state, text) {
  el.dataset.state = state;
  el.textContent = text ?? statusText(state);
}

/** What to do about a refused request, or ''. */
function hintFor(status, what) {
  if (status === 401) {
    return settings.auth() === 'none'
      ? `${what} needs a token: choose "Authorization header" (or "Cookie") in Settings and paste a JWT.`
      : 'The token was refused: check that it is signed with the hub\'s key and not expired (draft-08: that its audience is this hub).';
  }
  if (status === 403) return 'The token is valid but does not grant this.';
  return '';
}

/** A human explanation of a refused request: status, the hub's message, and a hint. */
function explain(status, text, what) {
  const body = (text || '').trim();
  if (status === 0) return body;
  return [`${status}${body ? `: ${body}` : ''}`, hintFor(status, what)].filter(Boolean).join('\n');
}

// ---------------------------------------------------------------------------------------------
// Subscribe
// ---------------------------------------------------------------------------------------------

const subscribe = {
  stream: null,
  count: 0,
  /** (kind, match) pairs of the open subscription, to recognise it in the subscriptions list. */
  params: [],
};

function lines(text) {
  return text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
}

function subscribeUrl(kind, topics, lastEventId, forQuery) {
  const url = new URL(settings.hubUrl());
  for (const t of topics) url.searchParams.append(kind, t);
  if (lastEventId && forQuery) url.searchParams.set(kind === 'topic' ? 'lastEventID' : 'last_event_id', lastEventId);
  return url;
}

function addEvent(ev) {
  subscribe.count += 1;
  $('sub-count').textContent = String(subscribe.count);
  $('events-empty').hidden = true;
  const now = new Date();
  const time = `${now.toLocaleTimeString([], { hour12: false })}.${String(now.getMilliseconds()).padStart(3, '0')}`;
  const item = h('li', { class: 'event fresh', dataset: { kind: ev.type === 'mercure' ? 'mercure' : 'update' } },
    h('div', { class: 'event-meta' },
      h('time', { class: 'event-time', datetime: now.toISOString(), text: time }),
      h('span', { class: 'event-type', text: ev.type, title: 'Event type' }),
      ev.id ? h('span', { class: 'event-id', text: ev.id, title: 'Event id' }) : null),
    h('pre', { class: ev.data === '' ? 'event-data blank' : 'event-data', text: ev.data === '' ? '(empty data)' : ev.data }));
  const list = $('events');
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function stopSubscribe(state = 'closed', text) {
  subscribe.stream?.close();
  subscribe.stream = null;
  subscribe.token = null;
  subscribe.params = [];
  $('sub-connect').disabled = false;
  $('sub-disconnect').disabled = true;
  setStatus($('sub-status'), state, text);
  subsView.render();
}

async function startSubscribe(e) {
  e?.preventDefault();
  stopSubscribe('idle');
  const topics = lines($('sub-topics').value);
  const error = $('sub-error');
  error.hidden = true;
  if (topics.length === 0) {
    error.textContent = 'Enter at least one topic.';
    error.hidden = false;
    return;
  }
  await cookieSync;
  const kind = $('sub-kind').value;
  const lastEventId = $('sub-last-id').value.trim();
  const forceFetch = $('sub-client').value === 'fetch';
  const useFetch = forceFetch || settings.auth() === 'header';
  // fetch() sends Last-Event-ID as a header; EventSource can only put it in the query.
  let url$;
  try {
    url$ = subscribeUrl(kind, topics, lastEventId, !useFetch).href;
  } catch {
    error.textContent = `Invalid hub URL: ${settings.hubUrl()}`;
    error.hidden = false;
    return;
  }
  const line = $('sub-url');
  line.textContent = `GET ${url$}${useFetch && lastEventId ? `  (Last-Event-ID: ${lastEventId})` : ''}  via ${useFetch ? 'fetch()' : 'EventSource'}`;
  line.hidden = false;
  const types = $('sub-types').value.split(/[\s,]+/).filter(Boolean);
  subscribe.params = topics.map((t) => ({ kind: kind === 'topic' ? 'selector' : kind === 'match' ? 'exact' : 'urlpattern', match: t }));
  $('sub-connect').disabled = true;
  $('sub-disconnect').disabled = false;
  // Callbacks may run before openStream returns: they recognise their stream by this token.
  const token = {};
  subscribe.token = token;
  subscribe.stream = openStream(url$, { forceFetch, types, lastEventId }, {
    status: (s) => { if (subscribe.token === token) setStatus($('sub-status'), s); },
    event: (ev) => { if (subscribe.token === token) addEvent(ev); },
    fail: (f) => {
      if (subscribe.token !== token) return;
      stopSubscribe('error', f.status ? `Error ${f.status}` : 'Closed');
      error.textContent = explain(f.status, f.text, 'Subscribing');
      error.hidden = false;
    },
  });
  subsView.render();
}

// ---------------------------------------------------------------------------------------------
// Publish
// ---------------------------------------------------------------------------------------------

function showResult(el, ok, title, ...rest) {
  el.hidden = false;
  el.className = `result ${ok ? 'ok' : 'bad'}`;
  el.replaceChildren(h('div', { class: 'title', text: title }), ...rest);
}

async function publish(e) {
  e.preventDefault();
  const out = $('pub-result');
  const topics = lines($('pub-topics').value);
  if (topics.length === 0) {
    showResult(out, false, 'Enter at least one topic.');
    return;
  }
  const form = new URLSearchParams();
  for (const t of topics) form.append('topic', t);
  form.set('data', $('pub-data').value);
  if ($('pub-private').checked) form.set('private', 'on');
  for (const [id, name] of [['pub-id', 'id'], ['pub-type', 'type'], ['pub-retry', 'retry']]) {
    const v = $(id).value.trim();
    if (v) form.set(name, v);
  }
  await cookieSync;
  const button = $('pub-submit');
  button.disabled = true;
  try {
    const res = await fetch(settings.hubUrl(), settings.init({ method: 'POST', body: form }));
    const text = await res.text();
    if (res.ok) {
      showResult(out, true, `Published (${res.status})`, h('dl', {}, h('dt', { text: 'Update id' }), h('dd', { class: 'pub-id', text: text.trim() })));
    } else {
      const www = res.headers.get('www-authenticate');
      const hint = hintFor(res.status, 'Publishing');
      showResult(out, false, `Error ${res.status} ${res.statusText}`,
        h('pre', { class: 'pub-error', text: text.trim() || '(no message)' }),
        www ? h('pre', { text: `WWW-Authenticate: ${www}` }) : null,
        hint ? h('p', { text: hint }) : null);
    }
  } catch (err) {
    showResult(out, false, 'The hub cannot be reached', h('pre', { text: String(err) }));
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Discover
// ---------------------------------------------------------------------------------------------

/** Parses Link header values (several headers arrive joined by ", "). */
function parseLinks(value) {
  const links = [];
  if (!value) return links;
  let i = 0;
  const n = value.length;
  const skip = () => { while (i < n && /[\s,]/.test(value[i])) i++; };
  while (i < n) {
    skip();
    if (value[i] !== '<') break;
    const end = value.indexOf('>', i);
    if (end < 0) break;
    const link = { href: value.slice(i + 1, end), params: {} };
    i = end + 1;
    for (;;) {
      while (i < n && value[i] === ' ') i++;
      if (value[i] !== ';') break;
      i++;
      while (i < n && value[i] === ' ') i++;
      let name = '';
      while (i < n && !/[=;,\s]/.test(value[i])) name += value[i++];
      while (i < n && value[i] === ' ') i++;
      let v = '';
      if (value[i] === '=') {
        i++;
        while (i < n && value[i] === ' ') i++;
        if (value[i] === '"') {
          i++;
          while (i < n && value[i] !== '"') {
            if (value[i] === '\\') i++;
            v += value[i++] ?? '';
          }
          i++;
        } else {
          while (i < n && !/[;,\s]/.test(value[i])) v += value[i++];
        }
      }
      if (name) link.params[name.toLowerCase()] = v;
    }
    links.push(link);
  }
  return links;
}

async function discover(e) {
  e.preventDefault();
  const out = $('disc-result');
  let url;
  try {
    url = new URL($('disc-url').value.trim() || new URL('books/1.jsonld', demoBase).href, location.href);
  } catch {
    showResult(out, false, 'Not a valid URL.');
    return;
  }
  const isDemo = url.origin === location.origin && url.pathname.startsWith(demoBase.pathname);
  if (isDemo) {
    url.searchParams.set('body', $('disc-body').value);
    // The demo endpoint sets the cookie from ?jwt= (and removes it without).
    if (settings.auth() === 'cookie' && settings.jwt()) url.searchParams.set('jwt', settings.jwt());
  }
  let res;
  let body;
  try {
    res = await fetch(url, { credentials: 'include', cache: 'no-store' });
    body = await res.text();
  } catch (err) {
    showResult(out, false, 'The resource cannot be fetched', h('pre', { text: `${err}\nOnly this hub's origin can be reached from this page (Content-Security-Policy).` }));
    return;
  }
  if (!res.ok) {
    const hint = isDemo && res.status === 404 ? '\nThe demo endpoint is off: start the hub with --demo (or DEMO=1, or --dev).' : '';
    showResult(out, false, `${res.status} ${res.statusText}`, h('pre', { text: body.trim() + hint }));
    return;
  }
  const links = parseLinks(res.headers.get('link'));
  const hub = links.find((l) => (l.params.rel ?? '').split(/\s+/).includes('mercure'));
  const self = links.find((l) => (l.params.rel ?? '').split(/\s+/).includes('self'));
  const dl = h('dl', {},
    h('dt', { text: 'Content-Type' }), h('dd', { text: res.headers.get('content-type') ?? '(none)' }));
  for (const l of links) {
    const attrs = Object.entries(l.params).map(([k, v]) => `${k}="${v}"`).join('; ');
    dl.append(h('dt', { text: 'Link' }), h('dd', { text: `<${l.href}>; ${attrs}` }));
  }
  if (!hub) {
    showResult(out, false, 'No Link with rel="mercure" found', dl, h('pre', { text: body }));
    return;
  }
  const hubUrl = new URL(hub.href, res.url).href;
  let topic = self ? new URL(self.href, res.url) : new URL(res.url);
  if (isDemo) {
    topic.searchParams.delete('body');
    topic.searchParams.delete('jwt');
  }
  topic = topic.href;
  $('hub-url').value = hubUrl;
  $('sub-topics').value = topic;
  $('pub-topics').value = topic;
  if (body) $('pub-data').value = body;
  settingsChanged();
  const filled = [`Hub URL: ${hubUrl}`, `Topic (Subscribe and Publish): ${topic}`];
  if (hub.params['cookie-name']) filled.push(`Cookie name: ${hub.params['cookie-name']}`);
  showResult(out, true, 'Hub discovered; settings filled in', dl,
    h('pre', { text: filled.join('\n') }),
    body ? h('pre', { class: 'disc-body', text: body }) : null);
}

// ---------------------------------------------------------------------------------------------
// Active subscriptions
// ---------------------------------------------------------------------------------------------

const subsView = {
  /** subscription id (its topic) → document */
  rows: new Map(),
  stream: null,
  loaded: false,
  render() {
    const body = $('subs-list');
    const fresh = this.fresh ?? new Set();
    this.fresh = new Set();
    // Recognise this page's own subscriptions by their exact set of (kind, match) pairs.
    const bySubscriber = new Map();
    for (const d of this.rows.values()) {
      const list = bySubscriber.get(d.subscriber) ?? [];
      list.push(`${kindOf(d)}\u0000${matchOf(d)}`);
      bySubscriber.set(d.subscriber, list);
    }
    const key = (params) => params.map((p) => `${p.kind}\u0000${p.match}`).sort().join('\n');
    const mine = key(subscribe.params);
    const watch = key([{ kind: 'urlpattern', match: WATCH_PATTERN }]);
    const owners = (k) => [...bySubscriber].filter(([, l]) => l.sort().join('\n') === k).map(([s]) => s);
    const mineOwners = subscribe.stream && mine ? owners(mine) : [];
    const watchOwners = this.stream ? owners(watch) : [];
    const rows = [...this.rows.values()].sort((a, b) => matchOf(a).localeCompare(matchOf(b)) || a.subscriber.localeCompare(b.subscriber));
    body.replaceChildren(...rows.map((d) => {
      const tag = mineOwners.length === 1 && mineOwners[0] === d.subscriber ? 'Subscribe panel'
        : watchOwners.length === 1 && watchOwners[0] === d.subscriber ? 'this list' : null;
      return h('tr', { class: fresh.has(d.id) ? 'fresh' : undefined, dataset: { subscriber: d.subscriber } },
        h('td', { class: 'mono' }, matchOf(d), tag ? h('span', { class: 'you', text: tag, title: 'Opened by this page' }) : null),
        h('td', {}, h('span', { class: 'kind', text: kindLabel(kindOf(d)) })),
        h('td', { class: 'mono', title: d.subscriber, text: d.subscriber }),
        h('td', { class: 'mono', text: d.payload === undefined ? '' : JSON.stringify(d.payload) }));
    }));
    $('subs-count').textContent = String(this.rows.size);
    $('subs-table').hidden = this.rows.size === 0;
    const empty = $('subs-empty');
    empty.hidden = this.rows.size > 0 || !$('subs-message').hidden;
    if (this.loaded) empty.textContent = 'No active subscriptions.';
  },
};

function kindOf(d) {
  return d.match_type ?? 'selector';
}
function matchOf(d) {
  return d.match ?? d.topic ?? '';
}
function kindLabel(k) {
  return { selector: 'topic (draft-07)', exact: 'match (draft-08)', urlpattern: 'urlpattern (draft-08)' }[k] ?? k;
}

function subsMessage(text) {
  const el = $('subs-message');
  el.textContent = text ?? '';
  el.hidden = !text;
  if (text && !subsView.loaded) $('subs-empty').hidden = true;
}

const GRANT_HELP =
  'The subscriptions API and the subscription events need a token whose subscribe grants match them:\n' +
  '  draft-07: {"mercure": {"subscribe": ["/.well-known/mercure/subscriptions{/topic}{/subscriber}"]}} (or ["*"])\n' +
  '  draft-08: an authorization_details entry with actions ["subscribe"] and topics [{"match": "/.well-known/mercure/subscriptions/*", "match_type": "urlpattern"}]\n' +
  'Paste one in Settings and choose "Authorization header" or "Cookie".';

function stopWatch() {
  subsView.stream?.close();
  subsView.stream = null;
  subsView.token = null;
}

async function loadSubscriptions() {
  stopWatch();
  subsMessage();
  subsView.rows.clear();
  subsView.loaded = false;
  subsView.render();
  await cookieSync;
  const status = $('subs-status');
  setStatus(status, 'connecting', 'Loading…');
  let res;
  let text;
  try {
    res = await fetch(settings.hubUrl() + SUBSCRIPTIONS_SUFFIX, settings.init({ cache: 'no-store', headers: { Accept: 'application/ld+json, application/json' } }));
    text = await res.text();
  } catch (err) {
    setStatus(status, 'error', 'Unreachable');
    subsMessage(`The hub cannot be reached: ${err}`);
    return;
  }
  if (res.status === 404) {
    setStatus(status, 'error', 'Disabled');
    subsMessage('The subscriptions API is disabled on this hub. Enable it with --subscriptions (the "subscriptions" directive, SUBSCRIPTIONS=1; --dev enables it).');
    return;
  }
  if (res.status === 401 || res.status === 403) {
    setStatus(status, 'error', `Error ${res.status}`);
    subsMessage(`${res.status} ${res.status === 401 ? 'Unauthorized' : 'Forbidden'}${text.trim() ? `: ${text.trim()}` : ''}\n${GRANT_HELP}`);
    return;
  }
  if (!res.ok) {
    setStatus(status, 'error', `Error ${res.status}`);
    subsMessage(`${res.status}: ${text.trim()}`);
    return;
  }
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    setStatus(status, 'error', 'Bad answer');
    subsMessage('The hub did not answer with JSON.');
    return;
  }
  subsView.rows.clear();
  subsView.fresh = new Set();
  for (const s of doc.subscriptions ?? []) subsView.rows.set(s.id, s);
  subsView.loaded = true;
  subsView.render();
  const linkCursor = parseLinks(res.headers.get('link')).find((l) => l.params['last-event-id'] !== undefined)?.params['last-event-id'];
  const cursor = doc.lastEventID ?? linkCursor ?? res.headers.get('etag')?.replace(/^"|"$/g, '') ?? '';
  if ($('subs-live').checked) watchSubscriptions(cursor);
  else setStatus(status, 'idle', 'Loaded');
}

/** Follows the subscription events (private updates) from the API's cursor on. */
function watchSubscriptions(cursor) {
  stopWatch();
  const status = $('subs-status');
  if (settings.auth() === 'none') {
    setStatus(status, 'idle', 'Loaded');
    subsMessage('Live updates need a token: subscription events are private updates, never sent to anonymous subscribers.\n' + GRANT_HELP);
    return;
  }
  const useFetch = settings.auth() === 'header';
  let url;
  try {
    // One draft-08 URL pattern sees the events of draft-07 and draft-08 subscriptions alike.
    url = subscribeUrl('match_urlpattern', [WATCH_PATTERN], cursor, !useFetch);
  } catch {
    setStatus(status, 'error', 'Invalid hub URL');
    return;
  }
  const token = {};
  subsView.token = token;
  subsView.stream = openStream(url.href, { lastEventId: cursor }, {
    status: (s) => { if (subsView.token === token) setStatus(status, s, s === 'open' ? 'Live' : undefined); },
    event: (ev) => {
      if (subsView.token !== token) return;
      let d;
      try {
        d = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!d || typeof d.id !== 'string') return;
      if (d.active) {
        subsView.rows.set(d.id, d);
        subsView.fresh = new Set([...(subsView.fresh ?? []), d.id]);
      } else {
        subsView.rows.delete(d.id);
      }
      subsView.render();
    },
    fail: (f) => {
      if (subsView.token !== token) return;
      stopWatch();
      setStatus(status, 'error', f.status ? `Live: error ${f.status}` : 'Live: closed');
      subsMessage(f.status === 401 || f.status === 403 ? `${explain(f.status, f.text, 'Watching')}\n${GRANT_HELP}` : explain(f.status, f.text, 'Watching'));
    },
  });
  subsView.render();
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

async function init() {
  try {
    const res = await fetch('config.json', { cache: 'no-store', credentials: 'omit' });
    if (res.ok) Object.assign(config, await res.json());
  } catch {
    // Served elsewhere: defaults.
  }
  $('hub-url').value = pageHub;
  $('hub-url').placeholder = pageHub;
  $('demo-warning').hidden = !config.demo;
  const demoExample = new URL('books/1.jsonld', demoBase).href;
  $('disc-url').placeholder = demoExample;
  if (config.demo) {
    $('disc-url').value = demoExample;
    $('disc-body').value = JSON.stringify({ '@id': '/books/1', title: 'Mercure in practice', status: 'InStock' });
  }
  if (config.devToken) {
    $('jwt').value = config.devToken;
    $('auth-header').checked = true;
  }
  settingsChanged();

  $('settings-form').addEventListener('submit', (e) => e.preventDefault());
  $('hub-url').addEventListener('change', settingsChanged);
  $('jwt').addEventListener('change', settingsChanged);
  $('jwt').addEventListener('input', describeToken);
  for (const r of document.querySelectorAll('input[name="auth"]')) r.addEventListener('change', settingsChanged);

  $('subscribe-form').addEventListener('submit', startSubscribe);
  $('sub-disconnect').addEventListener('click', () => stopSubscribe('closed'));
  $('sub-clear').addEventListener('click', () => {
    $('events').replaceChildren();
    subscribe.count = 0;
    $('sub-count').textContent = '0';
    $('events-empty').hidden = false;
  });
  $('sub-client').addEventListener('change', updateClientFields);

  $('publish-form').addEventListener('submit', publish);
  $('discover-form').addEventListener('submit', discover);
  $('subs-load').addEventListener('click', loadSubscriptions);
  $('subs-live').addEventListener('change', () => {
    if (!$('subs-live').checked) {
      stopWatch();
      setStatus($('subs-status'), 'idle', subsView.loaded ? 'Loaded' : 'Not loaded');
      subsView.render();
    } else if (subsView.loaded) {
      loadSubscriptions();
    }
  });
  document.body.dataset.ready = 'true';
}

init();
