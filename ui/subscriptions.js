// The Active subscriptions panel: the subscriptions API, then the subscription events. Like the
// Subscribe panel, it remembers the settings it loaded with, and loads again when they change.

import { $, h, setStatus } from './dom.js';
import { parseLinks } from './links.js';
import { cookieSynced, explain, fetchInit, sameSettings, snapshot } from './settings.js';
import { openStream } from './sse.js';
import { liveParams, subscribeUrl } from './subscribe.js';

const SUBSCRIPTIONS_SUFFIX = '/subscriptions';
const WATCH_PATTERN = '/.well-known/mercure/subscriptions/*';

export const subsView = {
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
    const mine = key(liveParams());
    const watch = key([{ kind: 'urlpattern', match: WATCH_PATTERN }]);
    const owners = (k) => [...bySubscriber].filter(([, l]) => l.sort().join('\n') === k).map(([s]) => s);
    const mineOwners = mine ? owners(mine) : [];
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

export async function loadSubscriptions() {
  stopWatch();
  subsMessage();
  subsView.rows.clear();
  subsView.loaded = false;
  subsView.attempted = true;
  const attempt = {};
  subsView.attempt = attempt;
  subsView.render();
  await cookieSynced();
  if (subsView.attempt !== attempt) return;
  const s = snapshot();
  subsView.settings = s;
  const status = $('subs-status');
  setStatus(status, 'connecting', 'Loading…');
  let res;
  let text;
  try {
    res = await fetch(s.hubUrl + SUBSCRIPTIONS_SUFFIX, fetchInit(s, { cache: 'no-store', headers: { Accept: 'application/ld+json, application/json' } }));
    text = await res.text();
  } catch (err) {
    if (subsView.attempt !== attempt) return;
    setStatus(status, 'error', 'Unreachable');
    subsMessage(`The hub cannot be reached: ${err}`);
    return;
  }
  // Settings changed while this answer was on its way: the newer load draws the panel.
  if (subsView.attempt !== attempt) return;
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
  if ($('subs-live').checked) watchSubscriptions(cursor, s);
  else setStatus(status, 'idle', 'Loaded');
}

/** Follows the subscription events (private updates) from the API's cursor on. */
function watchSubscriptions(cursor, s) {
  stopWatch();
  const status = $('subs-status');
  if (s.auth === 'none' || !s.jwt) {
    setStatus(status, 'idle', 'Loaded');
    subsMessage('Live updates need a token: subscription events are private updates, never sent to anonymous subscribers.\n' + GRANT_HELP);
    return;
  }
  const useFetch = s.auth === 'header';
  let url;
  try {
    // One draft-08 URL pattern sees the events of draft-07 and draft-08 subscriptions alike.
    url = subscribeUrl(s.hubUrl, 'match_urlpattern', [WATCH_PATTERN], cursor, !useFetch);
  } catch {
    setStatus(status, 'error', 'Invalid hub URL');
    return;
  }
  const token = {};
  subsView.token = token;
  subsView.stream = openStream(url.href, fetchInit(s), { client: useFetch ? 'fetch' : 'eventsource', lastEventId: cursor }, {
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
      subsMessage(f.status === 401 || f.status === 403 ? `${explain(f.status, f.text, 'Watching', s)}\n${GRANT_HELP}` : explain(f.status, f.text, 'Watching', s));
    },
  });
  subsView.render();
}

/** Settings changed: a list loaded (or refused) with other settings is loaded again. */
export function applySettings() {
  if (subsView.attempted && subsView.settings && !sameSettings(subsView.settings, snapshot())) void loadSubscriptions();
  else subsView.render();
}

export function liveToggled() {
  if (!$('subs-live').checked) {
    stopWatch();
    setStatus($('subs-status'), 'idle', subsView.loaded ? 'Loaded' : 'Not loaded');
    subsView.render();
  } else if (subsView.loaded) {
    void loadSubscriptions();
  }
}
