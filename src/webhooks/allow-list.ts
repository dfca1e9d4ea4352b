/**
 * Where webhook callbacks may go (SSRF protection). Every address a callback's host resolves to
 * must be public, or inside a network listed in `webhook_allow`; when `webhook_allow` lists host
 * names, the callback's host must also be one of them. Checked when a webhook is registered and
 * again at every connection, on the addresses actually resolved then, so that a name which
 * re-resolves to 127.0.0.1 after registration (DNS rebinding) is refused at connect time.
 */
import { BlockList, isIP } from 'node:net';

/** Not reachable from the public Internet, or not meant to be: loopback, private, link-local, … */
const REFUSED_V4 = [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const;
const REFUSED_V6 = [
  ['::', 128], ['::1', 128], ['::ffff:0:0', 96], ['64:ff9b::', 96], ['100::', 64], ['2001:db8::', 32],
  ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const;

const refused = new BlockList();
for (const [net, prefix] of REFUSED_V4) refused.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of REFUSED_V6) refused.addSubnet(net, prefix, 'ipv6');

/** `::ffff:a.b.c.d` (in either notation) is IPv4 in disguise: judged as the IPv4 address. */
function unmap(address: string): { address: string; family: 'ipv4' | 'ipv6' } | null {
  const kind = isIP(address);
  if (kind === 4) return { address, family: 'ipv4' };
  if (kind !== 6) return null;
  const lower = address.toLowerCase().replace(/%.*$/, '');
  const dotted = /^(?:0*:)*:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower) ?? /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted) return { address: dotted[1] as string, family: 'ipv4' };
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex) {
    const hi = parseInt(hex[1] as string, 16);
    const lo = parseInt(hex[2] as string, 16);
    return { address: `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`, family: 'ipv4' };
  }
  return { address: lower, family: 'ipv6' };
}

export class AllowList {
  private readonly networks = new BlockList();
  private readonly hosts: string[] = [];
  private readonly suffixes: string[] = [];
  private hasNetworks = false;

  /** Throws with a message naming the bad entry. */
  constructor(readonly entries: readonly string[] = []) {
    for (const raw of entries) {
      const e = raw.trim().toLowerCase();
      if (e === '') continue;
      const slash = e.indexOf('/');
      const ip = e.replace(/^\[|\]$/g, '');
      if (slash >= 0) {
        const net = e.slice(0, slash).replace(/^\[|\]$/g, '');
        const prefix = Number(e.slice(slash + 1));
        const kind = isIP(net);
        if (kind === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > (kind === 4 ? 32 : 128)) {
          throw new Error(`webhook allow-list entry '${raw}' is not a network (e.g. 10.0.0.0/8, fd00::/8)`);
        }
        this.networks.addSubnet(net, prefix, kind === 4 ? 'ipv4' : 'ipv6');
        this.hasNetworks = true;
      } else if (isIP(ip)) {
        this.networks.addAddress(ip, isIP(ip) === 4 ? 'ipv4' : 'ipv6');
        this.hasNetworks = true;
      } else if (/^\*\.([a-z0-9-]+\.)*[a-z0-9-]+$/.test(e)) {
        this.suffixes.push(e.slice(1));
      } else if (/^([a-z0-9-]+\.)*[a-z0-9-]+$/.test(e)) {
        this.hosts.push(e);
      } else {
        throw new Error(`webhook allow-list entry '${raw}' is neither a host name, an address nor a network`);
      }
    }
  }

  /** Why a callback host may not be used at all (before resolving it), or null. */
  hostProblem(hostname: string): string | null {
    const host = hostname.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
    if (this.hosts.length === 0 && this.suffixes.length === 0) return null;
    if (this.hosts.includes(host) || this.suffixes.some((s) => host.endsWith(s))) return null;
    const a = unmap(host);
    if (a && this.hasNetworks && this.networks.check(a.address, a.family)) return null;
    return `host ${host} is not in webhook_allow`;
  }

  /** Why a resolved address may not be connected to, or null. */
  addressProblem(address: string): string | null {
    const a = unmap(address);
    if (!a) return `'${address}' is not an IP address`;
    if (this.hasNetworks && this.networks.check(a.address, a.family)) return null;
    if (refused.check(a.address, a.family)) {
      return `address ${address} is loopback, private, link-local or otherwise not public; list it (or its network) in webhook_allow to allow it`;
    }
    return null;
  }
}
