import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEV_KEY,
  configUsage,
  loadConfig,
  parseAddr,
  parseDirectives,
  parseDuration,
  parseSize,
  type Config,
  type ConfigResult,
} from '../src/config/index.js';
import { cgroupCpuQuota, defaultWorkerCount } from '../src/config/cpus.js';

const SECRET = 'x'.repeat(32);
const SECRET2 = 'y'.repeat(32);

type Env = Record<string, string | undefined>;

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'quicksilver-config-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function load(env: Env = {}, argv: string[] = [], cwd = dir): ConfigResult {
  return loadConfig({ env, argv, cwd });
}

function ok(env: Env = {}, argv: string[] = [], cwd = dir): { config: Config; warnings: string[] } {
  const r = load(env, argv, cwd);
  if (!r.ok) throw new Error(`expected a valid configuration, got:\n${r.errors.join('\n')}`);
  return r;
}

function errors(env: Env = {}, argv: string[] = [], cwd = dir): string[] {
  const r = load(env, argv, cwd);
  if (r.ok) throw new Error('expected errors, got a valid configuration');
  return r.errors;
}

function write(name: string, content: string): string {
  const path = join(dir, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, content);
  return path;
}

const ecKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const EC_PUBLIC = ecKeys.publicKey.export({ type: 'spki', format: 'pem' }) as string;
const EC_PRIVATE = ecKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const rsaKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const RSA_PUBLIC = rsaKeys.publicKey.export({ type: 'spki', format: 'pem' }) as string;
const RSA_PKCS1 = rsaKeys.publicKey.export({ type: 'pkcs1', format: 'pem' }) as string;

describe('parseDuration', () => {
  it.each([
    ['40s', 40_000], ['10m', 600_000], ['1h', 3_600_000], ['500ms', 500], ['0s', 0], ['0', 0],
    ['15', 15_000], ['1.5', 1_500], ['1h30m', 5_400_000], ['1.5s', 1_500], ['2m3s', 123_000],
    ['1500us', 2], ['1500µs', 2], ['1ns', 1], [' 5s ', 5_000],
  ])('%s → %d ms', (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });
  it('also takes days and weeks, as transport URLs do', () => {
    expect(parseDuration('7d')).toBe(7 * 86_400_000);
    expect(parseDuration('1w')).toBe(604_800_000);
  });

  it.each(['', 'abc', '-5s', '5 s', '5y', 's', '1h-5m', '10sec', '1e3s'])('rejects %j', (input) => {
    expect(parseDuration(input)).toBeNull();
  });
});

describe('parseSize and parseAddr', () => {
  it('parses sizes like Caddy', () => {
    expect(parseSize('1MB')).toBe(1_000_000);
    expect(parseSize('1MiB')).toBe(1_048_576);
    expect(parseSize('512kB')).toBe(512_000);
    expect(parseSize('2 KiB')).toBe(2048);
    expect(parseSize('100')).toBe(100);
    expect(parseSize('0')).toBe(0);
    expect(parseSize('-1')).toBeNull();
    expect(parseSize('1XB')).toBeNull();
  });
  it('parses listen addresses', () => {
    expect(parseAddr(':3000')).toEqual({ host: undefined, port: 3000 });
    expect(parseAddr('localhost:3000')).toEqual({ host: 'localhost', port: 3000 });
    expect(parseAddr('0.0.0.0:80')).toEqual({ host: '0.0.0.0', port: 80 });
    expect(parseAddr('[::1]:8080')).toEqual({ host: '::1', port: 8080 });
    expect(parseAddr(':http')).toEqual({ host: undefined, port: 80 });
    expect(parseAddr('3000')).toEqual({ host: undefined, port: 3000 });
    expect(parseAddr(':0')).toEqual({ host: undefined, port: 0 });
    expect(parseAddr('localhost')).toBeNull();
    expect(parseAddr(':70000')).toBeNull();
    expect(parseAddr('http://localhost:3000')).toBeNull();
  });
});

describe('defaults', () => {
  it('builds the production defaults around a key', () => {
    const { config, warnings } = ok({ JWT_KEY: SECRET });
    expect(warnings).toEqual([]);
    expect(config).toEqual({
      hub: {
        publisher: { key: SECRET, algorithm: 'HS256' },
        subscriber: { key: SECRET, algorithm: 'HS256' },
        anonymous: false,
        corsOrigins: [],
        publishOrigins: [],
        subscriptions: false,
        heartbeat: 40_000,
        writeTimeout: 600_000,
        dispatchTimeout: 5_000,
        ui: false,
        demo: false,
        trustProxy: false,
      },
      transportUrl: 'lmdb://./.quicksilver/hub.lmdb',
      server: { addr: ':3000', h2c: false, trustProxy: false, shutdownTimeout: 10_000 },
      logLevel: 'info',
      logFormat: 'json',
      metrics: true,
      tracing: false,
      dev: false,
    } satisfies Config);
  });

  it('refuses to start in production without a publisher key', () => {
    expect(errors()).toEqual([
      'no publisher key: set MERCURE_PUBLISHER_JWT_KEY (or JWT_KEY), or use --dev for a development hub',
    ]);
    expect(errors({ MERCURE_SUBSCRIBER_JWT_KEY: SECRET, MERCURE_EXTRA_DIRECTIVES: 'anonymous' })).toContain(
      'no publisher key: set MERCURE_PUBLISHER_JWT_KEY (or JWT_KEY), or use --dev for a development hub',
    );
  });

  it('treats empty variables as unset', () => {
    expect(errors({ MERCURE_PUBLISHER_JWT_KEY: '', JWT_KEY: '  ' })[0]).toMatch(/^no publisher key/);
  });

  it('accepts a publisher JWKS URL instead of a key', () => {
    const { config } = ok({ MERCURE_EXTRA_DIRECTIVES: 'publisher_jwks_url https://idp.example/jwks.json\nanonymous' });
    expect(config.hub.publisher).toEqual({ jwksUrl: 'https://idp.example/jwks.json' });
    expect(config.hub.subscriber).toEqual({ jwksUrl: 'https://idp.example/jwks.json' });
  });
});

