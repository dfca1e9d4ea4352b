#!/usr/bin/env node
// Quicksilver benchmark: the hub against the bare broadcaster (the physical limit here), Nchan
// and Pushpin, with load generators in separate processes over loopback.
//
//   npm run bench                              full run (bounded, about 15 minutes)
//   npm run bench -- --quick                   a few seconds per scenario, proves the harness works
//   npm run bench -- --scenario broadcast,idle --subscribers 5000 --workers 4
//   npm run bench -- --soak 60m                soak: one default hub under churn for an hour (bench/soak.mjs)
//
// Needs `npm run build` first (npm run bench does it). Writes bench-results/bench-<date>.json,
// .svg and .txt (or into --out DIR).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, foreignLoad, killAllChildren, sleep } from './lib.mjs';
import { evaluateTargets, renderSvg, renderTables } from './report.mjs';
import { SCENARIOS, removeScratch, scratchDir } from './scenarios.mjs';
import { nchanInstalled, probeCluster, pushpinInstalled, setHubDir } from './targets.mjs';
import { parseSoakDuration, runSoak } from './soak.mjs';

const USAGE = `Usage: node bench/run.mjs [options]
  --quick                 small counts, ~1 s per stage: proves the harness works (CI)
  --scenario a,b          idle, broadcast, latency, targeted, publish, reconnect (default: all)
  --subscribers N         broadcast (and latency) subscribers (default 10000; quick 200)
  --idle N                idle subscribers (default 100000; quick 300)
  --sizes a,b,c           targeted fan-out sizes (default 1000,10000,100000)
  --reconnect-subscribers N   reconnect storm size (default 10000)
  --rates a,b,c           broadcast publish rates per second (default 5,10,20,50,100,200,400)
  --stage-ms N            broadcast stage duration (default 4000)
  --latency-rates a,b     latency scenario publish rates (default 5,10,20,50; quick 40)
  --latency-updates N     updates per rate and publisher in the latency scenario (default 100)
  --latency-subscribers N latency scenario subscribers (default: --subscribers)
  --publishers a,b        latency scenario publishers: sequential (fetch, one request at a time,
                          a fresh token each), pool (8 raw keep-alive connections, one token);
                          diagnostic variants: sequential-onetoken, pool-1
  --workers N             hub processes (--workers N cluster, or N shards if the cluster mode
                          is unavailable); default: enough for the subscriber count (idle,
                          targeted) and 1 for the other scenarios
  --transport T           hub transport for idle/broadcast/targeted/reconnect (default lmdb)
  --transports a,b        transports of the publish scenario (memory,lmdb,redis,postgres,nats)
  --targets a,b           only these targets (quicksilver, quicksilver-exact, quicksilver-lmdb,
                          quicksilver-default, bare, bare-uncoalesced, bare-http, nchan, pushpin)
  --payload N             bytes of padding in each update's data (default 64)
  --publish-connections N concurrent publisher connections in the publish scenario (default 16)
  --pushpin-rate N        Pushpin message_rate (default 1000000; Pushpin's own default is 2500)
  --hub-node-args "..."   extra node flags for hub processes (e.g. "--cpu-prof --cpu-prof-dir=prof")
  --hub-dir DIR           measure the hub built in another checkout (DIR/dist/cli.js), e.g. a
                          baseline commit, instead of this one
  --note TEXT             free text kept in the JSON (what was measured)
  --heap-snapshot DIR     idle scenario: heap snapshot of every hub process (bench/heap-summary.mjs)
  --out DIR               where results go (default bench-results/)
  --max-minutes N         abort the whole run after N minutes (default 35; quick 3; soak: its
                          duration + 10)
  --soak DURATION         soak instead of the scenarios (90s, 5m, 1h): one hub in the default
                          configuration under constant churn, reconnects, stallers and steady
                          publishes; samples RSS, heap, handles, fds, event-loop delay; verdict
                          PASS/FAIL (exit 1), bench-results/soak-<date>.json/.txt
  --soak-keepers N        soak: subscribers that read every update for the whole run (default 1000)
  --soak-rate N           soak: updates published per second (default 50)
`;

