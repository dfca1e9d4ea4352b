// The Settings panel: which hub, and how the page presents its token. Connections never read the
// form directly: they take a `snapshot()` when they open and keep it, so that what the page shows
// about a live connection is what that connection really uses.

import { $, h } from './dom.js';

export const pageHub = new URL('..', location.href).href.replace(/\/$/, '');
export const demoBase = new URL('demo/', location.href);
export const config = { hubUrl: pageHub, cookieName: 'mercureAuthorization', demo: false, devToken: undefined, tokenHelp: undefined };

export function formHubUrl() {
  return $('hub-url').value.trim() || pageHub;
}
export function formAuth() {
  return document.querySelector('input[name="auth"]:checked')?.value ?? 'none';
}
export function formJwt() {
  return $('jwt').value.trim();
}

/** The settings in force now, frozen: what a connection or a request is made with. */
export function snapshot() {
  const auth = formAuth();
  return Object.freeze({ hubUrl: formHubUrl(), auth, jwt: auth === 'none' ? '' : formJwt(), cookieName: config.cookieName });
}

/** Compares two snapshots: same hub, same way of authenticating, same token. */
export function sameSettings(a, b) {
  return a.hubUrl === b.hubUrl && a.auth === b.auth && a.jwt === b.jwt && a.cookieName === b.cookieName;
}

/** fetch() options carrying a snapshot's authorization. */
export function fetchInit(s, extra = {}) {
  const headers = new Headers(extra.headers ?? {});
  if (s.auth === 'header' && s.jwt) headers.set('Authorization', `Bearer ${s.jwt}`);
  // 'omit' keeps a stale cookie from authorizing requests when another mode is chosen.
  return { ...extra, headers, credentials: s.auth === 'cookie' ? 'include' : 'omit' };
}

export function decodeJwt(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const json = (s) => JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(s.length / 4) * 4, '=')), (c) => c.charCodeAt(0))));
    return { header: json(parts[0]), payload: json(parts[1]) };
  } catch {
    return null;
  }
}

/** How a snapshot authenticates, in a few words, for the lines that describe live connections. */
export function describeAuth(s) {
  if (s.auth === 'none' || !s.jwt) return s.auth === 'none' ? 'anonymous' : `${s.auth === 'cookie' ? `cookie ${s.cookieName}` : 'Authorization header'} without a token`;
  const how = s.auth === 'cookie' ? `cookie ${s.cookieName}` : 'Authorization header';
  const which = s.jwt === config.devToken ? 'development token' : `token …${s.jwt.slice(-8)}`;
  return `${how}, ${which}`;
}

export function describeToken() {
  const token = formJwt();
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
  if (token === config.devToken) bits.push('development token handed out by this demo hub');
  if (decoded.header.typ && /at\+jwt/i.test(decoded.header.typ)) bits.push('draft-08 access token');
  else if (p.mercure || p['https://mercure.rocks/']) bits.push('draft-07 token');
  if (typeof p.exp === 'number') {
    const left = p.exp * 1000 - Date.now();
    bits.push(left <= 0 ? 'EXPIRED' : `expires ${new Date(p.exp * 1000).toLocaleString()}`);
  }
  note.textContent = bits.length ? `(${bits.join(', ')})` : '';
  $('claims-body').textContent = JSON.stringify(decoded, null, 2);
}

export function updateAuthHint() {
  const mode = formAuth();
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

/** What the demo banner says must be true of this hub: whether it handed this page a token. */
export function renderDemoBanner() {
  const el = $('demo-warning');
  el.hidden = !config.demo;
  if (!config.demo) return;
  const parts = [h('strong', { text: 'Demo mode is on. ' }), 'This hub exposes an insecure echo endpoint. '];
  const exp = config.devToken ? decodeJwt(config.devToken)?.payload.exp : undefined;
  if (config.devToken) {
    parts.push(`It handed this page an all-access development token (publish and subscribe *), signed with the hub's key${typeof exp === 'number' ? ` and valid until ${new Date(exp * 1000).toLocaleTimeString()}` : ''}: it is in Settings below. `);
  } else {
    parts.push('It hands out no token (its keys are not one shared HMAC secret): mint one with ',
      h('code', { id: 'token-help', text: config.tokenHelp ?? "quicksilver token --key <signing key> --publish '*' --subscribe '*'" }),
      ' (with separate publisher and subscriber keys, one token per key: --publish with the one, --subscribe with the other) and paste it in Settings. ');
  }
  parts.push('Never enable ', h('code', { text: 'demo' }), ' in production.');
  $('demo-text').replaceChildren(...parts);
}

export async function loadPageConfig() {
  try {
    const res = await fetch('config.json', { cache: 'no-store', credentials: 'omit' });
    if (res.ok) {
      const doc = await res.json();
      config.devToken = undefined;
      config.tokenHelp = undefined;
      Object.assign(config, doc);
    }
  } catch {
    // Served elsewhere: defaults.
  }
}

/**
 * The demo hub's token is short-lived: when the form still holds it and it is about to expire,
 * fetch a fresh one. Returns true when the token in the form changed.
 */
export async function renewDevToken() {
  if (!config.devToken || formJwt() !== config.devToken) return false;
  const exp = decodeJwt(config.devToken)?.payload.exp;
  if (typeof exp !== 'number' || exp * 1000 - Date.now() > 60_000) return false;
  const old = config.devToken;
  await loadPageConfig();
  if (!config.devToken || config.devToken === old || formJwt() !== old) return false;
  $('jwt').value = config.devToken;
  renderDemoBanner();
  return true;
}

let cookieChain = Promise.resolve();
/**
 * Cookie mode: the demo endpoint stores the JWT in the hub's cookie; other modes remove it.
 * Chained: two quick changes must reach the browser's cookie jar in the order they were made.
 */
export function syncCookie() {
  if (!config.demo) return cookieChain;
  const s = snapshot();
  cookieChain = cookieChain.then(async () => {
    const url = new URL('cookie', demoBase);
    if (s.auth === 'cookie' && s.jwt) url.searchParams.set('jwt', s.jwt);
    try {
      await fetch(url, { credentials: 'include', cache: 'no-store' });
    } catch {
      // The next request reports the problem.
    }
  });
  return cookieChain;
}
export const cookieSynced = () => cookieChain;

/** What to do about a refused request, or ''. */
export function hintFor(status, what, s) {
  if (status === 401) {
    if (s.auth === 'none' || !s.jwt) {
      return `${what} needs a token: choose "Authorization header" (or "Cookie") in Settings and paste a JWT${config.demo && !config.devToken ? ` (mint one with ${config.tokenHelp ?? 'quicksilver token'})` : ''}.`;
    }
    return 'The token was refused: check that it is signed with the hub\'s key and not expired (draft-08: that its audience is this hub).';
  }
  if (status === 403) return 'The token is valid but does not grant this.';
  return '';
}

/** A human explanation of a refused request: status, the hub's message, and a hint. */
export function explain(status, text, what, s) {
  const body = (text || '').trim();
  if (status === 0) return body;
  return [`${status}${body ? `: ${body}` : ''}`, hintFor(status, what, s)].filter(Boolean).join('\n');
}
