// The Subscribe panel. One object, `subscription.live`, is the connection the page holds: its
// status, URL line, client, credentials and error are all drawn from it, never from the form.
// A change of the settings reconnects it (with the new credentials, resuming after the last event
// seen); a change of the subscribe form is announced until Reconnect applies it.

import { $, h, lines, setStatus } from './dom.js';
import { cookieSynced, describeAuth, explain, fetchInit, sameSettings, snapshot } from './settings.js';
import { openStream } from './sse.js';

const MAX_EVENTS = 500;

export const subscription = {
  /** null, or { settings, request, url, lastEventId, state, error, failStatus, lastSeenId, reason, stream } */
  live: null,
  /** The attempt in progress: callbacks of a replaced stream recognise themselves by it. */
  token: null,
  /** Settles when the current attempt is open or has failed (a publish waits for it). */
  ready: Promise.resolve(),
  settle: () => {},
  count: 0,
  disconnected: false,
  /** Called whenever `live` changes (the subscriptions list labels the page's own). */
  onChange: () => {},
};

/** What the form asks for, given the settings `s` (header auth needs fetch()). */
function request(s) {
  const client = s.auth === 'header' || $('sub-client').value === 'fetch' ? 'fetch' : 'eventsource';
  return {
    topics: lines($('sub-topics').value),
    kind: $('sub-kind').value,
    lastEventId: $('sub-last-id').value.trim(),
    client,
    types: client === 'eventsource' ? $('sub-types').value.split(/[\s,]+/).filter(Boolean) : [],
  };
}

function sameRequest(a, b) {
  return a.topics.join('\n') === b.topics.join('\n') && a.kind === b.kind && a.lastEventId === b.lastEventId
    && a.client === b.client && a.types.join(' ') === b.types.join(' ');
}

export function subscribeUrl(hubUrl, kind, topics, lastEventId, forQuery) {
  const url = new URL(hubUrl);
  for (const t of topics) url.searchParams.append(kind, t);
  if (lastEventId && forQuery) url.searchParams.set(kind === 'topic' ? 'lastEventID' : 'last_event_id', lastEventId);
  return url;
}

/** (kind, match) pairs of the live subscription, as the subscriptions API reports them. */
export function liveParams() {
  const live = subscription.live;
  if (!live || live.state === 'error' || !live.url) return [];
  const kind = { topic: 'selector', match: 'exact' }[live.request.kind] ?? 'urlpattern';
  return live.request.topics.map((t) => ({ kind, match: t }));
}

function addEvent(ev) {
  subscription.count += 1;
  $('sub-count').textContent = String(subscription.count);
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

export function clearEvents() {
  $('events').replaceChildren();
  subscription.count = 0;
  $('sub-count').textContent = '0';
  $('events-empty').hidden = false;
}

/** Draws the panel from `subscription.live` (and says when the form no longer matches it). */
export function render() {
  const live = subscription.live;
  const status = $('sub-status');
  if (!live) setStatus(status, subscription.disconnected ? 'closed' : 'idle');
  else if (live.state === 'error') setStatus(status, 'error', live.failStatus ? `Error ${live.failStatus}` : live.url ? 'Closed' : 'Not connected');
  else if (live.state === 'connecting' && live.reason) setStatus(status, 'connecting', `Reconnecting (${live.reason})…`);
  else setStatus(status, live.state);

  const line = $('sub-url');
  line.hidden = !live?.url;
  if (live?.url) {
    const header = live.request.client === 'fetch' && live.lastEventId ? `  (Last-Event-ID: ${live.lastEventId})` : '';
    line.textContent = `GET ${live.url}${header}  via ${live.request.client === 'fetch' ? 'fetch()' : 'EventSource'} · ${describeAuth(live.settings)}`;
  }
  const error = $('sub-error');
  error.hidden = !live?.error;
  error.textContent = live?.error ?? '';

  const pending = $('sub-pending');
  const differs = live && !sameRequest(live.request, request(live.settings));
  pending.hidden = !differs;
  if (differs) pending.textContent = 'The form no longer matches the subscription shown here: press Reconnect to apply it.';
  $('sub-connect').textContent = live ? 'Reconnect' : 'Connect';
  $('sub-disconnect').disabled = !live;
  subscription.onChange();
}

function closeStream() {
  subscription.token = null;
  subscription.settle();
  subscription.live?.stream?.close();
  if (subscription.live) subscription.live.stream = null;
}

export function disconnect() {
  closeStream();
  subscription.live = null;
  subscription.disconnected = true;
  render();
}

/**
 * (Re)connects with the form and the settings as they are now. `resume`: continue after the last
 * event the previous connection saw, as EventSource does, rather than replaying from the form's
 * Last-Event-ID again.
 */
export async function connect({ resume = false, reason } = {}) {
  const prev = subscription.live;
  closeStream();
  const token = {};
  subscription.token = token;
  let resolveReady;
  subscription.ready = new Promise((r) => (resolveReady = r));
  subscription.settle = resolveReady;
  // Cookie mode: the cookie the demo endpoint sets must be in the jar before the stream opens.
  await cookieSynced();
  if (subscription.token !== token) return;
  const s = snapshot();
  const r = request(s);
  const live = { settings: s, request: r, url: '', state: 'connecting', error: null, failStatus: 0, lastSeenId: '', reason, stream: null };
  subscription.live = live;
  const failNow = (message) => {
    Object.assign(live, { state: 'error', error: message });
    resolveReady();
    render();
  };
  if (r.topics.length === 0) return failNow('Enter at least one topic.');
  live.lastEventId = resume && prev?.lastSeenId && prev.request.lastEventId === r.lastEventId ? prev.lastSeenId : r.lastEventId;
  try {
    // fetch() sends Last-Event-ID as a header; EventSource can only put it in the query.
    live.url = subscribeUrl(s.hubUrl, r.kind, r.topics, live.lastEventId, r.client !== 'fetch').href;
  } catch {
    return failNow(`Invalid hub URL: ${s.hubUrl}`);
  }
  render();
  const mine = () => subscription.token === token;
  live.stream = openStream(live.url, fetchInit(s), { client: r.client, types: r.types, lastEventId: live.lastEventId }, {
    status: (st) => {
      if (!mine()) return;
      live.state = st;
      if (st === 'open') {
        live.reason = undefined;
        resolveReady();
      }
      render();
    },
    event: (ev) => {
      if (!mine()) return;
      if (ev.id) live.lastSeenId = ev.id;
      addEvent(ev);
    },
    fail: (f) => {
      if (!mine()) return;
      live.stream = null;
      live.failStatus = f.status;
      failNow(explain(f.status, f.text, 'Subscribing', s));
    },
  });
}

/** Settings changed: a connection made with other settings is replaced by one with these. */
export function applySettings() {
  const live = subscription.live;
  if (live && !sameSettings(live.settings, snapshot())) void connect({ resume: true, reason: 'settings changed' });
  else render();
}

/** Resolves once the subscription (if any) is open or has failed, or after `ms`. */
export function settled(ms = 5000) {
  return Promise.race([subscription.ready, new Promise((r) => setTimeout(r, ms))]);
}
