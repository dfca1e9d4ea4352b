// The ceiling: a bare SSE broadcaster with no protocol, no auth, no routing.
//   node bench/bare.mjs --port P [--procs N] [--mode net|http] [--heartbeat ms] [--no-coalesce] [--ack-first]
// mode net (default): node:net, hand-written HTTP heads, pre-framed SSE bytes written to every socket.
// mode http: the same over plain node:http (a reference point for per-connection memory).
// GET /sub?topic=T     → a 200 event stream on topic T (a Last-Event-ID replays later frames)
// POST /publish?topic=T → body "<id>\n<data>"; the frame is written to every stream on T, in
//                        every process (one hash lookup: the cheapest possible routing)
// GET /healthz         → 200
// With --procs N > 1, node:cluster workers share the port (round-robin) and the primary relays
// each publish to the other workers.
import cluster from 'node:cluster';
import http from 'node:http';
import net from 'node:net';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const port = Number(opt('port', '0'));
const procs = Number(opt('procs', '1'));
const mode = opt('mode', 'net');
const heartbeat = Number(opt('heartbeat', '40000'));
const coalesce = !args.includes('--no-coalesce');
// Without coalescing a publish is written to every stream before its 200 is sent; --ack-first
// sends the 200 first (as the coalescing mode and the hub do), a diagnostic: a sequential
// publisher waits for the 200, so when it is sent decides whether the next publish arrives
// during a fan-out (and waits for it) or after it.
const ackFirst = args.includes('--ack-first');
const HISTORY = 100_000;

