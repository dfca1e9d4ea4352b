// Which port an example listens on. `npm start` runs a development hub on 3000, and another
// example may be running too: an example whose default port is taken takes a free one (and says
// so) rather than dying with an EADDRINUSE stack; a port asked for explicitly that is taken is
// one clear line and exit code 1.
import net from 'node:net';

function tryListen(host, port) {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen({ host, port, exclusive: true }, () => {
      const actual = probe.address().port;
      probe.close(() => resolve(actual));
    });
  });
}

/**
 * Resolves to a port that was free a moment ago: `explicit` (from the environment) if given, else
 * `fallback`, else any free one. The probe closes before the example listens; the window is
 * small enough for a demo.
 */
export async function choosePort({ name, host, explicit, fallback, variable = 'PORT' }) {
  const wanted = explicit !== undefined && explicit !== '' ? Number(explicit) : undefined;
  try {
    return await tryListen(host, wanted ?? fallback);
  } catch (err) {
    if (err?.code !== 'EADDRINUSE' && err?.code !== 'EACCES') throw err;
    const port = wanted ?? fallback;
    if (wanted !== undefined) {
      console.error(`${name}: port ${port} on ${host} is already in use (${variable}=${explicit}): stop what uses it, or choose another port with ${variable}=<port>`);
      process.exit(1);
    }
    const free = await tryListen(host, 0);
    console.error(`${name}: port ${port} is already in use (a hub started with npm start?): using port ${free} instead (set ${variable} to choose)`);
    return free;
  }
}
