// Quicksilver debugging UI. Plain browser JavaScript modules, no build step, no external
// resources: the hub serves this page with `Content-Security-Policy: default-src 'self'`, so
// everything here is same-origin and no inline script or style is used.
//
// One rule keeps the page honest: whatever describes a connection (status, URL line, client,
// credentials, errors) is drawn from the connection object, which keeps the settings it was opened
// with. Changing the settings reconnects (the Subscribe panel, the live subscriptions list);
// changing the subscribe form is announced until Reconnect applies it.

import { $, h, lines, markStale, showResult } from './dom.js';
import { parseLinks } from './links.js';
import {
  config, cookieSynced, demoBase, describeToken, fetchInit, formAuth, formHubUrl, formJwt, hintFor,
  loadPageConfig, pageHub, renderDemoBanner, renewDevToken, snapshot, syncCookie, updateAuthHint,
} from './settings.js';
import * as sub from './subscribe.js';
import * as subs from './subscriptions.js';

/** Header auth forces the fetch() client; EventSource-only fields are hidden when fetch() is used. */
let chosenClient = 'auto';
function updateClientFields(e) {
  const select = $('sub-client');
  if (e?.target === select) chosenClient = select.value;
  const header = formAuth() === 'header';
  select.disabled = header;
  select.value = header ? 'fetch' : chosenClient;
  select.title = header ? 'Header authorization needs fetch(): EventSource cannot send headers' : '';
  $('sub-types-field').hidden = select.value === 'fetch';
}

/** Every change of the settings: the form's own hints, then everything that used the old ones. */
function settingsChanged() {
  describeToken();
  updateAuthHint();
  updateClientFields();
  $('hub-label').textContent = formHubUrl();
  void syncCookie();
  sub.applySettings();
  subs.applySettings();
  markStale($('pub-result'));
}

/**
 * A field's change event fires on blur, which the press of a button causes: reconnecting then
 * redraws panels, the page moves under the pointer, and the release lands elsewhere (the click
 * is lost). So a change made while a pointer is down waits for its release (and the click);
 * every action applies pending changes first.
 */
let pointerDown = false;
let pendingChange = false;
function onSettingsChange() {
  if (pointerDown) pendingChange = true;
  else settingsChanged();
}
function flushSettings() {
  if (!pendingChange) return;
  pendingChange = false;
  settingsChanged();
}
document.addEventListener('pointerdown', () => { pointerDown = true; }, true);
document.addEventListener('pointerup', () => {
  pointerDown = false;
  // After the click this release produces, which runs in the same task.
  if (pendingChange) setTimeout(flushSettings, 0);
}, true);
document.addEventListener('pointercancel', () => { pointerDown = false; flushSettings(); }, true);

/** Before a request: a demo token about to expire is renewed (which reconnects what used it). */
async function freshSettings() {
  flushSettings();
  if (await renewDevToken()) settingsChanged();
  await cookieSynced();
  return snapshot();
}

// ---------------------------------------------------------------------------------------------
// Publish
// ---------------------------------------------------------------------------------------------

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
  const button = $('pub-submit');
  button.disabled = true;
  try {
    const s = await freshSettings();
    // A subscription being (re)opened would miss this update: wait until it is open (or failed).
    await sub.settled();
    const res = await fetch(s.hubUrl, fetchInit(s, { method: 'POST', body: form }));
    const text = await res.text();
    if (res.ok) {
      showResult(out, true, `Published (${res.status})`, h('dl', {}, h('dt', { text: 'Update id' }), h('dd', { class: 'pub-id', text: text.trim() })));
    } else {
      const www = res.headers.get('www-authenticate');
      const hint = hintFor(res.status, 'Publishing', s);
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

async function discover(e) {
  e.preventDefault();
  flushSettings();
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
    if (formAuth() === 'cookie' && formJwt()) url.searchParams.set('jwt', formJwt());
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
  sub.render();
  const filled = [`Hub URL: ${hubUrl}`, `Topic (Subscribe and Publish): ${topic}`];
  if (hub.params['cookie-name']) filled.push(`Cookie name: ${hub.params['cookie-name']}`);
  showResult(out, true, 'Hub discovered; settings filled in', dl,
    h('pre', { text: filled.join('\n') }),
    body ? h('pre', { class: 'disc-body', text: body }) : null);
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

async function init() {
  await loadPageConfig();
  $('hub-url').value = pageHub;
  $('hub-url').placeholder = pageHub;
  renderDemoBanner();
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
  sub.subscription.onChange = () => subs.subsView.render();
  sub.render();

  $('settings-form').addEventListener('submit', (e) => e.preventDefault());
  $('hub-url').addEventListener('change', onSettingsChange);
  $('jwt').addEventListener('change', onSettingsChange);
  $('jwt').addEventListener('input', describeToken);
  for (const r of document.querySelectorAll('input[name="auth"]')) r.addEventListener('change', onSettingsChange);
  // "expires …" turns into "EXPIRED" while the page is open.
  setInterval(describeToken, 15_000);

  $('subscribe-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    await freshSettings();
    await sub.connect();
  });
  $('sub-disconnect').addEventListener('click', () => sub.disconnect());
  $('sub-clear').addEventListener('click', sub.clearEvents);
  $('sub-client').addEventListener('change', (e) => {
    updateClientFields(e);
    sub.render();
  });
  // Any edit of the subscribe form is compared with the live subscription at once.
  for (const id of ['sub-topics', 'sub-kind', 'sub-last-id', 'sub-types']) {
    $(id).addEventListener('input', sub.render);
    $(id).addEventListener('change', sub.render);
  }

  $('publish-form').addEventListener('submit', publish);
  $('discover-form').addEventListener('submit', discover);
  $('subs-load').addEventListener('click', async () => {
    await freshSettings();
    await subs.loadSubscriptions();
  });
  $('subs-live').addEventListener('change', subs.liveToggled);
  document.body.dataset.ready = 'true';
}

init();