if (cluster.isPrimary && procs > 1) {
  cluster.schedulingPolicy = cluster.SCHED_RR;
  const workers = [];
  for (let i = 0; i < procs; i++) workers.push(cluster.fork());
  for (const w of workers) {
    w.on('message', (m) => {
      if (m?.relay) for (const o of workers) if (o !== w && o.isConnected()) o.send(m);
    });
  }
  let ready = 0;
  cluster.on('listening', () => {
    if (++ready === procs) process.stderr.write(`bare ${mode} ready on ${port} with ${procs} processes\n`);
  });
  const stop = () => {
    for (const w of workers) w.process.kill('SIGKILL');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  /** Frames in publish order, for replay: seq → frame. */
  const history = new Map();
  let oldest = 0;
  const remember = (seq, frame) => {
    history.set(seq, frame);
    while (history.size > HISTORY) history.delete(oldest++);
  };
  const seqOf = (id) => Number(/(\d+)$/.exec(id)?.[1] ?? -1);
  const COMMENT = Buffer.from(':\n');

  /** @type {Set<{ write(b: Buffer): unknown }>} */
  const streams = new Set();
  /** @type {Map<string, Set<{ write(b: Buffer): unknown }>>} topic (as sent, URL-encoded) → streams */
  const byTopic = new Map();
  const topicOf = (url) => /[?&]topic=([^&\s]*)/.exec(url)?.[1] ?? '';
  const add = (stream, topic) => {
    streams.add(stream);
    let set = byTopic.get(topic);
    if (!set) byTopic.set(topic, (set = new Set()));
    set.add(stream);
  };
  const remove = (stream, topic) => {
    streams.delete(stream);
    const set = byTopic.get(topic);
    set?.delete(stream);
    if (set?.size === 0) byTopic.delete(topic);
  };
  // Frames published during one turn of the event loop are written together: one write (one
  // syscall, one read on the other side) per stream and turn instead of one per frame.
  /** @type {Map<string, Buffer[]>} */
  const pending = new Map();
  const flush = () => {
    for (const [topic, frames] of pending) {
      // Remembered only now: a stream that joins before the flush gets these live, not replayed.
      for (const f of frames) if (f.seq >= 0) remember(f.seq, f);
      const set = byTopic.get(topic);
      if (!set) continue;
      const chunk = frames.length === 1 ? frames[0] : Buffer.concat(frames);
      for (const s of set) s.write(chunk);
    }
    pending.clear();
  };
  const broadcast = (topic, id, data) => {
    const frame = Buffer.from(`id: ${id}\ndata: ${data}\n\n`);
    const seq = seqOf(id);
    if (!coalesce) {
      if (seq >= 0) remember(seq, frame);
      const set = byTopic.get(topic);
      if (set) for (const s of set) s.write(frame);
      return;
    }
    let list = pending.get(topic);
    if (!list) {
      if (pending.size === 0) setImmediate(flush);
      pending.set(topic, (list = []));
    }
    frame.seq = seq;
    list.push(frame);
  };
  const replay = (stream, lastEventId) => {
    if (!lastEventId) return;
    const from = seqOf(lastEventId);
    for (let s = Math.max(from + 1, oldest); history.has(s); s++) stream.write(history.get(s));
  };
  process.on('message', (m) => {
    if (m?.relay) broadcast(m.topic, m.id, m.data);
  });
  if (heartbeat > 0) setInterval(() => {
    for (const s of streams) s.write(COMMENT);
  }, heartbeat).unref();

  const publishBody = (topic, body) => {
    const nl = body.indexOf('\n');
    const id = body.slice(0, nl);
    const data = body.slice(nl + 1);
    broadcast(topic, id, data);
    if (procs > 1) process.send?.({ relay: true, topic, id, data });
    return id;
  };

  if (mode === 'http') {
    const server = http.createServer((req, res) => {
      if (req.method === 'POST' && req.url === '/.well-known/mercure') {
        // The publish ceiling for the HTTP path: node:http reading the hub's own form body
        // (topic, id, data), delivering it and answering 200 with the id. No auth, no checks.
        let body = '';
        req.setEncoding('utf8');
        req.on('data', (d) => (body += d));
        req.on('end', () => {
          const form = new URLSearchParams(body);
          const id = form.get('id') ?? String(Date.now());
          broadcast(encodeURIComponent(form.get('topic') ?? ''), id, form.get('data') ?? '');
          res.writeHead(200, { 'Content-Type': 'text/plain' });
          res.end(id);
        });
        return;
      }
      if (req.method === 'POST') {
        let body = '';
        req.setEncoding('latin1');
        req.on('data', (d) => (body += d));
        req.on('end', () => res.end(publishBody(topicOf(req.url ?? ''), body)));
        return;
      }
      if (req.url === '/healthz') {
        res.end('ok');
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
      res.write(COMMENT);
      const stream = { write: (b) => res.write(b) };
      const topic = topicOf(req.url ?? '');
      add(stream, topic);
      replay(stream, req.headers['last-event-id']);
      res.on('close', () => remove(stream, topic));
    });
    server.keepAliveTimeout = 60_000;
    server.headersTimeout = 10_000;
    server.requestTimeout = 0;
    server.listen(port, '127.0.0.1', () => procs === 1 && process.stderr.write(`bare http ready on ${port}\n`));
  } else {
    const STREAM_HEAD = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n:\n');
    const server = net.createServer((sock) => {
      sock.setNoDelay(true);
      let buf = '';
      let streaming = false;
      let topic = '';
      const onData = (d) => {
        buf += d.latin1Slice(0, d.length);
        for (;;) {
          const he = buf.indexOf('\r\n\r\n');
          if (he < 0) return;
          const head = buf.slice(0, he);
          if (head.startsWith('POST')) {
            const cl = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
            if (buf.length < he + 4 + cl) return;
            const body = Buffer.from(buf.slice(he + 4, he + 4 + cl), 'latin1').toString('utf8');
            buf = buf.slice(he + 4 + cl);
            const nl = body.indexOf('\n');
            const ack = `HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(body.slice(0, nl))}\r\n\r\n${body.slice(0, nl)}`;
            if (ackFirst) sock.write(ack);
            publishBody(topicOf(head.slice(0, head.indexOf('\r\n'))), body);
            if (!ackFirst) sock.write(ack);
            continue;
          }
          buf = '';
          if (head.startsWith('GET /healthz')) {
            sock.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
            return;
          }
          // Any other GET: an event stream from here on; nothing more is read.
          streaming = true;
          sock.removeListener('data', onData);
          sock.write(STREAM_HEAD);
          topic = topicOf(head.slice(0, head.indexOf('\r\n')));
          add(sock, topic);
          replay(sock, /\r\nlast-event-id:\s*([^\r]*)/i.exec(head)?.[1]);
          return;
        }
      };
      sock.on('data', onData);
      sock.on('error', () => sock.destroy());
      sock.on('close', () => {
        if (streaming) remove(sock, topic);
      });
    });
    server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => procs === 1 && process.stderr.write(`bare net ready on ${port}\n`));
  }
  process.on('SIGTERM', () => process.exit(0));
}
