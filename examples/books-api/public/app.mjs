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

async function api(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok && res.status !== 204) alert((await res.json()).error ?? res.statusText);
}

document.getElementById('new-book').onsubmit = async (event) => {
  event.preventDefault();
  const form = event.target;
  const year = form.year.value.trim();
  await api('POST', '/books', { title: form.title.value, author: form.author.value, year: year === '' ? null : Number(year) });
  form.reset();
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