function parseArgs(argv) {
  /** @type {any} */
  const o = { quick: false };
  const list = (v) => v.split(',').map((x) => x.trim()).filter(Boolean);
  const nums = (v) => list(v).map(Number);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const val = () => inline ?? argv[++i];
    switch (flag) {
      case '--quick': o.quick = true; break;
      case '--scenario': case '--scenarios': o.scenarios = list(val()); break;
      case '--subscribers': o.subscribers = Number(val()); break;
      case '--idle': o.idle = Number(val()); break;
      case '--sizes': o.sizes = nums(val()); break;
      case '--reconnect-subscribers': o.reconnectSubscribers = Number(val()); break;
      case '--rates': o.rates = nums(val()); break;
      case '--stage-ms': o.stageMs = Number(val()); break;
      case '--latency-rates': o.latencyRates = nums(val()); break;
      case '--latency-updates': o.latencyUpdates = Number(val()); break;
      case '--latency-subscribers': o.latencySubscribers = Number(val()); break;
      case '--publishers': o.publishers = list(val()); break;
      case '--workers': o.workers = Number(val()); break;
      case '--transport': o.transport = val(); break;
      case '--transports': o.transports = list(val()); break;
      case '--targets': o.targets = list(val()); break;
      case '--payload': o.payload = Number(val()); break;
      case '--publish-connections': o.publishConnections = Number(val()); break;
      case '--pushpin-rate': o.pushpinRate = Number(val()); break;
      case '--hub-node-args': o.hubNodeArgs = val().split(' ').filter(Boolean); break;
      case '--out': o.out = val(); break;
      case '--heap-snapshot': o.heapSnapshot = path.resolve(val()); break;
      case '--hub-dir': o.hubDir = path.resolve(val()); break;
      case '--note': o.note = val(); break;
      case '--max-minutes': o.maxMinutes = Number(val()); break;
      case '--soak': {
        const v = val();
        o.soak = parseSoakDuration(v);
        if (!o.soak || o.soak < 30_000) {
          process.stderr.write(`--soak: expected a duration of at least 30s such as 90s, 5m or 1h, got "${v}"\n`);
          process.exit(2);
        }
        break;
      }
      case '--soak-keepers': o.soakKeepers = Number(val()); break;
      case '--soak-rate': o.soakRate = Number(val()); break;
      case '-h': case '--help': process.stdout.write(USAGE); process.exit(0); break;
      default:
        process.stderr.write(`unknown option ${a}\n${USAGE}`);
        process.exit(2);
    }
  }
  o.transport ??= 'lmdb';
  o.scenarios ??= Object.keys(SCENARIOS);
  for (const s of o.scenarios) if (!(s in SCENARIOS)) {
    process.stderr.write(`unknown scenario ${s} (expected ${Object.keys(SCENARIOS).join(', ')})\n`);
    process.exit(2);
  }
  return o;
}

/** The commit measured, and whether the work tree differed from it. */
function revision(dir) {
  try {
    const opts = { cwd: dir, encoding: /** @type {const} */ ('utf8'), stdio: /** @type {any} */ (['ignore', 'pipe', 'ignore']) };
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], opts).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], opts).split('\n').filter(Boolean).length;
    return { commit, srcFilesChanged: dirty };
  } catch {
    return null;
  }
}

