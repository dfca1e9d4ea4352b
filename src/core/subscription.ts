import type { SubscriptionRecord } from './transport.js';

/** Root of the hub's reserved namespace; subscription events and the API live below it. */
export const HUB_PATH = '/.well-known/mercure';
export const SUBSCRIPTIONS_PATH = `${HUB_PATH}/subscriptions`;

/** Go's url.QueryEscape, which the reference hub uses for draft-07 subscription topics (space → +). */
export function queryEscape(value: string): string {
  return encodeURIComponent(value)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

/** RFC 6570 simple-string expansion: every character but the unreserved ones, encoded once. */
export function pathEscape(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** Topic (and API path) of one subscription, in the shape of the subscriber's protocol version. */
export function subscriptionTopic(record: SubscriptionRecord): string {
  if (record.kind === 'selector') {
    return `${SUBSCRIPTIONS_PATH}/${queryEscape(record.match)}/${queryEscape(record.subscriber)}`;
  }
  return `${SUBSCRIPTIONS_PATH}/${record.kind}/${pathEscape(record.match)}/${pathEscape(record.subscriber)}`;
}

/** The JSON document describing a subscription (subscription events and the API). */
export function subscriptionDocument(record: SubscriptionRecord, active: boolean): Record<string, unknown> {
  const id = subscriptionTopic(record);
  if (record.kind === 'selector') {
    const doc: Record<string, unknown> = {
      id,
      type: 'Subscription',
      subscriber: record.subscriber,
      topic: record.match,
      active,
    };
    if (record.payload !== undefined) doc.payload = record.payload;
    return doc;
  }
  const doc: Record<string, unknown> = {
    id,
    type: 'subscription',
    match_type: record.kind,
    match: record.match,
    subscriber: record.subscriber,
    active,
  };
  if (record.payload !== undefined) doc.payload = record.payload;
  return doc;
}

/** The body of a subscription event: draft-07 is JSON-LD with a context, pretty-printed like the reference. */
export function subscriptionEventData(record: SubscriptionRecord, active: boolean): string {
  const doc = subscriptionDocument(record, active);
  if (record.kind === 'selector') {
    return JSON.stringify({ '@context': 'https://mercure.rocks/', ...doc }, null, 2);
  }
  return JSON.stringify(doc);
}
