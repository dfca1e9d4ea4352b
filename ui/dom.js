// Small DOM helpers shared by the UI's modules. No innerHTML anywhere: every value the hub or the
// user provides goes through textContent or an attribute.

export const $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
};

/** Builds an element: h('span', { class: 'x', text: 'y' }, child…). */
export function h(tag, props = {}, ...children) {
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

export function statusText(s) {
  return { idle: 'Not connected', connecting: 'Connecting…', open: 'Connected', reconnecting: 'Reconnecting…', closed: 'Disconnected', error: 'Error' }[s] ?? s;
}

export function setStatus(el, state, text) {
  el.dataset.state = state;
  el.textContent = text ?? statusText(state);
}

/** Shows an action's result; `stale` is cleared: it describes the settings in force now. */
export function showResult(el, ok, title, ...rest) {
  el.hidden = false;
  el.className = `result ${ok ? 'ok' : 'bad'}`;
  delete el.dataset.stale;
  el.replaceChildren(h('div', { class: 'title', text: title }), ...rest);
}

/**
 * Marks a shown result as obtained with other settings than the current ones, so that an old
 * "401: choose a token" does not read as the answer to the token now in the form. Only the title
 * changes: the page must not move under the pointer (a click that blurred a settings field
 * would land elsewhere).
 */
export function markStale(el) {
  if (el.hidden || el.dataset.stale) return;
  el.dataset.stale = 'true';
  el.querySelector('.title')?.append(h('span', { class: 'stale-note', text: ' · with the previous settings' }));
}

export function lines(text) {
  return text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
}
