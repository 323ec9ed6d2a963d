/**
 * istio-cni's in-pod redirection, exactly as its node agent installs it in a
 * captured pod's network namespace (istio/istio cni/pkg/iptables/iptables.go,
 * testdata/default.golden; reference ztunnel.md §10.4):
 *
 * - mangle: packets from ztunnel's own sockets (mark 0x539) entering through
 *   PREROUTING (i.e. looping back over lo inside the pod) set connmark 0x111;
 *   OUTPUT restores that connmark as the packet mark, so the application's
 *   replies to a spoofed (original-source) connection get mark 0x111 ...
 * - policy routing: ... and mark 0x111 looks up table 100, whose only route is
 *   `local 0.0.0.0/0 dev lo`: the reply is delivered locally to ztunnel's
 *   transparent socket instead of leaving through eth0.
 * - nat: inbound TCP not to 15008 → REDIRECT 15006; outbound TCP → REDIRECT
 *   15001; DNS (UDP, and TCP not to 127.0.0.1) to port 53 → REDIRECT 15053;
 *   ztunnel's own packets (mark 0x539) and kubelet probes (169.254.7.127) are
 *   left alone.
 * - raw: DNS ztunnel forwards upstream and its answers use conntrack zone 1,
 *   so they do not collide with the application's redirected DNS flow.
 */
import { inNetns, ip } from './exec.js';

export const INPOD_MARK = 0x539;
const ROUTE_TABLE = 100;

/** The golden rule lines, table by table (iptables-restore input, chains declared). */
function inpodRules(options: { dnsCapture: boolean }): string {
  const lines = [
    '*mangle',
    ':ISTIO_PRERT - [0:0]',
    ':ISTIO_OUTPUT - [0:0]',
    '-A PREROUTING -j ISTIO_PRERT',
    '-A OUTPUT -j ISTIO_OUTPUT',
    '-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff',
    '-A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff',
    'COMMIT',
    '*nat',
    ':ISTIO_PRERT - [0:0]',
    ':ISTIO_OUTPUT - [0:0]',
    '-A OUTPUT -j ISTIO_OUTPUT',
    '-A PREROUTING -j ISTIO_PRERT',
    '-A ISTIO_PRERT -s 169.254.7.127 -p tcp -m tcp -j ACCEPT',
    '-A ISTIO_OUTPUT -d 169.254.7.127 -p tcp -m tcp -j ACCEPT',
    '-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006',
    ...(options.dnsCapture
      ? [
          '-A ISTIO_OUTPUT ! -o lo -p udp -m mark ! --mark 0x539/0xfff -m udp --dport 53 -j REDIRECT --to-port 15053',
          '-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp --dport 53 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15053',
        ]
      : []),
    '-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT',
    '-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT',
    '-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001',
    'COMMIT',
    ...(options.dnsCapture
      ? [
          '*raw',
          ':ISTIO_PRERT - [0:0]',
          ':ISTIO_OUTPUT - [0:0]',
          '-A PREROUTING -j ISTIO_PRERT',
          '-A OUTPUT -j ISTIO_OUTPUT',
          '-A ISTIO_OUTPUT -p udp -m mark --mark 0x539/0xfff -m udp --dport 53 -j CT --zone 1',
          '-A ISTIO_PRERT -p udp -m mark ! --mark 0x539/0xfff -m udp --sport 53 -j CT --zone 1',
          'COMMIT',
        ]
      : []),
  ];
  return `${lines.join('\n')}\n`;
}

/** Installs the rules and the policy routing in a pod namespace, as the CNI does before it sends Add. */
export async function installInpodCapture(netns: string, options: { dnsCapture: boolean } = { dnsCapture: true }): Promise<void> {
  await inNetns(netns, 'iptables-restore', ['--wait', '10', '--noflush'], inpodRules(options));
  await ip(netns, 'rule', 'add', 'fwmark', '0x111/0xfff', 'pref', '32764', 'lookup', String(ROUTE_TABLE));
  await ip(netns, 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(ROUTE_TABLE));
}
