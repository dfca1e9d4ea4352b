// The page: reads /books, discovers the hub from its Link header (quicksilver/discovery), then
// subscribes to every book's IRI with quicksilver/subscriber. The page never updates its table
// from its own requests: every change, its own included, arrives through the hub.
import { parseDiscovery } from '/quicksilver/discovery.js';
import { subscribe } from '/quicksilver/subscriber.js';

const rows = document.getElementById('books');
const status = document.getElementById('status');
const log = document.getElementById('log');
const STATUSES = ['available', 'on loan', 'lost'];

const books = new Map(); // "@id" → book

function render() {
  rows.replaceChildren(...[...books.values()].sort((a, b) => a.id - b.id).map(row));
  document.getElementById('empty').hidden = books.size > 0;
}

function row(book) {
  const tr = document.createElement('tr');
  tr.dataset.id = book['@id'];
  const cell = (text) => {
    const td = document.createElement('td');
    td.textContent = text ?? '';
    return td;
  };
  const select = document.createElement('select');
  select.setAttribute('aria-label', `Status of ${book.title}`);
  for (const s of STATUSES) select.add(new Option(s, s, false, s === book.status));
  select.onchange = () => api('PATCH', book['@id'], { status: select.value });
  const statusCell = document.createElement('td');
  statusCell.append(select);
  const del = document.createElement('button');
  del.textContent = 'Delete';
  del.className = 'delete';
  del.onclick = () => api('DELETE', book['@id']);
  const actions = document.createElement('td');
  actions.append(del);
  tr.append(cell(book.title), cell(book.author), cell(book.year), statusCell, actions);
  return tr;
}

/** Calls the API; shows its error (the 422's message, say) under the form. Returns whether it worked. */
async function api(method, url, body) {
  const error = document.getElementById('error');
  let res;
  try {
    res = await fetch(url, {
      method,
      headers: body ? { 'Content-Type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    res = { ok: false, status: 0, statusText: String(err), json: async () => ({}) };
  }
  if (res.ok) {
    error.hidden = true;
    return true;
  }
  const detail = await res.json().catch(() => ({}));
  error.textContent = `${method} ${url}: ${res.status ? `${res.status} ` : ''}${detail.error ?? res.statusText}`;
  error.hidden = false;
  return false;
}

document.getElementById('new-book').onsubmit = async (event) => {
  event.preventDefault();
  const form = event.target;
  const year = form.year.value.trim();
  // Not Number(year): Number('abcd') is NaN, which JSON turns into null, and the book would be
  // saved without a year. The API validates what was typed, and answers 422 for "abcd".
  const body = { title: form.title.value, author: form.author.value, year: year === '' ? null : /^-?\d+$/.test(year) ? Number(year) : year };
  // The form keeps what was typed when the API refuses it.
  if (await api('POST', '/books', body)) form.reset();
};

// 1. The collection, and where its updates are published.
const res = await fetch('/books', { headers: { Accept: 'application/ld+json' } });
const discovery = parseDiscovery(res.headers.get('link'), res.url);
for (const book of (await res.json()).member) books.set(book['@id'], book);
render();

// 2. Every book's topic: <collection IRI>/{id}, from the last event the collection reflects.
const sub = subscribe(discovery.hubUrls[0], {
  topics: [`${discovery.selfUrl}/{id}`],
  lastEventId: discovery.lastEventId,
});
sub.on('open', () => {
  status.textContent = 'live';
  status.dataset.state = 'open';
});
sub.on('error', () => {
  status.textContent = 'reconnecting…';
  status.dataset.state = 'error';
});
sub.on('message', (event) => {
  const doc = JSON.parse(event.data);
  const li = document.createElement('li');
  li.textContent = event.data;
  log.prepend(li);
  // A deletion is published as {"@id": …} alone; anything else is the new state of the book.
  if (Object.keys(doc).length === 1) books.delete(doc['@id']);
  else books.set(doc['@id'], doc);
  render();
});
window.__booksSubscription = sub;
