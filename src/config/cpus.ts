import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/*
 * How many worker processes `quicksilver` runs by default: one per core it may use.
 *
 * `availableParallelism()` counts the cores of the CPU affinity mask (cpusets included) but, in
 * the libuv of Node.js 20, not a cgroup CPU quota: a container limited to 2 CPUs on a 64-core
 * host would fork 64 workers that share 2 CPUs' worth of time (and 64 × the base memory). The
 * quota (`docker run --cpus`, Kubernetes `limits.cpu`, systemd `CPUQuota=`) therefore caps it.
 */

/** Reads a file, or undefined when it does not exist or cannot be read. */
function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** `/a/b/c` → [`/a/b/c`, `/a/b`, `/a`, ``]: a quota on any ancestor applies too. */
function ancestors(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '');
  const out: string[] = [];
  for (let i = parts.length; i >= 0; i--) out.push(parts.slice(0, i).map((p) => `/${p}`).join(''));
  return out;
}

function quotaV2(cgroupPath: string, root: string): number | undefined {
  let best: number | undefined;
  // Inside a container with a cgroup namespace the process's own path is `/` and the limit sits
  // on the mount's root; without one the path is the host's and exists under the mount.
  for (const dir of new Set([...ancestors(cgroupPath), ''])) {
    const text = read(`${root}${dir}/cpu.max`);
    if (text === undefined) continue;
    const [max, period] = text.trim().split(/\s+/);
    if (max === undefined || max === 'max' || period === undefined) continue;
    const cpus = Number(max) / Number(period);
    if (Number.isFinite(cpus) && cpus > 0) best = Math.min(best ?? Infinity, cpus);
  }
  return best;
}

function quotaV1(cgroupPath: string, mount: string): number | undefined {
  let best: number | undefined;
  for (const dir of new Set([...ancestors(cgroupPath), ''])) {
    const quota = Number(read(`${mount}${dir}/cpu.cfs_quota_us`)?.trim());
    const period = Number(read(`${mount}${dir}/cpu.cfs_period_us`)?.trim());
    if (!(quota > 0) || !(period > 0)) continue;
    best = Math.min(best ?? Infinity, quota / period);
  }
  return best;
}

/**
 * The CPU time this process's cgroup may use, in cores (a quota of 1.5 CPUs gives 1.5), or
 * undefined when there is no quota or it cannot be read (not Linux, no cgroup file system).
 * `paths` point elsewhere than `/proc/self/cgroup` and `/sys/fs/cgroup` (tests).
 */
export function cgroupCpuQuota(paths: { self?: string; root?: string } = {}): number | undefined {
  if (process.platform !== 'linux') return undefined;
  const self = read(paths.self ?? '/proc/self/cgroup');
  const root = paths.root ?? '/sys/fs/cgroup';
  if (self === undefined) return undefined;
  let quota: number | undefined;
  for (const line of self.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const controllers = m[1]!;
    const path = m[2]!;
    let q: number | undefined;
    if (controllers === '') q = quotaV2(path, root);
    else if (controllers.split(',').includes('cpu')) {
      q = quotaV1(path, `${root}/${controllers}`) ?? quotaV1(path, `${root}/cpu`);
    }
    if (q !== undefined) quota = Math.min(quota ?? Infinity, q);
  }
  return quota;
}

/**
 * Default number of hub processes (`--workers auto`, and the CLI's default): the cores this
 * process may use, capped by its cgroup CPU quota (rounded up: 1.5 CPUs → 2 workers), at least 1.
 */
export function defaultWorkerCount(): number {
  const quota = cgroupCpuQuota();
  const cores = availableParallelism();
  return Math.max(1, quota === undefined ? cores : Math.min(cores, Math.ceil(quota)));
}
