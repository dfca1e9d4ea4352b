// Server-Sent Events over fetch() (any header; every event type) and with the browser's
// EventSource. Each stream is opened with a fixed fetch() init, taken from the settings when it is
// opened: a later change of the settings never leaks into a running stream (the page reconnects).

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
        if (!ctrl.signal.aborted) cb.fail({ status: res.status, statusText: res.statusText, text, headers: res.headers });
        return;
      }
      cb.status('open');
      try {
        await readEventStream(res.body, {
          onEvent: (ev) => { if (!ctrl.signal.aborted) cb.event(ev); },
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
function eventSource(url, init, types, cb) {
  const es = new EventSource(url, { withCredentials: init.credentials === 'include' });
  let closed = false;
  const onMessage = (e) => { if (!closed) cb.event({ type: e.type, data: e.data, id: e.lastEventId }); };
  es.addEventListener('message', onMessage);
  for (const t of new Set(['mercure', ...types])) es.addEventListener(t, onMessage);
  es.onopen = () => cb.status('open');
  es.onerror = () => {
    if (closed) return;
    if (es.readyState === EventSource.CONNECTING) {
      cb.status('reconnecting');
      return;
    }
    // EventSource hides the status of a refused connection: ask again with fetch() to show it,
    // with the credentials this stream was opened with (not whatever the form holds now).
    es.close();
    const ctrl = new AbortController();
    fetch(url, { ...init, cache: 'no-store', signal: ctrl.signal }).then(
      async (res) => {
        if (closed) return ctrl.abort();
        if (res.ok) {
          ctrl.abort();
          cb.fail({ status: 0, text: 'The connection was closed. Connect again to resume.' });
        } else {
          cb.fail({ status: res.status, statusText: res.statusText, text: await res.text().catch(() => ''), headers: res.headers });
        }
      },
      () => { if (!closed) cb.fail({ status: 0, text: 'The hub cannot be reached.' }); },
    );
  };
  return { close: () => { closed = true; es.close(); }, kind: 'eventsource' };
}

/**
 * Opens a subscription: a fetch() stream when `client` is 'fetch' (always with header
 * authorization, which EventSource cannot send), else an EventSource.
 */
export function openStream(url, init, { client, types = [], lastEventId = '' }, cb) {
  if (client === 'fetch') return fetchStream(url, init, cb, lastEventId);
  return eventSource(url, init, types, cb);
}
