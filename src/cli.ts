#!/usr/bin/env node
import { Writable } from 'node:stream';
import { readFileSync } from 'node:fs';
import { ClusterStartError, defaultWorkers, isClusterWorker, runCluster } from './server/cluster.js';
import { configUsage, DEFAULT_TRANSPORT_URL, DEV_KEY, loadConfig, type Config } from './config/index.js';
import { devBanner } from './server/dev-banner.js';
import { createHub } from './http/handler.js';
import { createLogger, type Logger } from './observability/logger.js';
import { serve } from './server/server.js';
import { startAcmeFromConfig } from './server/acme.js';
import { exitOnSignals, hubOptionsFromConfig, logUiUrl, serveOptionsFromConfig } from './server/startup.js';
import { createTransport } from './transports/index.js';
import { redactUrlPassword } from './util/multi-host-url.js';
import { StoreInUseError } from './transports/store-lock.js';
import { runTokenCommand } from './commands/token.js';

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Human-readable log lines for terminals; JSON stays the default for machines. */
function prettyStream(): Writable {
  const levels: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        try {
          const { level, time, msg, name: _n, pid: _p, hostname: _h, ...rest } = JSON.parse(line) as Record<string, unknown>;
          const extras = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
          process.stderr.write(`${new Date(Number(time)).toISOString()} ${levels[Number(level)] ?? level} ${String(msg ?? '')}${extras ? ' ' + extras : ''}\n`);
        } catch {
          process.stderr.write(line + '\n');
        }
      }
      cb();
    },
  });
}


/**
 * Exit codes: 2 for a configuration the hub refuses (restarting will not help), 69 (EX_UNAVAILABLE)
 * when a backend or the address is unavailable at start (a supervisor should retry).
 */
const EXIT_CONFIG = 2;
const EXIT_UNAVAILABLE = 69;

function fail(lines: readonly string[], code: number = EXIT_CONFIG): never {
  for (const l of lines) process.stderr.write(`quicksilver: ${l}\n`);
  process.exit(code);
}

function load(argv: readonly string[]): { config: Config; warnings: string[] } {
  const result = loadConfig({ env: process.env, argv, cwd: process.cwd() });
  if (!result.ok) fail(result.errors);
  return { config: result.config, warnings: result.warnings };
}

async function start(argv: readonly string[]): Promise<void> {
  const { config, warnings } = load(argv);
  // The development profile talks to a person at a terminal: readable lines unless asked otherwise.
  const pretty = config.logFormat === 'pretty' || (config.dev && !process.env.LOG_FORMAT && !argv.some((a) => a.startsWith('--log-format')));
  const log: Logger = createLogger(config.logLevel, pretty ? prettyStream() : undefined);
  // Cluster workers re-run the CLI with the same arguments: the primary alone warns.
  if (!isClusterWorker()) for (const w of warnings) log.warn({}, w);
  // One process per core unless told otherwise: a single Node.js process runs its JavaScript on
  // one core, and fan-out is CPU-bound. With one core, no cluster: a primary would only add a
  // process and an IPC hop.
  const workers = config.workers ?? defaultWorkers();
  if (isClusterWorker() || workers > 1) {
    // The primary owns the transport and forks the workers; each worker serves one hub. The
    // primary handles SIGTERM/SIGINT (draining every worker); a worker never returns from here.
    await runCluster({ ...config, workers }, { logger: log, version: VERSION }).catch((err: unknown) =>
      fail([(err as Error).message], err instanceof ClusterStartError && err.unavailable ? EXIT_UNAVAILABLE : EXIT_CONFIG));
    return;
  }
  let transport;
  try {
    transport = await createTransport(config.transportUrl, log);
  } catch (err) {
    fail([`transport: ${(err as Error).message}`]);
  }
  const hubOptions = await hubOptionsFromConfig(config, VERSION);
  if (typeof hubOptions === 'string') fail([hubOptions]);
  const hub = createHub({ ...hubOptions, transport, logger: log });
  try {
    await hub.ready;
  } catch (err) {
    fail([`could not start: ${(err as Error).message}`], EXIT_UNAVAILABLE);
  }
  // ACME's listeners (HTTP-01, TLS-ALPN-01) must be up before the order: the hub listens first.
  const acme = await startAcmeFromConfig(config, log).catch((err: unknown) => fail([(err as Error).message], EXIT_UNAVAILABLE));
  const server = await serve(hub, { ...serveOptionsFromConfig(config, log), certificates: acme?.slot }).catch(
    (err: unknown) => fail([`cannot listen on ${config.server.addr}: ${(err as Error).message}`], EXIT_UNAVAILABLE));
  await acme?.ready().catch((err: unknown) => fail([(err as Error).message], EXIT_UNAVAILABLE));
  log.info({ url: server.url, transport: transport.name, version: VERSION }, 'Quicksilver hub ready');
  logUiUrl(log, config, server.url);
  if (config.dev) process.stdout.write(await devBanner(server.url, config.hub.publisher?.key ?? DEV_KEY) + '\n');

  exitOnSignals(log, 'shutting down: draining subscribers', async () => {
    await acme?.close();
    await server.close();
  });
}

