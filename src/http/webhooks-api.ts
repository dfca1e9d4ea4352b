/**
 * The webhooks API under /.well-known/mercure/webhooks:
 *
 *   GET    /webhooks                 the webhooks the token may manage, with status and cursor
 *   POST   /webhooks                 register one (JSON body, below): 201, 400, 403, 409
 *   GET    /webhooks/{name}          one
 *   DELETE /webhooks/{name}          204; 409 for a webhook of the configuration
 *   POST   /webhooks/{name}/enable   re-enable a failing webhook: its owner retries at once (202)
 *
 * Who may: a publisher token, in the Authorization header only (a cookie would let any page the
 * browser visits register webhooks), whose publish grants match every selector of the webhook
 * taken as a topic, so a token can only point a webhook at what it could publish itself; a token
 * that may publish `*` manages every webhook. Which private updates a webhook receives is decided
 * by the webhook's own `token`, never by the token that registered it. Tokens and secrets are
 * never shown back.
 */
import { canPublish, type Grants } from '../auth/index.js';
import { HUB_PATH } from '../core/subscription.js';
import type { WebhookDefinition, WebhookRunner, WebhookSelector } from '../webhooks/index.js';
import { authenticate, isAuthProblem } from './authenticate.js';
import { sendAuthProblem } from './auth-response.js';
import type { HubContext } from './context.js';
import { BodyTooLargeError, origin, readBody, send, sendJson, type Request, type Response } from './http-util.js';

export const WEBHOOKS_PATH = `${HUB_PATH}/webhooks`;
const MAX_BODY = 64 * 1024;
const SELECTOR_KEYS = { topic: 'topic', match: 'exact', match_exact: 'exact', match_urlpattern: 'urlpattern' } as const;
const KEYS = ['name', 'url', 'token', 'secret', 'batch', ...Object.keys(SELECTOR_KEYS)];

function mayManage(grants: Grants, def: { selectors: readonly WebhookSelector[] }): boolean {
  return canPublish(grants, def.selectors.map((s) => s.value));
}

/** The JSON body of a registration, or why it is malformed. */
export function parseRegistration(doc: unknown): WebhookDefinition | string {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return 'expected a JSON object';
  const o = doc as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KEYS.includes(k)) return `unknown field '${k}' (expected ${KEYS.join(', ')})`;
  const selectors: WebhookSelector[] = [];
  for (const [key, type] of Object.entries(SELECTOR_KEYS)) {
    const v = o[key];
    if (v === undefined) continue;
    const list = Array.isArray(v) ? v : [v];
    for (const s of list) {
      if (typeof s !== 'string') return `${key} must be a string or a list of strings`;
      selectors.push({ type, value: s });
    }
  }
  for (const k of ['name', 'url', 'secret'] as const) if (typeof o[k] !== 'string') return `${k} is required (a string)`;
  if (o.token !== undefined && typeof o.token !== 'string') return 'token must be a string';
  if (o.batch !== undefined && typeof o.batch !== 'number') return 'batch must be a number';
  return {
    name: o.name as string,
    url: o.url as string,
    selectors,
    token: o.token as string | undefined,
    secret: o.secret as string,
    batch: o.batch as number | undefined,
  };
}

export async function handleWebhooks(ctx: HubContext, runner: WebhookRunner | null, req: Request, res: Response, path: string): Promise<void> {
  if (!runner) {
    send(res, 404, 'Not Found: webhooks are disabled (configure a webhook, or the "webhooks" directive)\n');
    return;
  }
  const rest = path === WEBHOOKS_PATH || path === WEBHOOKS_PATH + '/' ? [] : path.slice(WEBHOOKS_PATH.length + 1).split('/');
  const method = req.method ?? 'GET';
  const base = origin(req, ctx.options.trustProxy);
  if (!req.headers.authorization) {
    sendAuthProblem(res, { kind: 'missing' }, 8, base);
    return;
  }
  const auth = await authenticate(ctx, req, 'publisher', undefined);
  if (isAuthProblem(auth)) {
    sendAuthProblem(res, auth, 8, base);
    return;
  }
  const grants = auth.grants;
  if (!grants || !grants.canPublish) {
    sendAuthProblem(res, { kind: 'insufficient_scope', message: 'managing webhooks needs a publisher token' }, 8, base);
    return;
  }
  const forbidden = (): void =>
    sendAuthProblem(res, { kind: 'insufficient_scope', message: "the token's publish grants do not cover every selector of this webhook" }, 8, base);

  if (rest.length === 0) {
    if (method === 'GET' || method === 'HEAD') {
      const all = await runner.list();
      sendJson(res, 200, { webhooks: all.filter((w) => mayManage(grants, w)) });
      return;
    }
    if (method !== 'POST') {
      send(res, 405, `Method Not Allowed: ${method}\n`, { Allow: 'GET, HEAD, POST' });
      return;
    }
    let doc: unknown;
    try {
      doc = JSON.parse((await readBody(req, MAX_BODY)).toString('utf8'));
    } catch (err) {
      if (err instanceof BodyTooLargeError) send(res, 413, `Payload Too Large: ${err.message}\n`);
      else send(res, 400, 'Bad Request: the body must be JSON\n');
      return;
    }
    const def = parseRegistration(doc);
    if (typeof def === 'string') {
      send(res, 400, `Bad Request: ${def}\n`);
      return;
    }
    if (def.selectors.length > 0 && !mayManage(grants, def)) return forbidden();
    const result = await runner.create(def);
    if (!result.created) {
      send(res, result.conflict ? 409 : 400, `${result.conflict ? 'Conflict' : 'Bad Request'}: ${result.problem}\n`);
      return;
    }
    const view = (await runner.list()).find((w) => w.name === def.name);
    sendJson(res, 201, view, { Location: `${WEBHOOKS_PATH}/${encodeURIComponent(def.name)}` });
    return;
  }

  let name: string;
  try {
    name = decodeURIComponent(rest[0] as string);
  } catch {
    send(res, 404, 'Not Found: no such webhook\n');
    return;
  }
  const action = rest.slice(1).join('/');
  const def = await runner.definition(name);
  if (!def || (action !== '' && action !== 'enable')) {
    send(res, 404, 'Not Found: no such webhook\n');
    return;
  }
  if (!mayManage(grants, def)) return forbidden();
  if (action === 'enable') {
    if (method !== 'POST') {
      send(res, 405, `Method Not Allowed: ${method}\n`, { Allow: 'POST' });
      return;
    }
    await runner.enable(name);
    sendJson(res, 202, { name, enabled: true });
    return;
  }
  if (method === 'GET' || method === 'HEAD') {
    const view = (await runner.list()).find((w) => w.name === name);
    if (view) sendJson(res, 200, view);
    else send(res, 404, 'Not Found: no such webhook\n');
    return;
  }
  if (method === 'DELETE') {
    const removed = await runner.remove(name);
    if (removed === 'configured') send(res, 409, 'Conflict: this webhook is defined by the configuration; remove it there\n');
    else if (removed) send(res, 204, '');
    else send(res, 404, 'Not Found: no such webhook\n');
    return;
  }
  send(res, 405, `Method Not Allowed: ${method}\n`, { Allow: 'GET, HEAD, DELETE' });
}
