// The notifications page: a native EventSource on the hub (another origin), with credentials so
// that the browser sends the HttpOnly mercureAuthorization cookie. Page scripts cannot read it.
const config = JSON.parse(document.getElementById('config').textContent);
const list = document.getElementById('notifications');
const status = document.getElementById('status');

const url = new URL(config.hubUrl);
url.searchParams.append('topic', config.topic);
const source = new EventSource(url, { withCredentials: true });
source.onopen = () => {
  status.textContent = 'live';
  status.dataset.state = 'open';
};
source.onerror = () => {
  status.textContent = source.readyState === EventSource.CLOSED ? 'refused' : 'reconnecting…';
  status.dataset.state = 'error';
};
source.onmessage = (event) => {
  const n = JSON.parse(event.data);
  const li = document.createElement('li');
  li.className = 'notification';
  li.dataset.to = n.to;
  const head = document.createElement('div');
  head.className = 'head';
  head.textContent = `from ${n.from} · ${new Date(n.at).toLocaleTimeString()}`;
  const body = document.createElement('p');
  body.textContent = n.text;
  li.append(head, body);
  list.prepend(li);
  document.getElementById('none').hidden = true;
};

// The sender sees nothing arrive on their own page (the notification is private to the
// recipient): the form says whether the app accepted it.
const sent = document.getElementById('sent');
document.getElementById('send').onsubmit = async (event) => {
  event.preventDefault();
  const form = event.target;
  const to = form.to.value;
  sent.dataset.state = 'sending';
  sent.textContent = 'sending…';
  try {
    const res = await fetch('/notify', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ to, text: form.text.value }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error ?? `${res.status} ${res.statusText}`);
    sent.dataset.state = 'ok';
    sent.textContent = `Sent to ${to} at ${new Date(body.at).toLocaleTimeString()}`;
    form.text.value = '';
  } catch (err) {
    sent.dataset.state = 'error';
    sent.textContent = `Not sent: ${err.message}`;
  }
};
