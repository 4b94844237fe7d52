/**
 * Which network addresses the crawler may connect to. A page on the web must not make a crawler
 * running inside a company network or a cloud VM fetch `http://169.254.169.254/` (cloud credentials),
 * `http://localhost:8080/admin` or `http://10.0.0.5/`: by default every URL's host is resolved first
 * (as `fetch` resolves it: the system resolver, `/etc/hosts` included) and refused unless all its
 * addresses are public unicast. Refused: loopback (127/8, ::1), private (10/8, 172.16/12,
 * 192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), unspecified (0.0.0.0, ::), carrier-grade
 * NAT, multicast, broadcast, documentation and other reserved ranges, and IPv6 forms that embed such
 * an IPv4 address (`::ffff:127.0.0.1`, 6to4, Teredo, NAT64). The crawler checks every request, so
 * every redirect hop too.
 *
 * The check happens before `fetch` connects, which resolves the name again: a DNS server that
 * answers differently the second time (DNS rebinding) is not stopped by this, nor is a proxy that
 * `HTTP_PROXY`/`HTTPS_PROXY` names. Run untrusted crawls where the network itself is fenced.
 *
 * @example Allow a local test server, refuse everything else that is not public
 * ```ts
 * import { AddressGuard } from "./address.ts";
 * const guard = new AddressGuard(["127.0.0.1/32"]);
 * console.log(await guard.check("http://127.0.0.1:8000/")); // undefined: allowed
 * console.log(await guard.check("http://169.254.169.254/")); // "169.254.169.254 is link-local, …"
 * ```
 * @module
 */
import ipaddr from "npm:ipaddr.js@^2.5.0";
import { lookup } from "node:dns/promises";
import { z } from "npm:zod@^4.6.7";

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** Whether `text` is an address range such as `10.0.0.0/8`, `::1/128`, or a single address. */
export function isAddressRange(text: string): boolean {
  try {
    parseRange(text);
    return true;
  } catch {
    return false;
  }
}

function parseRange(text: string): [Address, number] {
  if (text.includes("/")) return ipaddr.parseCIDR(text);
  const address = ipaddr.parse(text);
  return [address, address.kind() === "ipv4" ? 32 : 128];
}

/**
 * The `allowPrivateNetwork` config field: `false` (the default: public addresses only), `true` (any
 * address), or the address ranges also allowed (`["127.0.0.1/32", "10.1.0.0/16"]`).
 */
export const allowPrivateNetworkSchema = z.union([
  z.boolean(),
  z.array(
    z.string().refine(isAddressRange, {
      message: "expected an address or an address range, such as 10.0.0.0/8 or ::1/128",
    }),
  ),
]).default(false);

/** The address a mapped IPv6 address stands for (`::ffff:127.0.0.1` is 127.0.0.1). */
function unmapped(address: Address): Address {
  return address.kind() === "ipv6" && (address as ipaddr.IPv6).isIPv4MappedAddress()
    ? (address as ipaddr.IPv6).toIPv4Address()
    : address;
}

/** `""` when `address` is public unicast, else the name of its range (`loopback`, `private`…). */
export function nonPublicRange(address: string): string {
  const range = unmapped(ipaddr.parse(address)).range();
  return range === "unicast" ? "" : range.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()); // linkLocal
}

/** Decides, per host, whether the crawler may connect; see the module documentation. */
export class AddressGuard {
  #allowAll: boolean;
  #ranges: [Address, number][];
  #verdicts = new Map<string, Promise<string | undefined>>();

  /** `allow`: the `allowPrivateNetwork` config value. */
  constructor(allow: boolean | string[] = false) {
    this.#allowAll = allow === true;
    this.#ranges = Array.isArray(allow) ? allow.map(parseRange) : [];
  }

  /**
   * Why `url` may not be fetched (its host has an address that is not public and not allowed), or
   * undefined when it may. Rejects when the host cannot be resolved. One lookup per host.
   */
  check(url: string): Promise<string | undefined> {
    if (this.#allowAll) return Promise.resolve(undefined);
    const host = new URL(url).hostname;
    let verdict = this.#verdicts.get(host);
    if (!verdict) {
      verdict = this.#decide(host);
      verdict.catch(() => this.#verdicts.delete(host)); // a failed lookup is tried again next time
      this.#verdicts.set(host, verdict);
    }
    return verdict;
  }

  async #decide(host: string): Promise<string | undefined> {
    // The URL parser has already turned 0x7f.1, 2130706433 and the like into dotted quads.
    const literal = host.startsWith("[") ? host.slice(1, -1) : host;
    let addresses: string[];
    if (ipaddr.isValid(literal) && (literal.includes(":") || ipaddr.IPv4.isValidFourPartDecimal(literal))) {
      addresses = [literal];
    } else {
      try {
        addresses = (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);
      } catch (e) {
        throw new Error(`cannot resolve ${host}: ${(e as Error).message}`);
      }
    }
    for (const text of addresses) {
      const range = nonPublicRange(text);
      if (!range) continue;
      const address = unmapped(ipaddr.parse(text));
      const allowed = this.#ranges.some(([net, bits]) =>
        net.kind() === address.kind() && address.match(net, bits)
      );
      if (!allowed) {
        const via = text === literal ? "" : ` (${host} resolves to it)`;
        return `${text}${via} is ${range}, not a public address (allowPrivateNetwork allows it)`;
      }
    }
    return undefined;
  }
}