describe('subscriber key', () => {
  it('defaults to the publisher key with a warning when subscribers need tokens', () => {
    const { config, warnings } = ok({ MERCURE_PUBLISHER_JWT_KEY: SECRET });
    expect(config.hub.subscriber).toEqual({ key: SECRET, algorithm: 'HS256' });
    expect(warnings).toEqual([expect.stringMatching(/^no subscriber key: subscribers' tokens are verified with the publisher key/)]);
  });
  it('defaults silently on an anonymous hub or with JWT_KEY for both roles', () => {
    expect(ok({ MERCURE_PUBLISHER_JWT_KEY: SECRET, ALLOW_ANONYMOUS: '1' }).warnings).toEqual([]);
    expect(ok({ JWT_KEY: SECRET }).warnings).toEqual([]);
  });
  it('uses its own key and algorithm when given', () => {
    const { config, warnings } = ok({
      MERCURE_PUBLISHER_JWT_KEY: SECRET,
      MERCURE_SUBSCRIBER_JWT_KEY: RSA_PUBLIC,
      MERCURE_SUBSCRIBER_JWT_ALG: 'RS256',
    });
    expect(warnings).toEqual([]);
    expect(config.hub.publisher).toEqual({ key: SECRET, algorithm: 'HS256' });
    expect(config.hub.subscriber).toEqual({ key: RSA_PUBLIC, algorithm: 'RS256' });
  });
  it('warns when a subscriber algorithm is set without a subscriber key', () => {
    const { warnings } = ok({ MERCURE_PUBLISHER_JWT_KEY: SECRET, MERCURE_SUBSCRIBER_JWT_ALG: 'HS256', ALLOW_ANONYMOUS: 'on' });
    expect(warnings).toEqual(['MERCURE_SUBSCRIBER_JWT_ALG: ignored, there is no subscriber key']);
  });
});

describe('dev profile', () => {
  it('enables everything a development hub needs', () => {
    const { config, warnings } = ok({}, ['--dev']);
    expect(warnings).toEqual([]);
    expect(config.dev).toBe(true);
    expect(config.hub).toMatchObject({
      publisher: { key: DEV_KEY, algorithm: 'HS256' },
      subscriber: { key: DEV_KEY, algorithm: 'HS256' },
      anonymous: true,
      subscriptions: true,
      corsOrigins: ['*'],
      publishOrigins: ['*'],
      ui: true,
      demo: true,
    });
    expect(config.server.addr).toBe('localhost:3000');
  });
  it('lets explicit settings override the profile', () => {
    const { config } = ok(
      { MERCURE_PUBLISHER_JWT_KEY: SECRET, CORS_ALLOWED_ORIGINS: 'https://app.example' },
      ['--dev', '--addr', ':8080', '--no-anonymous', '--demo=false'],
    );
    expect(config.hub.publisher).toEqual({ key: SECRET, algorithm: 'HS256' });
    expect(config.hub.subscriber).toEqual({ key: SECRET, algorithm: 'HS256' });
    expect(config.hub.anonymous).toBe(false);
    expect(config.hub.demo).toBe(false);
    expect(config.hub.ui).toBe(true);
    expect(config.hub.corsOrigins).toEqual(['https://app.example']);
    expect(config.server.addr).toBe(':8080');
  });
  it('warns about the well-known keys and the demo endpoint only in production', () => {
    const { warnings } = ok({ JWT_KEY: DEV_KEY, DEMO: '1' });
    expect(warnings).toEqual([
      'JWT_KEY: is a well-known example key: anyone can sign tokens for this hub; use a long random secret in production',
      'DEMO: the demo endpoint is insecure (it echoes anything and sets any cookie); do not enable it in production',
    ]);
  });
});

describe('precedence', () => {
  it('file < env < flags', () => {
    const file = write('precedence.json', JSON.stringify({ heartbeat: '10s', publisher_jwt: { key: 'file-key'.padEnd(32, '!') }, anonymous: true }));
    const argvBase = ['--config', file];
    expect(ok({}, argvBase).config.hub.heartbeat).toBe(10_000);
    expect(ok({}, argvBase).config.hub.publisher?.key).toBe('file-key'.padEnd(32, '!'));
    expect(ok({ HEARTBEAT_INTERVAL: '20s', JWT_KEY: SECRET }, argvBase).config.hub).toMatchObject({
      heartbeat: 20_000,
      publisher: { key: SECRET },
      anonymous: true,
    });
    expect(ok({ HEARTBEAT_INTERVAL: '20s', JWT_KEY: SECRET }, [...argvBase, '--heartbeat=30s', '--publisher-jwt-key', SECRET2]).config.hub)
      .toMatchObject({ heartbeat: 30_000, publisher: { key: SECRET2 }, subscriber: { key: SECRET } });
  });

  it('MERCURE_* names win over legacy ones, extra directives win over both', () => {
    const env = { JWT_KEY: 'a'.repeat(32), PUBLISHER_JWT_KEY: 'b'.repeat(32), MERCURE_PUBLISHER_JWT_KEY: 'c'.repeat(32) };
    expect(ok(env).config.hub.publisher?.key).toBe('c'.repeat(32));
    expect(ok(env).config.hub.subscriber?.key).toBe('a'.repeat(32));
    expect(ok({ ...env, MERCURE_EXTRA_DIRECTIVES: `publisher_jwt ${'d'.repeat(32)}` }).config.hub.publisher?.key).toBe('d'.repeat(32));
    expect(ok({ JWT_KEY: SECRET, TRANSPORT_URL: 'bolt://old.db', MERCURE_TRANSPORT_URL: 'bolt://new.db' }).config.transportUrl).toBe('bolt://new.db');
  });

  it('role-specific keys win over the both-roles one at the same level, whatever the order', () => {
    const { config } = ok({}, ['--publisher-jwt-key', SECRET2, '--jwt-key', SECRET]);
    expect(config.hub.publisher?.key).toBe(SECRET2);
    expect(config.hub.subscriber?.key).toBe(SECRET);
    const legacy = ok({ SUBSCRIBER_JWT_KEY: SECRET2, JWT_KEY: SECRET }).config;
    expect(legacy.hub.publisher?.key).toBe(SECRET);
    expect(legacy.hub.subscriber?.key).toBe(SECRET2);
  });

  it('keeps the file algorithm when a higher level only changes the key', () => {
    const keyFile = write('prec/ec.pem', EC_PUBLIC);
    const file = write('prec/hub.json', JSON.stringify({ publisher_jwt: { key: 'unused', alg: 'ES256' }, anonymous: true }));
    const { config } = ok({ MERCURE_PUBLISHER_JWT_KEY: `@${keyFile}` }, ['--config', file]);
    expect(config.hub.publisher).toEqual({ key: EC_PUBLIC, algorithm: 'ES256' });
  });
});

describe('legacy environment variables', () => {
  const base = { JWT_KEY: SECRET };
  it.each<[string, Env, (c: Config) => unknown, unknown]>([
    ['JWT_ALGORITHM', { JWT_KEY: 'k'.repeat(64), JWT_ALGORITHM: 'HS512' }, (c) => [c.hub.publisher?.algorithm, c.hub.subscriber?.algorithm], ['HS512', 'HS512']],
    ['PUBLISHER_JWT_KEY', { PUBLISHER_JWT_KEY: SECRET, ALLOW_ANONYMOUS: '1' }, (c) => c.hub.publisher?.key, SECRET],
    ['PUBLISHER_JWT_ALGORITHM', { PUBLISHER_JWT_KEY: RSA_PUBLIC, PUBLISHER_JWT_ALGORITHM: 'RS512', SUBSCRIBER_JWT_KEY: SECRET }, (c) => c.hub.publisher, { key: RSA_PUBLIC, algorithm: 'RS512' }],
    ['SUBSCRIBER_JWT_KEY', { ...base, SUBSCRIBER_JWT_KEY: SECRET2 }, (c) => c.hub.subscriber?.key, SECRET2],
    ['SUBSCRIBER_JWT_ALGORITHM', { ...base, SUBSCRIBER_JWT_KEY: EC_PUBLIC, SUBSCRIBER_JWT_ALGORITHM: 'ES256' }, (c) => c.hub.subscriber, { key: EC_PUBLIC, algorithm: 'ES256' }],
    ['ADDR', { ...base, ADDR: 'localhost:8080' }, (c) => c.server.addr, 'localhost:8080'],
    ['ALLOW_ANONYMOUS', { ...base, ALLOW_ANONYMOUS: 'yes' }, (c) => c.hub.anonymous, true],
    ['ALLOW_ANONYMOUS=0', { ...base, ALLOW_ANONYMOUS: '0' }, (c) => c.hub.anonymous, false],
    ['CORS_ALLOWED_ORIGINS (spaces)', { ...base, CORS_ALLOWED_ORIGINS: 'https://a.example http://localhost:8000' }, (c) => c.hub.corsOrigins, ['https://a.example', 'http://localhost:8000']],
    ['CORS_ALLOWED_ORIGINS (commas)', { ...base, CORS_ALLOWED_ORIGINS: 'https://a.example,https://b.example' }, (c) => c.hub.corsOrigins, ['https://a.example', 'https://b.example']],
    ['PUBLISH_ALLOWED_ORIGINS', { ...base, PUBLISH_ALLOWED_ORIGINS: '*' }, (c) => c.hub.publishOrigins, ['*']],
    ['HEARTBEAT_INTERVAL', { ...base, HEARTBEAT_INTERVAL: '15s' }, (c) => c.hub.heartbeat, 15_000],
    ['WRITE_TIMEOUT', { ...base, WRITE_TIMEOUT: '0s' }, (c) => c.hub.writeTimeout, 0],
    ['DISPATCH_TIMEOUT', { ...base, DISPATCH_TIMEOUT: '2s' }, (c) => c.hub.dispatchTimeout, 2_000],
    ['READ_TIMEOUT', { ...base, READ_TIMEOUT: '5s' }, (c) => c.server.readTimeout, 5_000],
    ['READ_HEADER_TIMEOUT', { ...base, READ_HEADER_TIMEOUT: '3s' }, (c) => c.server.readHeaderTimeout, 3_000],
    ['DEMO', { ...base, DEMO: 'true' }, (c) => c.hub.demo, true],
    ['DEBUG', { ...base, DEBUG: '1' }, (c) => c.logLevel, 'debug'],
    ['DEBUG=0', { ...base, DEBUG: '0' }, (c) => c.logLevel, 'info'],
    ['SUBSCRIPTIONS', { ...base, SUBSCRIPTIONS: 'on' }, (c) => c.hub.subscriptions, true],
    ['DISPATCH_SUBSCRIPTIONS', { ...base, DISPATCH_SUBSCRIPTIONS: '1' }, (c) => c.hub.subscriptions, true],
    ['USE_FORWARDED_HEADERS', { ...base, USE_FORWARDED_HEADERS: '1' }, (c) => [c.hub.trustProxy, c.server.trustProxy], [true, true]],
    ['TRANSPORT_URL bolt', { ...base, TRANSPORT_URL: 'bolt://updates.db' }, (c) => c.transportUrl, 'bolt://updates.db'],
    ['TRANSPORT_URL null', { ...base, TRANSPORT_URL: 'null' }, (c) => c.transportUrl, 'memory://'],
    ['TRANSPORT_URL local', { ...base, TRANSPORT_URL: 'local://local' }, (c) => c.transportUrl, 'memory://'],
    ['METRICS_ENABLED', { ...base, METRICS_ENABLED: 'false' }, (c) => c.metrics, false],
    ['LOG_FORMAT TEXT', { ...base, LOG_FORMAT: 'TEXT' }, (c) => c.logFormat, 'pretty'],
    ['LOG_FORMAT JSON', { ...base, LOG_FORMAT: 'JSON' }, (c) => c.logFormat, 'json'],
    ['HISTORY_SIZE', { ...base, HISTORY_SIZE: '100' }, (c) => c.transportUrl, 'lmdb://./.quicksilver/hub.lmdb?size=100'],
    ['HISTORY_SIZE with bolt', { ...base, HISTORY_SIZE: '5', TRANSPORT_URL: 'bolt://updates.db?bucket_name=u' }, (c) => c.transportUrl, 'bolt://updates.db?bucket_name=u&size=5'],
  ])('%s', (_name, env, pick, expected) => {
    expect(pick(ok(env).config)).toEqual(expected);
  });

  it('CERT_FILE and KEY_FILE', () => {
    const cert = write('tls/cert.pem', 'cert');
    const key = write('tls/key.pem', 'key');
    const { config } = ok({ ...base, CERT_FILE: 'tls/cert.pem', KEY_FILE: key });
    expect(config.server.certFile).toBe(cert);
    expect(config.server.keyFile).toBe(key);
  });

  it('warns about FLUENTD logs, an ignored HISTORY_SIZE and unsupported variables', () => {
    expect(ok({ ...base, LOG_FORMAT: 'FLUENTD' }).warnings).toEqual(['LOG_FORMAT: the FLUENTD log format is not supported; using json']);
    expect(ok({ ...base, HISTORY_SIZE: '5', TRANSPORT_URL: 'bolt://u.db?size=9' }).warnings).toEqual(['HISTORY_SIZE: ignored (the transport URL already sets size)']);
    expect(ok({ ...base, COMPRESS: '1' }).warnings).toEqual([
      'COMPRESS: not supported by Quicksilver; ignored (event streams are never compressed)',
    ]);
  });

  it('runs the supervisor setup of a 0.10 tutorial', () => {
    const { config, warnings } = ok({
      JWT_KEY: '!ChangeMe!', ADDR: ':3000', DEMO: '1', ALLOW_ANONYMOUS: '1', CORS_ALLOWED_ORIGINS: '*',
      PUBLISH_ALLOWED_ORIGINS: '*', USE_FORWARDED_HEADERS: '1', DEBUG: '1',
    });
    expect(config.hub).toMatchObject({ anonymous: true, demo: true, corsOrigins: ['*'], publishOrigins: ['*'], trustProxy: true });
    expect(config.logLevel).toBe('debug');
    expect(warnings).toEqual([
      expect.stringMatching(/^JWT_KEY: is a well-known example key/),
      expect.stringMatching(/^DEMO: the demo endpoint is insecure/),
    ]);
  });

  it('accepts the legacy flags of the same tutorial', () => {
    const { config } = ok({}, ['--jwt-key=!ChangeMe!', '--addr=localhost:3000', '--allow-anonymous', '--cors-allowed-origins=*']);
    expect(config.hub).toMatchObject({ publisher: { key: '!ChangeMe!' }, anonymous: true, corsOrigins: ['*'] });
    expect(config.server.addr).toBe('localhost:3000');
  });

  it('rejects invalid booleans', () => {
    expect(errors({ ...base, ALLOW_ANONYMOUS: 'maybe' })).toEqual([
      "ALLOW_ANONYMOUS: invalid boolean 'maybe'; expected 1/0, true/false, yes/no or on/off",
    ]);
  });
});

describe('official image variables', () => {
  it('SERVER_NAME with a port is the listen address', () => {
    expect(ok({ JWT_KEY: SECRET, SERVER_NAME: ':80' }).config.server.addr).toBe(':80');
    expect(ok({ JWT_KEY: SECRET, SERVER_NAME: 'http://example.com:8080' }).config.server.addr).toBe(':8080');
    expect(ok({ JWT_KEY: SECRET, SERVER_NAME: ':80', ADDR: ':9000' }).config.server.addr).toBe(':80');
    expect(ok({ JWT_KEY: SECRET, SERVER_NAME: ':80' }, ['--addr', ':9000']).config.server.addr).toBe(':9000');
  });
  it('SERVER_NAME with a host name serves HTTPS: ACME for a domain (test/acme.test.ts), TLS files otherwise', () => {
    const acme = ok({ JWT_KEY: SECRET, SERVER_NAME: 'mercure.example.com', ADDR: ':8000' });
    expect(acme.warnings).toEqual([]);
    expect(acme.config.server).toMatchObject({ addr: ':443', acme: { domains: ['mercure.example.com'] } });
    const { config, warnings } = ok({ JWT_KEY: SECRET, SERVER_NAME: 'localhost', ADDR: ':8000' });
    expect(config.server.addr).toBe(':8000');
    expect(warnings).toEqual([
      "SERVER_NAME: 'localhost' asks for HTTPS, and no public CA issues certificates for that name; set CERT_FILE and KEY_FILE to serve HTTPS on :443, or use SERVER_NAME=:80 behind a TLS-terminating proxy; listening on :8000 (plain HTTP) instead",
    ]);
    const cert = write('sn/cert.pem', 'c');
    const key = write('sn/key.pem', 'k');
    const tls = ok({ JWT_KEY: SECRET, SERVER_NAME: 'mercure.example.com', CERT_FILE: cert, KEY_FILE: key });
    expect(tls.warnings).toEqual([]);
    expect(tls.config.server).toMatchObject({ addr: ':443', certFile: cert, keyFile: key });
  });
  it('SERVER_NAME with several addresses prefers a plain HTTP one', () => {
    const { config, warnings } = ok({ JWT_KEY: SECRET, SERVER_NAME: 'localhost, :80' });
    expect(config.server.addr).toBe(':80');
    expect(warnings).toEqual(["SERVER_NAME: only one site address is supported; using ':80'"]);
    expect(errors({ JWT_KEY: SECRET, SERVER_NAME: 'http://x:99999' })).toEqual([
      "SERVER_NAME: invalid site address 'http://x:99999'; expected e.g. :80, example.com or https://example.com:8443",
    ]);
  });
  it('GLOBAL_OPTIONS debug', () => {
    expect(ok({ JWT_KEY: SECRET, GLOBAL_OPTIONS: 'debug' }).config.logLevel).toBe('debug');
    const { config, warnings } = ok({ JWT_KEY: SECRET, GLOBAL_OPTIONS: 'debug\nauto_https off' });
    expect(config.logLevel).toBe('debug');
    expect(warnings).toEqual(["GLOBAL_OPTIONS: Caddy global options other than 'debug' are ignored: auto_https"]);
  });
  it('MERCURE_TRUSTED_ISSUERS', () => {
    expect(ok({ JWT_KEY: SECRET, MERCURE_TRUSTED_ISSUERS: 'https://a.example https://b.example' }).config.hub.trustedIssuers)
      .toEqual(['https://a.example', 'https://b.example']);
  });
});

describe('MERCURE_EXTRA_DIRECTIVES', () => {
  it('parses the reference directives', () => {
    const { config, warnings } = ok({
      MERCURE_PUBLISHER_JWT_KEY: SECRET,
      MERCURE_SUBSCRIBER_JWT_KEY: SECRET2,
      MERCURE_EXTRA_DIRECTIVES: [
        '# comments are fine',
        'anonymous',
        'cors_origins https://a.example https://b.example',
        'publish_origins *',
        'subscriptions',
        'heartbeat 15s',
        'write_timeout 0s',
        'dispatch_timeout 5s',
        'cookie_name x',
        'ui',
        'demo',
        'transport_url bolt://mercure.db',
        'topic_selector_cache 10000',
        'protocol_version_compatibility 7',
        'max_request_body_size 1MB',
        'resource_identifier https://hub.example/.well-known/mercure',
        'trusted_issuers https://idp.example "https://other.example"',
        'subscriber_jwks_url https://idp.example/jwks',
      ].join('\n'),
    });
    expect(config.hub).toMatchObject({
      anonymous: true,
      corsOrigins: ['https://a.example', 'https://b.example'],
      publishOrigins: ['*'],
      subscriptions: true,
      heartbeat: 15_000,
      writeTimeout: 0,
      dispatchTimeout: 5_000,
      cookieName: 'x',
      ui: true,
      demo: true,
      maxBodySize: 1_000_000,
      resourceIdentifier: 'https://hub.example/.well-known/mercure',
      trustedIssuers: ['https://idp.example', 'https://other.example'],
      subscriber: { key: SECRET2, algorithm: 'HS256', jwksUrl: 'https://idp.example/jwks' },
    });
    expect(config.transportUrl).toBe('bolt://mercure.db');
    expect(warnings).toEqual([
      expect.stringMatching(/^MERCURE_EXTRA_DIRECTIVES line 13 \(topic_selector_cache\): not supported by Quicksilver; ignored/),
      'MERCURE_EXTRA_DIRECTIVES line 11 (demo): the demo endpoint is insecure (it echoes anything and sets any cookie); do not enable it in production',
    ]);
  });

  it('reports an unknown directive with its line', () => {
    expect(errors({ JWT_KEY: SECRET, MERCURE_EXTRA_DIRECTIVES: 'anonymous\ncors_origin https://a.example\nfoo bar' })).toEqual([
      "MERCURE_EXTRA_DIRECTIVES line 2 (cors_origin): unknown directive 'cors_origin'; did you mean 'cors_origins'?",
      "MERCURE_EXTRA_DIRECTIVES line 3 (foo): unknown directive 'foo'",
    ]);
  });

  it('reports invalid arguments naming the directive', () => {
    expect(errors({ JWT_KEY: SECRET, MERCURE_EXTRA_DIRECTIVES: 'heartbeat soon\npublisher_jwt\nprotocol_version_compatibility 6\nanonymous maybe' })).toEqual([
      "MERCURE_EXTRA_DIRECTIVES line 1 (heartbeat): invalid duration 'soon'; expected e.g. 40s, 1m30s, 500ms, or 0s to disable",
      'MERCURE_EXTRA_DIRECTIVES line 2 (publisher_jwt): expected a key and an optional algorithm',
      'MERCURE_EXTRA_DIRECTIVES line 3 (protocol_version_compatibility): expected 7 or 8',
      "MERCURE_EXTRA_DIRECTIVES line 4 (anonymous): invalid boolean 'maybe'; expected 1/0, true/false, yes/no or on/off",
    ]);
  });

  it('sets the key and algorithm together with publisher_jwt', () => {
    const { config } = ok({ MERCURE_PUBLISHER_JWT_ALG: 'RS256', MERCURE_EXTRA_DIRECTIVES: `publisher_jwt "${EC_PUBLIC}" ES256\nanonymous` });
    expect(config.hub.publisher).toEqual({ key: EC_PUBLIC, algorithm: 'ES256' });
  });

  it('keeps a quoted multi-line PEM key in one argument', () => {
    const { config } = ok({ MERCURE_EXTRA_DIRECTIVES: `anonymous\nsubscriber_jwt "${RSA_PUBLIC}" RS256\npublisher_jwt ${SECRET}\nui` });
    expect(config.hub.subscriber).toEqual({ key: RSA_PUBLIC, algorithm: 'RS256' });
    expect(config.hub.publisher).toEqual({ key: SECRET, algorithm: 'HS256' });
    expect(config.hub.ui).toBe(true);
  });

  it('maps transport blocks to URLs', () => {
    const bolt = ok({ JWT_KEY: SECRET, MERCURE_EXTRA_DIRECTIVES: 'transport bolt {\n  path /data/mercure.db\n  size 1000\n  cleanup_frequency 0.5\n}' });
    expect(bolt.config.transportUrl).toBe('bolt:///data/mercure.db?size=1000&cleanup_frequency=0.5');
    expect(ok({ JWT_KEY: SECRET, MERCURE_EXTRA_DIRECTIVES: 'transport local' }).config.transportUrl).toBe('memory://');
    expect(ok({ JWT_KEY: SECRET, MERCURE_EXTRA_DIRECTIVES: 'transport bolt' }).config.transportUrl).toBe('bolt://mercure.db');
    expect(errors({ JWT_KEY: SECRET, MERCURE_EXTRA_DIRECTIVES: 'transport bolt {\n size -1\n}' })).toEqual([
      "MERCURE_EXTRA_DIRECTIVES line 1 (transport): invalid transport URL 'bolt://mercure.db?size=-1': size must be a non-negative integer, got '-1'",
    ]);
  });

  it('parses issuer blocks', () => {
    const { config } = ok({
      MERCURE_EXTRA_DIRECTIVES: [
        'issuer https://idp.example {',
        '  authorization_server',
        `  publisher {\n    jwt ${SECRET} HS256\n  }`,
        '  subscriber {',
        '    jwks_uri https://idp.example/jwks',
        '  }',
        '}',
      ].join('\n'),
    });
    expect(config.hub.issuers).toEqual([{
      issuer: 'https://idp.example',
      publisher: { key: SECRET, algorithm: 'HS256' },
      subscriber: { jwksUrl: 'https://idp.example/jwks' },
    }]);
    expect(config.hub.authorizationServers).toEqual(['https://idp.example']);
    expect(config.hub.publisher).toBeUndefined();
  });

  it('accepts literal \\n separators and placeholders', () => {
    const { config } = ok({ JWT_KEY: SECRET, ORIGIN: 'https://app.example', MERCURE_EXTRA_DIRECTIVES: 'anonymous\\ncors_origins {env.ORIGIN} {$OTHER:https://b.example}' });
    expect(config.hub.anonymous).toBe(true);
    expect(config.hub.corsOrigins).toEqual(['https://app.example', 'https://b.example']);
  });

  it('lexes quotes, comments and blocks', () => {
    const { directives, errors: errs } = parseDirectives('a "b c" `d` # comment\nblock x {\n  inner 1\n}\n');
    expect(errs).toEqual([]);
    expect(directives).toEqual([
      { name: 'a', args: ['b c', 'd'], line: 1 },
      { name: 'block', args: ['x'], line: 2, block: [{ name: 'inner', args: ['1'], line: 3 }] },
    ]);
    expect(parseDirectives('x {\n y').errors).toEqual(["line 1: missing '}' closing the 'x' block"]);
    expect(parseDirectives('}').errors).toEqual(["line 1: unexpected '}'"]);
  });
});

describe('durations in settings', () => {
  it('accepts Go durations and bare seconds everywhere', () => {
    const { config } = ok({ JWT_KEY: SECRET, HEARTBEAT_INTERVAL: '1m30s', WRITE_TIMEOUT: '120', DISPATCH_TIMEOUT: '250ms' }, ['--shutdown-timeout', '3s']);
    expect(config.hub).toMatchObject({ heartbeat: 90_000, writeTimeout: 120_000, dispatchTimeout: 250 });
    expect(config.server.shutdownTimeout).toBe(3_000);
  });
  it('rejects invalid and negative durations', () => {
    expect(errors({ JWT_KEY: SECRET, WRITE_TIMEOUT: '-1s' }, ['--heartbeat', '40 seconds'])).toEqual([
      "--heartbeat: invalid duration '40 seconds'; expected e.g. 40s, 1m30s, 500ms, or 0s to disable",
      "WRITE_TIMEOUT: invalid duration '-1s': must not be negative (use 0s to disable)",
    ]);
  });
});

describe('origins', () => {
  it('accepts origins, * and null, and normalises them', () => {
    const { config } = ok({ JWT_KEY: SECRET }, ['--cors-origins', 'HTTPS://App.Example:443 null', '--cors-origins=http://localhost:8000,capacitor://localhost']);
    expect(config.hub.corsOrigins).toEqual(['https://app.example', 'null', 'http://localhost:8000', 'capacitor://localhost']);
  });
  it('accepts a single wildcard in publish origins only', () => {
    expect(ok({ JWT_KEY: SECRET, PUBLISH_ALLOWED_ORIGINS: 'https://*.example.com' }).config.hub.publishOrigins).toEqual(['https://*.example.com']);
    expect(errors({ JWT_KEY: SECRET, CORS_ALLOWED_ORIGINS: 'https://*.example.com', PUBLISH_ALLOWED_ORIGINS: 'https://*.*.example.com' })).toEqual([
      "CORS_ALLOWED_ORIGINS: invalid origin 'https://*.example.com': wildcards are only allowed in publish origins; use '*' to allow any origin",
      "PUBLISH_ALLOWED_ORIGINS: invalid origin 'https://*.*.example.com': at most one '*' is allowed",
    ]);
  });
  it('explains what is wrong with an origin', () => {
    expect(errors({ JWT_KEY: SECRET }, ['--cors-origins', 'https://a.example/ https://b.example/path example.com https://c.example:99999 https://u@d.example'])).toEqual([
      "--cors-origins: invalid origin 'https://a.example/': an origin has no trailing slash; use 'https://a.example'",
      "--cors-origins: invalid origin 'https://b.example/path': an origin has no path, query or fragment; use 'https://b.example'",
      "--cors-origins: invalid origin 'example.com'; expected scheme://host[:port], '*' or 'null'",
      "--cors-origins: invalid origin 'https://c.example:99999': invalid port 99999",
      "--cors-origins: invalid origin 'https://u@d.example': an origin has no user name or password",
    ]);
  });
});

describe('validation', () => {
  it('collects every error', () => {
    const errs = errors(
      {
        MERCURE_PUBLISHER_JWT_KEY: SECRET,
        MERCURE_PUBLISHER_JWT_ALG: 'HS257',
        HEARTBEAT_INTERVAL: 'often',
        CORS_ALLOWED_ORIGINS: 'https://a.example/',
        ADDR: 'localhost',
        TRANSPORT_URL: 'updates.db',
        CERT_FILE: 'missing-cert.pem',
      },
      ['--bogus', '--max-body-size', '-5', 'extra'],
    );
    expect(errs).toEqual([
      "unknown flag '--bogus'",
      "--max-body-size: invalid size '-5': must not be negative",
      "unexpected argument 'extra'",
      "ADDR: invalid address 'localhost'; expected host:port, :port or [ipv6]:port",
      "CORS_ALLOWED_ORIGINS: invalid origin 'https://a.example/': an origin has no trailing slash; use 'https://a.example'",
      "HEARTBEAT_INTERVAL: invalid duration 'often'; expected e.g. 40s, 1m30s, 500ms, or 0s to disable",
      "CERT_FILE: invalid transport URL 'updates.db'; expected a URL such as memory:// or bolt://updates.db".replace('CERT_FILE', 'TRANSPORT_URL'),
      "MERCURE_PUBLISHER_JWT_ALG: unknown algorithm 'HS257'; expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA",
      'CERT_FILE: a certificate needs its private key too (KEY_FILE or --key-file)',
      "CERT_FILE: cannot read 'missing-cert.pem': no such file",
    ]);
  });

  it('reports a key without its certificate and unreadable TLS files', () => {
    expect(errors({ JWT_KEY: SECRET }, ['--key-file', 'nope.pem'])).toEqual([
      '--key-file: a private key needs its certificate too (CERT_FILE or --cert-file)',
      "--key-file: cannot read 'nope.pem': no such file",
    ]);
    expect(errors({ JWT_KEY: SECRET, CERT_FILE: dir, KEY_FILE: dir })).toEqual([
      `CERT_FILE: cannot read '${dir}': is a directory`,
      `KEY_FILE: cannot read '${dir}': is a directory`,
    ]);
  });

  it('reports negative sizes and numbers', () => {
    expect(errors({ JWT_KEY: SECRET, HISTORY_SIZE: '-1' }, ['--workers', '0'])).toEqual([
      "--workers: invalid number '0'; expected an integer ≥ 1",
      "HISTORY_SIZE: invalid number '-1': must not be negative",
    ]);
  });

  it('names the algorithm when a key does not fit it', () => {
    expect(errors({ MERCURE_PUBLISHER_JWT_KEY: 'not-a-pem', MERCURE_PUBLISHER_JWT_ALG: 'RS256' })).toEqual([
      "MERCURE_PUBLISHER_JWT_KEY: algorithm RS256 (MERCURE_PUBLISHER_JWT_ALG) needs a PEM public key ('-----BEGIN PUBLIC KEY-----...' or a certificate), or @/path/to/key.pem",
    ]);
    expect(errors({ MERCURE_PUBLISHER_JWT_KEY: EC_PUBLIC, MERCURE_PUBLISHER_JWT_ALG: 'RS256' })).toEqual([
      'MERCURE_PUBLISHER_JWT_KEY: an EC P-256 key cannot verify RS256 (MERCURE_PUBLISHER_JWT_ALG) tokens',
    ]);
    expect(errors({ MERCURE_PUBLISHER_JWT_KEY: EC_PUBLIC, MERCURE_PUBLISHER_JWT_ALG: 'ES384' })[0]).toMatch(/an EC P-256 key cannot verify ES384/);
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(errors({ JWT_KEY: weak, JWT_ALGORITHM: 'RS256' })).toEqual([
      'JWT_KEY: the RSA key is 1024 bits; RS256 needs at least 2048',
    ]);
    expect(errors({ JWT_KEY: '-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----', JWT_ALGORITHM: 'ES256' })[0]).toMatch(/^JWT_KEY: invalid ES256 key: /);
  });

  it('rejects an unknown algorithm with an accepted case-insensitive spelling', () => {
    expect(ok({ JWT_KEY: RSA_PUBLIC, JWT_ALGORITHM: 'rs256' }).config.hub.publisher?.algorithm).toBe('RS256');
  });

  it('rejects invalid transport URLs, JWKS URLs and log levels', () => {
    expect(errors({ JWT_KEY: SECRET }, ['--publisher-jwks-url', 'ftp://x', '--log-level', 'loud', '--log-format', 'xml'])).toEqual([
      "--publisher-jwks-url: invalid JWKS URL 'ftp://x'; expected https://, http://, file://",
      "--log-level: unknown log level 'loud'; expected one of fatal, error, warn, info, debug, trace, silent",
      "--log-format: unknown log format 'xml'; expected json or pretty",
    ]);
  });
});

describe('keys', () => {
  it('reads a PEM key from a file', () => {
    const file = write('keys/ec.pem', EC_PUBLIC);
    const { config, warnings } = ok({ MERCURE_PUBLISHER_JWT_KEY: `@${file}`, MERCURE_PUBLISHER_JWT_ALG: 'ES256', ALLOW_ANONYMOUS: '1' });
    expect(warnings).toEqual([]);
    expect(config.hub.publisher).toEqual({ key: EC_PUBLIC, algorithm: 'ES256' });
  });

  it('resolves @relative paths against cwd', () => {
    write('keys/secret.txt', `${SECRET}\n`);
    expect(ok({}, ['--jwt-key', '@keys/secret.txt']).config.hub.publisher?.key).toBe(SECRET);
  });

  it('unescapes \\n in PEM keys from the environment', () => {
    const escaped = EC_PUBLIC.trim().replace(/\n/g, '\\n');
    const { config } = ok({ JWT_KEY: escaped, JWT_ALGORITHM: 'ES256' });
    expect(config.hub.publisher?.key).toBe(EC_PUBLIC);
  });

  it('converts PKCS#1, private keys and JWKs to an SPKI public key', () => {
    expect(ok({ JWT_KEY: RSA_PKCS1, JWT_ALGORITHM: 'PS256' }).config.hub.publisher?.key).toBe(RSA_PUBLIC);
    const priv = ok({ JWT_KEY: EC_PRIVATE, JWT_ALGORITHM: 'ES256' });
    expect(priv.config.hub.publisher?.key).toBe(EC_PUBLIC);
    expect(priv.warnings).toEqual(['JWT_KEY: is a private key; the hub only needs (and only keeps) the public key']);
    const jwk = JSON.stringify(ecKeys.publicKey.export({ format: 'jwk' }));
    expect(ok({ JWT_KEY: jwk, JWT_ALGORITHM: 'ES256' }).config.hub.publisher?.key).toBe(EC_PUBLIC);
  });

  it('reports unreadable key files and supports @@ for a literal @', () => {
    expect(errors({ JWT_KEY: '@missing.pem' })).toEqual([
      "JWT_KEY: cannot read key file 'missing.pem': no such file (write '@@' for a literal key starting with '@')",
    ]);
    expect(ok({ JWT_KEY: `@@${SECRET}` }).config.hub.publisher?.key).toBe(`@${SECRET}`);
  });

  it('warns about HMAC secrets that look like mistakes', () => {
    expect(ok({ JWT_KEY: EC_PUBLIC }).warnings).toEqual([
      'JWT_KEY: looks like a PEM key but the algorithm is HS256, so it is used as an HMAC secret; set the algorithm (e.g. RS256) if that is not intended',
    ]);
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdfX0.abcdefghijklmnopqrstuvwxyz0123456789';
    expect(ok({ JWT_KEY: jwt }).warnings).toEqual([
      "JWT_KEY: looks like a JWT; the hub needs the secret the tokens are signed with, not a token",
    ]);
    expect(ok({ JWT_KEY: 'short' }).warnings).toEqual([
      'JWT_KEY: the HS256 key is only 5 bytes long; use at least 32 random bytes',
    ]);
  });
});

describe('JSON config file', () => {
  it('loads every kind of setting', () => {
    write('cfg/keys/pub.pem', EC_PUBLIC);
    write('cfg/tls/cert.pem', 'c');
    write('cfg/tls/key.pem', 'k');
    const file = write('cfg/quicksilver.json', JSON.stringify({
      $schema: './schema.json',
      publisher_jwt: { key: '@keys/pub.pem', alg: 'ES256' },
      subscriber_jwt: SECRET,
      anonymous: true,
      cors_origins: ['https://a.example'],
      publish_origins: 'https://a.example https://*.a.example',
      subscriptions: true,
      heartbeat: 20,
      write_timeout: '0s',
      dispatch_timeout: '1s',
      cookie_name: 'auth',
      transport: { name: 'bolt', path: 'data/hub.db', size: 500 },
      max_request_body_size: '2MiB',
      public_url: 'https://hub.example',
      issuers: [{ issuer: 'https://idp.example', authorization_server: true, publisher: { jwks_url: 'https://idp.example/jwks' } }],
      addr: '127.0.0.1:4000',
      cert_file: 'tls/cert.pem',
      key_file: 'tls/key.pem',
      trust_proxy: true,
      read_timeout: '30s',
      shutdown_timeout: 2,
      log_level: 'warn',
      log_format: 'pretty',
      metrics: false,
      workers: 2,
      subscriber_buffer_size: 50,
      max_topics: 10,
      token_cache_size: 0,
      ui: null,
    }));
    const { config, warnings } = ok({}, [`--config=${file}`]);
    expect(warnings).toEqual([]);
    expect(config).toEqual({
      hub: {
        publisher: { key: EC_PUBLIC, algorithm: 'ES256' },
        subscriber: { key: SECRET, algorithm: 'HS256' },
        issuers: [{ issuer: 'https://idp.example', publisher: { jwksUrl: 'https://idp.example/jwks' } }],
        authorizationServers: ['https://idp.example'],
        anonymous: true,
        corsOrigins: ['https://a.example'],
        publishOrigins: ['https://a.example', 'https://*.a.example'],
        cookieName: 'auth',
        subscriptions: true,
        heartbeat: 20_000,
        writeTimeout: 0,
        dispatchTimeout: 1_000,
        subscriberBufferSize: 50,
        maxBodySize: 2 * 1024 * 1024,
        maxTopics: 10,
        ui: false,
        demo: false,
        trustProxy: true,
        publicUrl: 'https://hub.example',
        tokenCacheSize: 0,
      },
      transportUrl: 'bolt://data/hub.db?size=500',
      server: {
        addr: '127.0.0.1:4000',
        certFile: join(dir, 'cfg/tls/cert.pem'),
        keyFile: join(dir, 'cfg/tls/key.pem'),
        h2c: false,
        trustProxy: true,
        readTimeout: 30_000,
        shutdownTimeout: 2_000,
      },
      logLevel: 'warn',
      logFormat: 'pretty',
      metrics: false,
      tracing: false,
      dev: false,
      workers: 2,
    } satisfies Config);
  });

  it('is found through QUICKSILVER_CONFIG, relative to cwd', () => {
    write('env-cfg/hub.json', JSON.stringify({ publisher_jwt: { key: SECRET }, anonymous: true }));
    expect(ok({ QUICKSILVER_CONFIG: 'env-cfg/hub.json' }).config.hub.anonymous).toBe(true);
  });

  it('reports unknown keys, wrong types and bad values', () => {
    const file = write('bad/hub.json', JSON.stringify({
      publisher_jwt: { key: SECRET, algo: 'HS256' },
      cors_origin: ['https://a.example'],
      heartbeat: 'often',
      anonymous: { yes: true },
    }));
    expect(errors({ JWT_KEY: SECRET }, ['--config', file])).toEqual([
      `${file} (publisher_jwt): unknown key 'algo'; did you mean 'alg'?; expected key, alg`,
      `${file}: unknown key 'cors_origin'; did you mean 'cors_origins'?`,
      `${file} (heartbeat): invalid duration 'often'; expected e.g. 40s, 1m30s, 500ms, or 0s to disable`,
      `${file} (anonymous): expected a string, number, boolean or list of strings`,
    ]);
  });

  it('reports unreadable, invalid and unsupported files', () => {
    expect(errors({ JWT_KEY: SECRET }, ['--config', 'nope.json'])).toEqual([
      "--config: cannot read config file 'nope.json': no such file",
    ]);
    write('broken.json', '{ "anonymous": ');
    expect(errors({ JWT_KEY: SECRET }, ['--config', 'broken.json'])[0]).toMatch(/^broken\.json: invalid JSON: /);
    write('list.json', '[]');
    expect(errors({ JWT_KEY: SECRET }, ['--config', 'list.json'])).toEqual(['list.json: expected a JSON object']);
    expect(errors({ JWT_KEY: SECRET, QUICKSILVER_CONFIG: 'hub.yaml' })).toEqual([
      "QUICKSILVER_CONFIG: unsupported config file 'hub.yaml'; only JSON (.json) files are supported",
    ]);
  });
});

describe('flags', () => {
  it('parses both --flag value and --flag=value', () => {
    const { config } = ok({}, [
      '--jwt-key', SECRET, '--addr=:4000', '--anonymous', '--subscriptions=true', '--ui', '--h2c', '--trust-proxy',
      '--no-metrics', '--workers', '3', '--max-body-size', '512kB', '--public-url', 'https://hub.example',
      '--resource-identifier=https://hub.example/.well-known/mercure', '--transport-url', 'bolt://x.db',
      '--cookie-name', 'c', '--write-timeout', '1h', '--dispatch-timeout', '0s', '--read-header-timeout', '2s',
      '--log-level', 'trace', '--log-format', 'pretty', '--publish-origins', '*', '--trusted-issuers', 'https://a.example',
    ]);
    expect(config.hub).toMatchObject({
      anonymous: true, subscriptions: true, ui: true, trustProxy: true, maxBodySize: 512_000,
      publicUrl: 'https://hub.example', resourceIdentifier: 'https://hub.example/.well-known/mercure', cookieName: 'c',
      writeTimeout: 3_600_000, dispatchTimeout: 0, publishOrigins: ['*'], trustedIssuers: ['https://a.example'],
    });
    expect(config.server).toMatchObject({ addr: ':4000', h2c: true, trustProxy: true, readHeaderTimeout: 2_000 });
    expect(config).toMatchObject({ metrics: false, workers: 3, transportUrl: 'bolt://x.db', logLevel: 'trace', logFormat: 'pretty' });
  });

  it('--debug sets the debug level and --workers auto uses the CPUs', () => {
    const { config } = ok({ JWT_KEY: SECRET }, ['--debug', '--workers=auto']);
    expect(config.logLevel).toBe('debug');
    expect(config.workers).toBe(defaultWorkerCount());
  });

  it('takes the worker count from QUICKSILVER_WORKERS, the workers directive and --workers, and leaves it unset otherwise', () => {
    expect(ok({ JWT_KEY: SECRET }).config.workers).toBeUndefined();
    expect(ok({ JWT_KEY: SECRET, QUICKSILVER_WORKERS: '1' }).config.workers).toBe(1);
    expect(ok({ JWT_KEY: SECRET, QUICKSILVER_WORKERS: '2', MERCURE_EXTRA_DIRECTIVES: 'workers 3' }).config.workers).toBe(3);
    expect(ok({ JWT_KEY: SECRET, MERCURE_EXTRA_DIRECTIVES: 'workers auto' }, ['--workers', '1']).config.workers).toBe(1);
    expect(errors({ JWT_KEY: SECRET, QUICKSILVER_WORKERS: 'many' })).toEqual(["QUICKSILVER_WORKERS: invalid number 'many'; expected an integer ≥ 1"]);
  });

  it('reports unknown flags with a suggestion, missing values and stray arguments', () => {
    expect(errors({ JWT_KEY: SECRET }, ['--anonymus', '-v', '--addr', '--cors-origins', 'serve', '--no-anonymous=1', '--', '--ui'])).toEqual([
      "unknown flag '--anonymus'; did you mean '--anonymous'?",
      "unknown flag '-v'",
      '--addr: missing value',
      "--cors-origins: invalid origin 'serve'; expected scheme://host[:port], '*' or 'null'",
      '--no-anonymous: does not take a value',
      "unexpected argument '--ui'",
    ]);
  });

  it('reports a value flag at the end without its value', () => {
    expect(errors({ JWT_KEY: SECRET }, ['--cors-origins'])).toEqual(['--cors-origins: missing value']);
    expect(errors({ JWT_KEY: SECRET }, ['--cors-origins='])).toEqual(['--cors-origins: expected at least one origin']);
  });

  it('ignores h2c with TLS, with a warning', () => {
    const cert = write('h2c/cert.pem', 'c');
    const key = write('h2c/key.pem', 'k');
    const { config, warnings } = ok({ JWT_KEY: SECRET }, ['--h2c', '--cert-file', cert, '--key-file', key]);
    expect(config.server.h2c).toBe(false);
    expect(warnings).toEqual(['--h2c: ignored with TLS (HTTPS already negotiates HTTP/2)']);
  });

  it('reports one error for an invalid both-roles setting', () => {
    expect(errors({}, ['--jwt-key', SECRET, '--jwt-alg', 'none'])).toEqual([
      "--jwt-alg: unknown algorithm 'none'; expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA",
    ]);
  });

  it('documents every flag', () => {
    const usage = configUsage();
    for (const flag of ['--dev', '--config <file.json>', '--publisher-jwt-key <key>', '--cors-origins, --cors-allowed-origins <origins>', '--no-metrics']) {
      expect(usage).toContain(flag);
    }
  });
});

describe('default worker count', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'qs-cgroup-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  const layout = (files: Record<string, string>): { self: string; root: string } => {
    const base = mkdtempSync(join(root, 'fs-'));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(base, path, '..'), { recursive: true });
      writeFileSync(join(base, path), text);
    }
    return { self: join(base, 'proc-self-cgroup'), root: join(base, 'sys') };
  };

  it.runIf(process.platform === 'linux')('reads a cgroup v2 or v1 CPU quota, the smallest on the way to the root', () => {
    expect(cgroupCpuQuota(layout({ 'proc-self-cgroup': '0::/\n', 'sys/cpu.max': '150000 100000\n' }))).toBe(1.5);
    expect(cgroupCpuQuota(layout({
      'proc-self-cgroup': '0::/system.slice/hub.service\n',
      'sys/system.slice/cpu.max': '400000 100000\n',
      'sys/system.slice/hub.service/cpu.max': 'max 100000\n',
    }))).toBe(4);
    expect(cgroupCpuQuota(layout({ 'proc-self-cgroup': '0::/\n', 'sys/cpu.max': 'max 100000\n' }))).toBeUndefined();
    expect(cgroupCpuQuota(layout({
      'proc-self-cgroup': '4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n',
      'sys/cpu,cpuacct/docker/abc/cpu.cfs_quota_us': '200000\n',
      'sys/cpu,cpuacct/docker/abc/cpu.cfs_period_us': '100000\n',
    }))).toBe(2);
    expect(cgroupCpuQuota(layout({
      'proc-self-cgroup': '2:cpu,cpuacct:/\n',
      'sys/cpu,cpuacct/cpu.cfs_quota_us': '-1\n',
      'sys/cpu,cpuacct/cpu.cfs_period_us': '100000\n',
    }))).toBeUndefined();
  });

  it('is at least 1 and at most the cores the process may use', () => {
    expect(defaultWorkerCount()).toBeGreaterThanOrEqual(1);
    expect(defaultWorkerCount()).toBeLessThanOrEqual(availableParallelism());
  });
});
