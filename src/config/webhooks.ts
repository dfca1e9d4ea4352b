/**
 * Webhook settings: the `webhook <name> { url …; topic …; match …; token …; secret …; batch … }`
 * directive (also the JSON file's `webhooks` list, turned into the same blocks), and the
 * settings every webhook shares (`webhook_allow`, `webhook_timeout`, `webhook_give_up`,
 * `webhook_backoff_min`, `webhook_backoff_max`, `webhook_lease`). Any of them turns webhooks on;
 * the `webhooks` directive alone turns them on with none configured (the API then registers them).
 */
import type { WebhookSelector } from '../core/webhook-store.js';
import { AllowList, definitionProblem, type WebhookOptions } from '../webhooks/index.js';
import { type Ctx, type Layer, put, type RawWebhook } from './settings.js';

/** The shape of a parsed directive (directives.ts), restated to keep the import one-way. */
interface DirectiveLike {
  name: string;
  args: string[];
  block?: DirectiveLike[];
}

const SELECTORS: Record<string, WebhookSelector['type']> = { topic: 'topic', match: 'exact', match_exact: 'exact', match_urlpattern: 'urlpattern' };
const OPTIONS = ['url', 'token', 'secret', 'batch', ...Object.keys(SELECTORS)];

/** `webhook <name> { … }`: one webhook; a later block with the same name replaces it. */
export function webhookDirective(d: DirectiveLike, label: string, layer: Layer, ctx: Ctx, dir: string): void {
  if (d.args.length !== 1 || (d.args[0] as string).trim() === '' || !d.block) {
    ctx.errors.push(`${label}: expected 'webhook <name> { url …; topic …; secret … }'`);
    return;
  }
  const raw: RawWebhook = { name: d.args[0] as string, selectors: [], source: label };
  for (const sub of d.block) {
    const subLabel = `${label} ${sub.name}`;
    const type = SELECTORS[sub.name];
    if (type) {
      if (sub.args.length === 0) ctx.errors.push(`${subLabel}: missing value`);
      for (const v of sub.args) raw.selectors.push({ type, value: v });
      continue;
    }
    if (!OPTIONS.includes(sub.name)) {
      ctx.errors.push(`${label}: unknown option '${sub.name}'; expected ${OPTIONS.join(', ')}`);
      continue;
    }
    if (sub.args.length !== 1 || sub.block) {
      ctx.errors.push(`${subLabel}: expected one value`);
      continue;
    }
    const v = sub.args[0] as string;
    if (sub.name === 'batch') {
      if (!/^\d+$/.test(v)) ctx.errors.push(`${subLabel}: expected a number of updates per request`);
      else raw.batch = Number(v);
    } else if (sub.name === 'url') raw.url = v;
    else if (sub.name === 'token') raw.token = v;
    else raw.secret = v;
  }
  const existing = layer.webhookDefs?.value ?? [];
  put(layer, 'webhookDefs', [...existing.filter((w) => w.name !== raw.name), raw], label, dir);
}

/** The hub's webhook options, or undefined when nothing turns webhooks on. */
export function webhooksFromSettings(s: Layer, ctx: Ctx, baseUrl: string): WebhookOptions | undefined {
  const defs = s.webhookDefs?.value ?? [];
  const shared = [s.webhookAllow, s.webhookTimeout, s.webhookGiveUp, s.webhookBackoffMin, s.webhookBackoffMax, s.webhookLease];
  const enabled = s.webhooks?.value;
  if (enabled === false) {
    if (defs.length > 0) ctx.errors.push(`${s.webhooks?.source}: webhooks are turned off, yet ${defs[0]?.source} configures one`);
    return undefined;
  }
  if (!enabled && defs.length === 0 && shared.every((v) => v === undefined)) return undefined;
  const allow = s.webhookAllow?.value ?? [];
  try {
    new AllowList(allow);
  } catch (err) {
    ctx.errors.push(`${s.webhookAllow?.source}: ${(err as Error).message}`);
  }
  const definitions = [];
  for (const raw of defs) {
    if (raw.url === undefined) ctx.errors.push(`${raw.source}: missing 'url'`);
    if (raw.secret === undefined) ctx.errors.push(`${raw.source}: missing 'secret' (the key of the Webhook-Signature HMAC)`);
    if (raw.url === undefined || raw.secret === undefined) continue;
    const def = { name: raw.name, url: raw.url, selectors: raw.selectors, token: raw.token, secret: raw.secret, batch: raw.batch };
    const problem = definitionProblem(def, baseUrl);
    if (problem) ctx.errors.push(`${raw.source}: ${problem}`);
    else definitions.push(def);
  }
  const o: WebhookOptions = { definitions, allow };
  if (s.webhookTimeout) o.timeout = s.webhookTimeout.value;
  if (s.webhookGiveUp) o.giveUp = s.webhookGiveUp.value;
  if (s.webhookBackoffMin) o.minBackoff = s.webhookBackoffMin.value;
  if (s.webhookBackoffMax) o.maxBackoff = s.webhookBackoffMax.value;
  if (s.webhookLease) o.leaseTtl = s.webhookLease.value;
  if (o.minBackoff !== undefined && o.maxBackoff !== undefined && o.minBackoff > o.maxBackoff) {
    ctx.errors.push(`${s.webhookBackoffMin?.source}: longer than webhook_backoff_max`);
  }
  return o;
}
