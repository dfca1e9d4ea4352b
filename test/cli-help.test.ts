/**
 * Every subcommand answers `--help` (and `quicksilver help <command>`) with its usage on stdout and
 * exit 0, whatever else is on the command line and without any configuration: `check-config
 * --help` used to be "unknown flag".
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('..', import.meta.url).pathname;

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  // No key in the environment: help must not need a valid configuration.
  const r = spawnSync(process.execPath, ['dist/cli.js', ...args], { cwd: ROOT, env: { PATH: process.env.PATH ?? '' }, encoding: 'utf8', timeout: 15_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('quicksilver <command> --help', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--help'], /^Quicksilver .*: a Mercure hub\.\n\nUsage:/],
    [['-h'], /^Quicksilver /],
    [['help'], /^Quicksilver /],
    [['serve', '--help'], /^Usage: quicksilver \[serve\] \[options\]/],
    [['--dev', '--help'], /^Usage: quicksilver \[serve\] \[options\]/],
    [['help', 'serve'], /^Usage: quicksilver \[serve\] \[options\]/],
    [['check-config', '--help'], /^Usage: quicksilver check-config \[options\]/],
    [['check-config', '-h'], /^Usage: quicksilver check-config \[options\]/],
    [['check-config', '--jwt-key', 'x', '--help'], /^Usage: quicksilver check-config \[options\]/],
    [['help', 'check-config'], /^Usage: quicksilver check-config \[options\]/],
    [['token', '--help'], /^Usage: quicksilver token \[options\]/],
    [['help', 'token'], /^Usage: quicksilver token \[options\]/],
  ];
  for (const [args, usage] of cases) {
    it(`quicksilver ${args.join(' ')}`, () => {
      const r = cli(args);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(usage);
    });
  }

  it('the hub and check-config usages list the options, with --legacy-hub-path', () => {
    for (const args of [['serve', '--help'], ['check-config', '--help']]) expect(cli(args).stdout).toContain('--legacy-hub-path');
  });

  it('help for an unknown command is an error', () => {
    const r = cli(['help', 'bogus']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown command 'bogus'");
  });
});