const help = (): string => `Quicksilver ${VERSION}: a Mercure hub.

Usage:
  quicksilver [options]              start the hub
  quicksilver check-config [options] validate the configuration and exit
  quicksilver token [token options]  mint a JWT for publishers or subscribers
  quicksilver --help | --version

The hub runs one worker process per core (${defaultWorkers()} here), sharing the port; --workers 1
(or QUICKSILVER_WORKERS=1, or the directive "workers 1") runs a single process. /metrics answers
for the whole hub, whichever worker serves the request.

`;

const checkConfigHelp = (): string => `Usage: quicksilver check-config [options]

Loads the configuration exactly as the hub would (file, environment, flags), opens the transport
once, prints "configuration OK (...)" and exits 0; prints every problem and exits 2 otherwise.
Warnings go to stderr. It takes the hub's options:

`;

const serveHelp = (): string => `Usage: quicksilver [serve] [options]

Starts the hub. Options (each also has a directive and most an environment variable):

`;

const isHelp = (a: string | undefined): boolean => a === '--help' || a === '-h';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const [command, ...rest] = argv;
  if (isHelp(command) || (command === 'help' && rest.length === 0)) {
    process.stdout.write(help() + configUsage() + '\n');
    return;
  }
  // `quicksilver help <command>` and `<command> --help` both answer, for every command.
  const helpFor = command === 'help' ? rest[0] : rest.some(isHelp) || argv.some(isHelp) ? command : undefined;
  if (helpFor === 'check-config') {
    process.stdout.write(checkConfigHelp() + configUsage() + '\n');
    return;
  }
  if (helpFor === 'token') {
    process.exitCode = await runTokenCommand(['--help'], process.env);
    return;
  }
  if (command === 'help' && helpFor !== 'serve') fail([`help: unknown command '${helpFor}' (commands: serve, check-config, token)`]);
  if (helpFor !== undefined) {
    process.stdout.write(serveHelp() + configUsage() + '\n');
    return;
  }
  if (command === '--version' || command === '-v') {
    process.stdout.write(VERSION + '\n');
    return;
  }
  if (command === 'check-config') {
    const { config, warnings } = load(rest);
    for (const w of warnings) process.stderr.write(`quicksilver: warning: ${w}\n`);
    // Relative to wherever the hub is started: another directory means another store, and a
    // second hub started here shares this one (it is then refused).
    if (!config.dev && config.transportUrl.split('?')[0] === DEFAULT_TRANSPORT_URL) {
      process.stderr.write(`quicksilver: warning: transport: the default store ${DEFAULT_TRANSPORT_URL} is relative to the working directory (${process.cwd()}); give a production hub an absolute path, e.g. --transport-url lmdb:///var/lib/quicksilver/hub.lmdb\n`);
    }
    try {
      const t = await createTransport(config.transportUrl, createLogger('silent'));
      await t.close();
    } catch (err) {
      // The hub this configuration is for may well be running: that is not a configuration error.
      if (err instanceof StoreInUseError) process.stderr.write(`quicksilver: warning: transport: ${err.message}\n`);
      else fail([`transport: ${(err as Error).message}`]);
    }
    const workers = config.workers ?? defaultWorkers();
    const processes = workers > 1 ? `${workers} worker processes${config.workers === undefined ? ', one per core' : ''}` : 'a single process';
    process.stdout.write(`configuration OK (listen ${config.server.addr}, transport ${redactUrlPassword(config.transportUrl)}, ${processes})\n`);
    return;
  }
  if (command === 'token') {
    process.exitCode = await runTokenCommand(rest, process.env);
    return;
  }
  await start(command === 'serve' ? rest : argv);
}

main().catch((err: unknown) => fail([(err as Error).stack ?? String(err)]));
