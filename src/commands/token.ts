/**
 * commands/: CLI subcommands other than serving the hub. They may use config/, auth/ types and
 * http/ constants, never cli.ts. This file is `quicksilver token`.
 */
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { importPKCS8, SignJWT } from 'jose';
import { DEV_KEY, parseDuration } from '../config/index.js';
import { JWT_ALGORITHMS, type JwtAlgorithm } from '../http/options.js';
import { AUTHORIZATION_DETAIL_TYPE } from '../http/resource-metadata.js';

const USAGE = `Usage: quicksilver token [options]

Mints a token for the configured hub and prints it.

  --publish <selector>      grant publishing to topics matching it (repeatable)
  --subscribe <selector>    grant subscribing / reading private updates (repeatable)
  --exp <duration>          lifetime, e.g. 15m, 1h, 7d (default 1h; 0 = no exp, draft-07 only)
  --draft <7|8>             token format: 7 = "mercure" claim (default), 8 = RFC 9068 access token
  --match-type <exact|urlpattern>  draft-08 matcher type of the selectors (default exact; * is always the wildcard)
  --aud <url>               draft-08 audience: the hub's resource identifier (default http://localhost:3000/.well-known/mercure)
  --iss <id>                draft-08 issuer (default quicksilver)
  --sub <subject>           subject claim
  --payload <json>          payload attached to subscriptions
  --key <secret|@file>      signing key (default: MERCURE_PUBLISHER_JWT_KEY or JWT_KEY for --publish,
                            MERCURE_SUBSCRIBER_JWT_KEY or SUBSCRIBER_JWT_KEY otherwise, else the dev key)
  --alg <alg>               HS256 (default), HS384, HS512, RS*, PS*, ES*, EdDSA (asymmetric: --key is a PKCS#8 PEM private key)
`;

function readKey(value: string): string {
  const v = value.startsWith('@') ? readFileSync(value.slice(1), 'utf8') : value;
  return v.replace(/\\n/g, '\n');
}

/** `quicksilver token`: returns the exit code. */
export async function runTokenCommand(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  const publish: string[] = [];
  const subscribe: string[] = [];
  let exp = '1h';
  let draft = '7';
  let matchType = 'exact';
  let aud = 'http://localhost:3000/.well-known/mercure';
  let iss = 'quicksilver';
  let sub: string | undefined;
  let payload: unknown;
  let key: string | undefined;
  let alg = 'HS256';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      if (eq > 0) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new Error(`${name} needs a value`);
      return v;
    };
    try {
      switch (name) {
        case '--publish': publish.push(value()); break;
        case '--subscribe': subscribe.push(value()); break;
        case '--exp': exp = value(); break;
        case '--draft': draft = value(); break;
        case '--match-type': matchType = value(); break;
        case '--aud': aud = value(); break;
        case '--iss': iss = value(); break;
        case '--sub': sub = value(); break;
        case '--payload': payload = JSON.parse(value()); break;
        case '--key': key = readKey(value()); break;
        case '--alg': alg = value(); break;
        case '--help': case '-h':
          process.stdout.write(USAGE);
          return 0;
        default:
          throw new Error(`unknown option ${name}`);
      }
    } catch (err) {
      process.stderr.write(`quicksilver token: ${(err as Error).message}\n\n${USAGE}`);
      return 2;
    }
  }
  const problems: string[] = [];
  if (draft !== '7' && draft !== '8') problems.push(`--draft must be 7 or 8, got ${draft}`);
  if (matchType !== 'exact' && matchType !== 'urlpattern') problems.push(`--match-type must be exact or urlpattern`);
  if (!JWT_ALGORITHMS.includes(alg as JwtAlgorithm)) problems.push(`--alg: unknown algorithm ${alg}`);
  const lifetime = parseDuration(exp);
  if (lifetime === null) problems.push(`--exp: invalid duration ${exp}`);
  if (draft === '8' && lifetime === 0) problems.push('--exp: draft-08 tokens must expire');
  if (publish.length === 0 && subscribe.length === 0) problems.push('grant something: --publish and/or --subscribe');
  const pubRole = publish.length > 0;
  key ??= pubRole
    ? env.MERCURE_PUBLISHER_JWT_KEY ?? env.PUBLISHER_JWT_KEY ?? env.JWT_KEY
    : env.MERCURE_SUBSCRIBER_JWT_KEY ?? env.SUBSCRIBER_JWT_KEY ?? env.JWT_KEY ?? env.MERCURE_PUBLISHER_JWT_KEY;
  if (!key) {
    process.stderr.write('quicksilver token: no key configured, signing with the development key\n');
    key = DEV_KEY;
  }
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`quicksilver token: ${p}\n`);
    return 2;
  }
  const signingKey = alg.startsWith('HS') ? new TextEncoder().encode(key) : await importPKCS8(readKey(key), alg);

  let claims: Record<string, unknown>;
  if (draft === '7') {
    const mercure: Record<string, unknown> = {};
    if (publish.length) mercure.publish = publish;
    if (subscribe.length) mercure.subscribe = subscribe;
    if (payload !== undefined) mercure.payload = payload;
    claims = { mercure };
  } else {
    const topics = (list: string[]) => list.map((m) => (m === '*' || matchType === 'exact' ? { match: m } : { match: m, match_type: matchType }));
    const details: Record<string, unknown>[] = [];
    if (publish.length) details.push({ type: AUTHORIZATION_DETAIL_TYPE, actions: ['publish'], topics: topics(publish) });
    if (subscribe.length) {
      const d: Record<string, unknown> = { type: AUTHORIZATION_DETAIL_TYPE, actions: ['subscribe'], topics: topics(subscribe) };
      if (payload !== undefined) d.payload = payload;
      details.push(d);
    }
    claims = { authorization_details: details, client_id: iss, jti: `urn:uuid:${randomUUID()}` };
  }
  const jwt = new SignJWT(claims).setProtectedHeader(draft === '8' ? { alg, typ: 'at+jwt' } : { alg }).setIssuedAt();
  if (draft === '8') jwt.setIssuer(iss).setAudience(aud).setSubject(sub ?? 'quicksilver-cli');
  else if (sub) jwt.setSubject(sub);
  if (lifetime) jwt.setExpirationTime(Math.floor((Date.now() + lifetime) / 1000));
  process.stdout.write((await jwt.sign(signingKey)) + '\n');
  return 0;
}
