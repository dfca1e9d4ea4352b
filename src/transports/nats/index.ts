/*
 * The NATS JetStream transport, for hubs spread over several processes or machines: every update
 * is a message in one JetStream stream (its sequence is the update's seq), each node fans the
 * stream out with its own ordered push consumer, history is read back from the stream itself, and
 * presence lives in two KV buckets kept alive by per-node heartbeats. transport.ts holds the
 * connection and the Transport calls; the stream setup, history reads, presence, the push
 * consumer, the wire format and the URL parsing each have their own file. This file is the entry
 * the transport registry and tests import from.
 */
export { NatsTransport, type NatsTransportOptions } from './transport.js';
export { natsTransportFromUrl } from './url.js';
