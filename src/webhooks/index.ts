/**
 * webhooks/: webhook subscribers, servers that receive updates as signed HTTP POSTs instead of
 * holding an event stream. The definition and its checks (definition.ts), the SSRF allow-list
 * (allow-list.ts), the request (client.ts), the signature (signature.ts), one webhook's delivery
 * loop (delivery.ts) and the runner of a hub process (runner.ts). Durable state (registrations,
 * cursors, leases) is the transport's (core/webhook-store.ts). May import core/, auth/,
 * observability/ and util/; the HTTP API lives in http/webhooks-api.ts.
 */
export { AllowList } from './allow-list.js';
export { definitionProblem, MIN_SECRET_LENGTH, type WebhookDefinition, type WebhookSelector } from './definition.js';
export { WebhookRunner, type RunnerDeps, type WebhookOptions, type WebhookView } from './runner.js';
export { DEFAULT_TOLERANCE, SIGNATURE_HEADER, signatureHeader, verifySignature } from './signature.js';
export type { WebhookStatus } from './status.js';