function machine() {
  let kernel = os.release();
  let fileLimit = null;
  try {
    fileLimit = Number(/Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]) || null;
  } catch {
    // not Linux
  }
  return {
    cores: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    kernel,
    platform: `${os.platform()} ${os.arch()}`,
    fileLimit,
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const hubDir = opts.hubDir ?? ROOT;
  if (!existsSync(path.join(hubDir, 'dist/cli.js'))) {
    process.stderr.write(`${path.join(hubDir, 'dist/cli.js')} is missing: run \`npm run build\` first (npm run bench does)\n`);
    process.exit(2);
  }
  setHubDir(hubDir);
  const started = Date.now();
  const log = (line) => process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${line}\n`);
  const maxMinutes = opts.maxMinutes ?? (opts.soak ? Math.ceil(opts.soak / 60_000) + 10 : opts.quick ? 3 : 35);
  const abort = setTimeout(() => {
    log(`time limit of ${maxMinutes} min reached: aborting`);
    killAllChildren();
    process.exit(4);
  }, maxMinutes * 60_000);
  abort.unref();

  if (opts.soak) {
    const dir = scratchDir();
    const meta = { date: new Date().toISOString(), args: process.argv.slice(2), machine: machine(), hubDir, revision: revision(hubDir), note: opts.note ?? null };
    let code = 1;
    try {
      code = await runSoak({
        durationMs: opts.soak,
        keepers: opts.soakKeepers,
        rate: opts.soakRate,
        outDir: path.resolve(opts.out ?? path.join(ROOT, 'bench-results')),
        log,
        tag: `${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`,
        dir,
        meta,
        hubNodeArgs: opts.hubNodeArgs,
      });
    } finally {
      removeScratch(dir);
    }
    clearTimeout(abort);
    process.exit(code);
  }

  /**
   * The peer belongs in the same run: a full run installs Pushpin (Debian's package) when it is
   * missing and this machine can (root or passwordless sudo, apt). --quick never installs.
   */
  function ensurePushpin(o) {
    const have = pushpinInstalled();
    if (have || o.quick || (o.targets && !o.targets.includes('pushpin'))) return have;
    log('Pushpin is not installed: installing it (bench/install-pushpin.sh)');
    try {
      execFileSync('bash', [path.join(ROOT, 'bench', 'install-pushpin.sh')], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 600_000 });
    } catch (err) {
      log(`could not install Pushpin (${/** @type {Error} */ (err).message.split('\n')[0]}): the peer comparison is skipped`);
    }
    return pushpinInstalled();
  }

  /** Nchan likewise (Debian's nginx + libnginx-mod-nchan, bench/install-nchan.sh). */
  function ensureNchan(o) {
    const have = nchanInstalled();
    if (have || o.quick || (o.targets && !o.targets.includes('nchan'))) return have;
    log('Nchan is not installed: installing it (bench/install-nchan.sh)');
    try {
      execFileSync('bash', [path.join(ROOT, 'bench', 'install-nchan.sh')], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 600_000 });
    } catch (err) {
      log(`could not install Nchan (${/** @type {Error} */ (err).message.split('\n')[0]}): the peer comparison is skipped`);
    }
    return nchanInstalled();
  }

  const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
  const dir = scratchDir();
  const meta = {
    date: new Date().toISOString(),
    quick: opts.quick,
    args: process.argv.slice(2),
    machine: machine(),
    hubDir,
    revision: revision(hubDir),
    note: opts.note ?? null,
    pushpin: ensurePushpin(opts),
    nchan: ensureNchan(opts),
    tag,
    cluster: /** @type {any} */ (null),
    foreignCoresBefore: 0,
  };
  log(`Quicksilver benchmark${opts.quick ? ' (quick)' : ''}: ${meta.machine.cores} cores, ${meta.machine.memGiB} GiB, Node ${meta.machine.node}, kernel ${meta.machine.kernel}, open files ≤ ${meta.machine.fileLimit}`);
  log(`scenarios: ${opts.scenarios.join(', ')}; Pushpin: ${meta.pushpin ?? 'not installed (skipped; bench/install-pushpin.sh)'}; Nchan: ${meta.nchan ?? 'not installed (skipped; bench/install-nchan.sh)'}`);
  const pre = foreignLoad();
  await sleep(opts.quick ? 300 : 1000);
  meta.foreignCoresBefore = pre.stop();
  if (meta.foreignCoresBefore > 0.2) log(`WARNING: other processes use ${meta.foreignCoresBefore} cores of ${meta.machine.cores}: figures will be skewed`);
  const needsMulti = (opts.workers ?? 1) > 1 || (!opts.quick && opts.scenarios.some((s) => s === 'idle' || s === 'targeted'));
  if (needsMulti) {
    meta.cluster = await probeCluster(log);
    if (!meta.cluster.workers || !meta.cluster.fanout) log(`NOTE: --workers not usable (${meta.cluster.reason}); multi-process hubs run as independent shards (1 worker each)`);
  }

  /** @type {any} */
  const res = { meta, scenarios: {} };
  const ctx = { quick: opts.quick, opts, log, tag, dir };
  try {
    for (const name of opts.scenarios) {
      log(`── scenario ${name} ──`);
      const t0 = Date.now();
      const load = foreignLoad();
      try {
        res.scenarios[name] = await SCENARIOS[/** @type {keyof typeof SCENARIOS} */ (name)](ctx);
      } catch (err) {
        log(`scenario ${name} failed: ${/** @type {Error} */ (err).stack}`);
        res.scenarios[name] = { error: String(/** @type {Error} */ (err).message), results: [] };
      }
      res.scenarios[name].seconds = Math.round((Date.now() - t0) / 100) / 10;
      res.scenarios[name].foreignCores = load.stop();
      if (res.scenarios[name].foreignCores > 0.2) log(`WARNING: other processes used ${res.scenarios[name].foreignCores} cores on average during ${name}`);
    }
  } finally {
    removeScratch(dir);
  }
  res.targets = evaluateTargets(res);
  res.meta.seconds = Math.round((Date.now() - started) / 100) / 10;

  const outDir = path.resolve(opts.out ?? path.join(ROOT, 'bench-results'));
  mkdirSync(outDir, { recursive: true });
  const stamp = meta.date.replace(/[:.]/g, '-');
  const base = path.join(outDir, `bench-${opts.quick ? 'quick-' : ''}${stamp}`);
  const text = renderTables(res);
  writeFileSync(`${base}.json`, JSON.stringify(res, null, 2) + '\n');
  writeFileSync(`${base}.svg`, renderSvg(res));
  writeFileSync(`${base}.txt`, text + '\n');
  process.stdout.write(`\n${text}\n\n`);
  log(`results: ${base}.json, ${base}.svg, ${base}.txt (${res.meta.seconds} s)`);
  clearTimeout(abort);
  const failed = Object.entries(res.scenarios).filter(([, v]) => v.error);
  process.exit(failed.length ? 1 : 0);
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  killAllChildren();
  process.exit(1);
});
