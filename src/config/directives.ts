/**
 * Caddyfile-style directives (MERCURE_EXTRA_DIRECTIVES, GLOBAL_OPTIONS): the tokenizer and the
 * handlers of the reference `mercure { }` block. The JSON config file reuses the same handlers
 * (its keys are the directive names), so both accept exactly the same settings.
 */
import { type Ctx, type Layer, put, type RawIssuer, type RawKey, type SimpleKey, splitList, suggest } from './settings.js';
import { algP, apply, jwksP, parseBool } from './values.js';
import { webhookDirective } from './webhooks.js';

export interface Directive {
  name: string;
  args: string[];
  block?: Directive[];
  line: number;
}

/** `nl`: a line break (outside quotes) separates this token from the previous one. */
interface Token { text: string; line: number; quoted: boolean; nl: boolean }

function substitutePlaceholders(text: string, env: Record<string, string | undefined>): string {
  return text
    .replace(/\{\$([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}/g, (_, name: string, def?: string) => env[name] || def || '')
    .replace(/\{env\.([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => env[name] ?? '');
}

/**
 * Lexes and parses Caddyfile-style directives: one per line, arguments separated by blanks,
 * "double" or `backtick` quotes, `# comments`, `name args {` ... `}` blocks, `{$VAR}`,
 * `{$VAR:default}` and `{env.VAR}` placeholders. A literal two-character `\n` outside quotes is a
 * line break (for .env files that cannot hold real newlines).
 */
export function parseDirectives(text: string, env: Record<string, string | undefined> = {}): { directives: Directive[]; errors: string[] } {
  const tokens: Token[] = [];
  const errors: string[] = [];
  let line = 1;
  let i = 0;
  let nl = true;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === '\n') { line++; i++; nl = true; continue; }
    if (c === '\\' && text[i + 1] === 'n') { line++; i += 2; nl = true; continue; }
    if (/\s/.test(c)) { i++; continue; }
    if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
      continue;
    }
    if (c === '"' || c === '`') {
      const start = line;
      let out = '';
      i++;
      while (i < text.length && text[i] !== c) {
        if (c === '"' && text[i] === '\\' && (text[i + 1] === '"' || text[i + 1] === '\\')) { out += text[i + 1]; i += 2; continue; }
        if (text[i] === '\n') line++;
        out += text[i];
        i++;
      }
      if (i >= text.length) errors.push(`line ${start}: unterminated quoted string`);
      i++;
      tokens.push({ text: substitutePlaceholders(out, env), line: start, quoted: true, nl });
      nl = false;
      continue;
    }
    let word = '';
    while (i < text.length && !/\s/.test(text[i] as string) && !(text[i] === '\\' && text[i + 1] === 'n')) {
      word += text[i];
      i++;
    }
    tokens.push({ text: word === '{' || word === '}' ? word : substitutePlaceholders(word, env), line, quoted: false, nl });
    nl = false;
  }

  let pos = 0;
  const isOpen = (t: Token | undefined): boolean => t !== undefined && !t.quoted && t.text === '{';
  const isClose = (t: Token | undefined): boolean => t !== undefined && !t.quoted && t.text === '}';
  const parseBlock = (depth: number): Directive[] => {
    const out: Directive[] = [];
    while (pos < tokens.length) {
      const t = tokens[pos] as Token;
      if (isClose(t)) {
        if (depth > 0) return out;
        errors.push(`line ${t.line}: unexpected '}'`);
        pos++;
        continue;
      }
      if (isOpen(t)) {
        errors.push(`line ${t.line}: unexpected '{'`);
        pos++;
        continue;
      }
      const d: Directive = { name: t.text, args: [], line: t.line };
      pos++;
      while (pos < tokens.length && !(tokens[pos] as Token).nl && !isOpen(tokens[pos]) && !isClose(tokens[pos])) {
        d.args.push((tokens[pos] as Token).text);
        pos++;
      }
      if (isOpen(tokens[pos]) && !(tokens[pos] as Token).nl) {
        pos++;
        d.block = parseBlock(depth + 1);
        if (isClose(tokens[pos])) pos++;
        else errors.push(`line ${t.line}: missing '}' closing the '${d.name}' block`);
      }
      out.push(d);
    }
    return out;
  };
  const directives = parseBlock(0);
  return { directives, errors };
}

type Handler = (d: Directive, label: string, layer: Layer, ctx: Ctx, dir: string) => void;

function noBlock(d: Directive, label: string, ctx: Ctx): boolean {
  if (d.block) { ctx.errors.push(`${label}: does not take a block`); return false; }
  return true;
}

function simple(key: SimpleKey): Handler {
  return (d, label, layer, ctx, dir) => {
    if (noBlock(d, label, ctx)) apply(layer, key, d.args, label, ctx, dir);
  };
}

/** `publisher_jwt <key> [alg]`: the algorithm defaults to HS256 when omitted, as in the reference. */
function jwtHandler(role: 'publisher' | 'subscriber'): Handler {
  return (d, label, layer, ctx, dir) => {
    if (!noBlock(d, label, ctx)) return;
    if (d.args.length < 1 || d.args.length > 2 || (d.args[0] as string).trim() === '') {
      ctx.errors.push(`${label}: expected a key and an optional algorithm`);
      return;
    }
    put(layer, role === 'publisher' ? 'publisherKey' : 'subscriberKey', d.args[0] as string, label, dir);
    const alg = d.args.length === 2 ? algP([d.args[1] as string], label, ctx) : 'HS256';
    put(layer, role === 'publisher' ? 'publisherAlg' : 'subscriberAlg', alg, label, dir);
  };
}

function ignored(hint: string): Handler {
  return (_d, label, _layer, ctx) => {
    ctx.warnings.push(`${label}: not supported by Quicksilver; ignored${hint ? ` (${hint})` : ''}`);
  };
}

/**
 * `transport local` → `memory://`; `transport bolt { path p; size n; ... }` → `bolt://p?size=n&...`
 * (path default `mercure.db`); another name → `<name>://<path>?<options>`, or its `url` option
 * with the other options appended.
 */
const transportHandler: Handler = (d, label, layer, ctx, dir) => {
  if (d.args.length !== 1) {
    ctx.errors.push(`${label}: expected a transport name (local, bolt, ...)`);
    return;
  }
  const name = (d.args[0] as string).toLowerCase();
  const options = new URLSearchParams();
  let path: string | undefined;
  let url: string | undefined;
  for (const sub of d.block ?? []) {
    if (sub.args.length !== 1 || sub.block) {
      ctx.errors.push(`${label}: '${sub.name}' expects one value`);
      continue;
    }
    if (sub.name === 'path') path = sub.args[0];
    else if (sub.name === 'url') url = sub.args[0];
    else options.append(sub.name, sub.args[0] as string);
  }
  let result: string;
  if (name === 'local' || name === 'memory') {
    result = `memory://${options.size ? `?${options}` : ''}`;
  } else {
    const base = url ?? `${name}://${path ?? (name === 'bolt' ? 'mercure.db' : '')}`;
    result = options.size ? `${base}${base.includes('?') ? '&' : '?'}${options}` : base;
  }
  apply(layer, 'transportUrl', [result], label, ctx, dir);
};

const protocolHandler: Handler = (d, label, _layer, ctx) => {
  if (!noBlock(d, label, ctx)) return;
  if (d.args.length !== 1 || !['7', '8'].includes(d.args[0] as string)) {
    ctx.errors.push(`${label}: expected 7 or 8`);
  }
  // Quicksilver speaks both protocol versions; nothing to switch.
};

const publicUrlsHandler: Handler = (d, label, layer, ctx, dir) => {
  if (!noBlock(d, label, ctx)) return;
  const urls = splitList(d.args);
  if (urls.length === 0) {
    ctx.errors.push(`${label}: missing value`);
    return;
  }
  if (urls.length > 1) ctx.warnings.push(`${label}: only one public URL is supported; using '${urls[0]}'`);
  apply(layer, 'publicUrl', [urls[0] as string], label, ctx, dir);
};

function parseRoleBlock(d: Directive, label: string, ctx: Ctx, dir: string): RawKey | undefined {
  if (d.args.length > 0 || !d.block) {
    ctx.errors.push(`${label}: expected a block with 'jwt <key> [alg]' or 'jwks_uri <url>'`);
    return undefined;
  }
  const raw: RawKey = {};
  for (const sub of d.block) {
    const subLabel = `${label} ${sub.name}`;
    if (sub.name === 'jwt') {
      if (sub.args.length < 1 || sub.args.length > 2) {
        ctx.errors.push(`${subLabel}: expected a key and an optional algorithm`);
        continue;
      }
      raw.key = { value: sub.args[0] as string, source: subLabel, dir };
      const alg = sub.args.length === 2 ? algP([sub.args[1] as string], subLabel, ctx) : 'HS256';
      if (alg) raw.alg = { value: alg, source: subLabel, dir };
    } else if (sub.name === 'jwks_uri' || sub.name === 'jwks_url') {
      const url = jwksP(sub.args, subLabel, ctx);
      if (url) raw.jwksUrl = { value: url, source: subLabel, dir };
    } else {
      ctx.errors.push(`${label}: unknown option '${sub.name}'; expected jwt or jwks_uri`);
    }
  }
  return raw;
}

/** `issuer <iss> { authorization_server; publisher { jwt <key> [alg] | jwks_uri <url> }; subscriber { ... } }` */
const issuerHandler: Handler = (d, label, layer, ctx, dir) => {
  if (d.args.length !== 1 || (d.args[0] as string).trim() === '') {
    ctx.errors.push(`${label}: expected one issuer identifier`);
    return;
  }
  const raw: RawIssuer = { issuer: d.args[0] as string, authorizationServer: false, source: label };
  for (const sub of d.block ?? []) {
    if (sub.name === 'authorization_server') raw.authorizationServer = sub.args.length === 0 || parseBool(sub.args[0] as string) === true;
    else if (sub.name === 'publisher' || sub.name === 'subscriber') {
      const k = parseRoleBlock(sub, `${label} ${sub.name}`, ctx, dir);
      if (k) raw[sub.name] = k;
    } else ctx.errors.push(`${label}: unknown option '${sub.name}'; expected authorization_server, publisher or subscriber`);
  }
  const existing = layer.issuers?.value ?? [];
  put(layer, 'issuers', [...existing.filter((i) => i.issuer !== raw.issuer), raw], label, dir);
};

/** `acme_domain a b` may be repeated: the names accumulate (as the repeatable flag's do). */
const acmeDomainHandler: Handler = (d, label, layer, ctx, dir) => {
  if (!noBlock(d, label, ctx)) return;
  const before = layer.acmeDomains?.value ?? [];
  apply(layer, 'acmeDomains', d.args, label, ctx, dir);
  const after = layer.acmeDomains;
  if (after && after.value !== before) after.value = [...new Set([...before, ...after.value])];
};

/** Directives of the reference `mercure { }` block (plus a few of ours); also JSON config file keys. */
export const HUB_DIRECTIVES: Record<string, Handler> = {
  publisher_jwt: jwtHandler('publisher'),
  subscriber_jwt: jwtHandler('subscriber'),
  publisher_jwks_url: simple('publisherJwksUrl'),
  subscriber_jwks_url: simple('subscriberJwksUrl'),
  anonymous: simple('anonymous'),
  publish_origins: simple('publishOrigins'),
  cors_origins: simple('corsOrigins'),
  cookie_name: simple('cookieName'),
  subscriptions: simple('subscriptions'),
  heartbeat: simple('heartbeat'),
  write_timeout: simple('writeTimeout'),
  dispatch_timeout: simple('dispatchTimeout'),
  transport: transportHandler,
  transport_url: simple('transportUrl'),
  dedupe_window: simple('dedupeWindow'),
  ui: simple('ui'),
  demo: simple('demo'),
  legacy_hub_path: simple('legacyHubPath'),
  debugger: simple('ui'),
  playground: simple('demo'),
  max_request_body_size: simple('maxBodySize'),
  resource_identifier: simple('resourceIdentifier'),
  trusted_issuers: simple('trustedIssuers'),
  issuer: issuerHandler,
  public_urls: publicUrlsHandler,
  protocol_version_compatibility: protocolHandler,
  topic_selector_cache: ignored('the matcher cache is managed internally'),
  topic_matcher_cache: ignored('the matcher cache is managed internally'),
  subscriber_list_cache_size: ignored(''),
  name: ignored(''),
  subscriber_buffer_size: simple('subscriberBufferSize'),
  max_topics: simple('maxTopics'),
  max_connections_per_ip: simple('maxConnectionsPerIp'),
  max_connections: simple('maxConnections'),
  publish_rate_limit: simple('publishRateLimit'),
  publish_burst: simple('publishBurst'),
  token_cache_size: simple('tokenCacheSize'),
  workers: simple('workers'),
  acme_domain: acmeDomainHandler,
  acme_domains: acmeDomainHandler,
  acme_email: simple('acmeEmail'),
  acme_directory: simple('acmeDirectory'),
  acme_ca_root: simple('acmeCaRoot'),
  acme_dir: simple('acmeDir'),
  acme_http_port: simple('acmeHttpPort'),
  acme_renew_before: simple('acmeRenewBefore'),
  worker_header: simple('workerHeader'),
  h2_ping_interval: simple('h2PingInterval'),
  h2_ping_timeout: simple('h2PingTimeout'),
  webhook: webhookDirective,
  webhooks: simple('webhooks'),
  webhook_allow: simple('webhookAllow'),
  webhook_timeout: simple('webhookTimeout'),
  webhook_give_up: simple('webhookGiveUp'),
  webhook_backoff_min: simple('webhookBackoffMin'),
  webhook_backoff_max: simple('webhookBackoffMax'),
  webhook_lease: simple('webhookLease'),
};


export function applyDirectives(directives: Directive[], labelOf: (d: Directive) => string, layer: Layer, ctx: Ctx, dir: string): void {
  for (const d of directives) {
    const handler = HUB_DIRECTIVES[d.name];
    if (!handler) {
      ctx.errors.push(`${labelOf(d)}: unknown directive '${d.name}'${suggest(d.name, Object.keys(HUB_DIRECTIVES))}`);
      continue;
    }
    handler(d, labelOf(d), layer, ctx, dir);
  }
}
