import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import nodePath from 'node:path';

/**
 * One owning process per embedded store. LMDB itself lets several processes open one store, but
 * the LMDB transport keeps its sequence counter, its delivery order and its retention in the
 * process: two hubs on one store overwrite each other's updates and replay each other's private
 * ones to the wrong subscribers. So a hub claims the store before it opens it, and a second
 * would-be owner is refused with the owner's pid.
 *
 * The claim must vanish with its owner, `kill -9` included, or a crashed hub would need a manual
 * cleanup before it can restart. Node has no flock/fcntl, so on Linux the claim is a listening
 * socket in the abstract namespace, named after the store's identity: binding it is atomic, the
 * kernel frees it when the process dies, and a pid that was reused cannot hold it. The owner
 * answers a connection on it with its pid, for the refusal message.
 *
 * Limit: the abstract namespace belongs to a network namespace, so two containers with separate
 * networks sharing one volume do not see each other's claim (give each its own store).
 *
 * Elsewhere (macOS, Windows) the claim is a file created exclusively next to the store, holding
 * the owner's pid; a file whose pid is no longer alive is taken over. That fallback can be fooled
 * by a reused pid (it then refuses, naming it) and two hubs taking over the same stale file at
 * the same instant may both win.
 */

export class StoreInUseError extends Error {
  override readonly name = 'StoreInUseError';
  constructor(
    readonly path: string,
    readonly ownerPid: number | undefined,
  ) {
    super(
      `the store ${path} is in use by another hub (${ownerPid === undefined ? 'pid unknown' : `pid ${ownerPid}`}): ` +
        'stop it, or give this hub its own store (--transport-url lmdb:///another/path.lmdb)',
    );
  }
}

export interface StoreClaim {
  release(): Promise<void>;
}

/** How long to wait for the owner to say its pid, and to retry a claim whose owner is exiting. */
const ASK_TIMEOUT = 1000;
const RETRIES = 10;

/**
 * Claims the store at `path` (absolute) for this process, or rejects with StoreInUseError.
 * Missing parent directories are created (the store would create them anyway).
 */
export async function claimStore(path: string): Promise<StoreClaim> {
  const id = storeIdentity(path);
  if (process.platform === 'linux') return claimAbstract(path, id);
  return claimFile(path);
}

/**
 * The same store reached through a symlink, a bind mount or `..` must give the same name: the
 * identity is the device and inode of the store's real parent directory plus its file name.
 */
function storeIdentity(path: string): string {
  let real = path;
  try {
    real = fs.realpathSync(path);
  } catch {
    fs.mkdirSync(nodePath.dirname(path), { recursive: true });
    real = nodePath.join(fs.realpathSync(nodePath.dirname(path)), nodePath.basename(path));
  }
  const dir = fs.statSync(nodePath.dirname(real), { bigint: true });
  return `${dir.dev}:${dir.ino}/${nodePath.basename(real)}`;
}

async function claimAbstract(path: string, id: string): Promise<StoreClaim> {
  const name = `\0quicksilver/store/${createHash('sha256').update(id).digest('hex').slice(0, 48)}`;
  for (let attempt = 0; ; attempt++) {
    const server = net.createServer(answerPid);
    server.on('error', ignore);
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      server.once('error', resolve);
      // exclusive: in a cluster worker, bind here rather than through the primary's handle.
      server.listen({ path: name, exclusive: true }, () => resolve(null));
    });
    if (!err) {
      // The claim must never keep a process alive that has nothing else to do.
      server.unref();
      return { release: () => new Promise<void>((r) => server.close(() => r())) };
    }
    if (err.code !== 'EADDRINUSE') throw err;
    const pid = await askPid(name);
    // A claim nobody answers on belongs to a process that is exiting: it is freed in a moment.
    if (pid === null && attempt < RETRIES) {
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    throw new StoreInUseError(path, pid ?? undefined);
  }
}

function answerPid(socket: net.Socket): void {
  socket.on('error', ignore);
  socket.end(`${process.pid}\n`);
}

function askPid(name: string): Promise<number | null> {
  return new Promise((resolve) => {
    let text = '';
    const socket = net.connect({ path: name });
    const done = (pid: number | null): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(pid);
    };
    const timer = setTimeout(() => done(null), ASK_TIMEOUT);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      text += d;
      if (text.length > 32) done(null);
    });
    socket.on('end', () => done(/^\d+\n$/.test(text) ? Number(text.trim()) : null));
    socket.on('error', () => done(null));
  });
}

function ignore(): void {}

async function claimFile(path: string): Promise<StoreClaim> {
  const file = `${path}-owner`;
  for (let attempt = 0; attempt < RETRIES; attempt++) {
    try {
      // 'wx' is O_CREAT|O_EXCL: of two processes creating it, exactly one succeeds.
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      let released = false;
      return {
        release: async () => {
          if (released) return;
          released = true;
          if (readPid(file) === process.pid) fs.rmSync(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = readPid(file);
    if (pid !== null && pid !== process.pid && alive(pid)) throw new StoreInUseError(path, pid);
    // Left by a hub that died (or half-written by one starting: then retry shortly).
    if (pid === null && attempt === 0) {
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    fs.rmSync(file, { force: true });
  }
  throw new StoreInUseError(path, readPid(file) ?? undefined);
}

function readPid(file: string): number | null {
  try {
    const text = fs.readFileSync(file, 'latin1');
    return /^\d+\n$/.test(text) ? Number(text.trim()) : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
