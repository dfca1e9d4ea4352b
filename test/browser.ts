/**
 * Headless Chromium for browser tests, through playwright-core and Debian's `chromium` package
 * (installed by scripts/install-chromium.sh; Playwright's own browser download does not work here).
 *
 * Use `describeBrowser` instead of `describe` for suites that need it: when Chromium is missing
 * they are skipped with a message on a developer's machine, and fail under CI (CI is set).
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { describe } from 'vitest';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/**
 * The flags this machine needs: no sandbox (root), no GPU, and no background networking (the
 * network is closed; without these Chromium keeps trying to reach Google's hosts).
 */
export const CHROMIUM_ARGS: readonly string[] = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Why browser tests cannot run here, or null when Chromium is installed. */
export const chromiumMissing: string | null = existsSync(CHROMIUM_PATH)
  ? null
  : `Chromium not found at ${CHROMIUM_PATH}: run scripts/install-chromium.sh`;

/** Under CI a missing Chromium is an error, never a silent skip. */
const skipBrowserTests = chromiumMissing !== null && !process.env.CI;

if (skipBrowserTests) {
  console.warn(`[browser tests skipped] ${chromiumMissing}`);
}

/** `describe` for suites that drive Chromium: skipped (with a message) when it is missing outside CI. */
export const describeBrowser: typeof describe = skipBrowserTests ? (describe.skip as typeof describe) : describe;

/**
 * Launches headless Chromium. Each launch gets a fresh, empty profile: Playwright passes its own
 * new temporary `--user-data-dir` (it refuses one in `args`) and deletes it on `browser.close()`.
 * Throws with the install hint when Chromium is missing.
 */
export async function launchBrowser(): Promise<Browser> {
  if (chromiumMissing) throw new Error(chromiumMissing);
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [...CHROMIUM_ARGS],
    // Chromium's first start on a cold disk can be slow; a hung one must not stall the suite.
    timeout: 30_000,
  });
}
