/**
 * Whether the hub gets its certificates over ACME, and with what: from `--acme-domain` (and the
 * other `acme_*` settings) or, as Caddy does, from SERVER_NAME site addresses naming domains.
 * Certificate files given explicitly win over SERVER_NAME's domains, not over `--acme-domain`
 * (both at once is a contradiction, reported).
 */
import { resolve as resolvePath } from 'node:path';
import type { AcmeConfig } from './types.js';
import type { Ctx, Layer } from './settings.js';
import { ACME_DIRECTORIES } from './values.js';

export const DEFAULT_ACME_DIR = './.quicksilver/acme';

export function acmeFromSettings(s: Layer, certFiles: boolean, ctx: Ctx): AcmeConfig | undefined {
  const domains = s.acmeDomains;
  const others = [s.acmeEmail, s.acmeDirectory, s.acmeCaRoot, s.acmeDir, s.acmeHttpPort, s.acmeRenewBefore].filter((v) => v !== undefined);
  if (!domains || (domains.siteAddress && certFiles)) {
    for (const v of others) ctx.warnings.push(`${v.source}: ignored: no ACME domain (set --acme-domain or SERVER_NAME=<domain>)`);
    return undefined;
  }
  if (certFiles) {
    ctx.errors.push(`${domains.source}: ACME domains and certificate files (CERT_FILE/KEY_FILE) exclude each other; choose one`);
    return undefined;
  }
  const dir = s.acmeDir ? resolvePath(s.acmeDir.dir, s.acmeDir.value) : resolvePath(ctx.cwd, DEFAULT_ACME_DIR);
  const http = s.acmeHttpPort?.value ?? ':80';
  const acme: AcmeConfig = {
    domains: domains.value,
    directoryUrl: s.acmeDirectory?.value ?? (ACME_DIRECTORIES['production'] as string),
    dir,
  };
  if (s.acmeEmail) acme.email = s.acmeEmail.value;
  if (s.acmeCaRoot) acme.caRoot = resolvePath(s.acmeCaRoot.dir, s.acmeCaRoot.value);
  if (http !== 'off') acme.httpAddr = http;
  if (s.acmeRenewBefore) acme.renewBefore = s.acmeRenewBefore.value;
  return acme;
}
