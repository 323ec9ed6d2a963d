/**
 * Which protocol a service port speaks, decided as istiod decides it.
 *
 * Istio's rule (pkg/config/kube/conversion.go ConvertProtocol + pkg/config/protocol Parse):
 * 1. A UDP port is UDP (the waypoint builds no chain for it: `portProtocol` answers undefined).
 * 2. If the Kubernetes port has an `appProtocol` (even an unknown one), that string decides and the
 *    port name is **not** consulted. `kubernetes.io/h2c` → HTTP2, `kubernetes.io/ws` → HTTP,
 *    `kubernetes.io/wss` → HTTPS (these three compare case-sensitively, as Kubernetes spells them).
 * 3. Otherwise the port name decides.
 * 4. The deciding string: a `grpc-web` prefix (any case) is GRPC-Web; else the part before the first
 *    `-` is parsed case-insensitively (`http`, `http2`, `grpc`, `https`, `tls`, `tcp`, `udp`,
 *    `http_proxy`, `mongo`, `redis`, `mysql`); anything else is unsupported, which means "sniff"
 *    — except on the well-known ports 25, 53, 3306 and 27017, which are TCP.
 *
 * When the Kubernetes Service port is not known to the waypoint (a directory source without the
 * Service manifest, or a ServiceEntry), the workload-discovery `ServicePort.appProtocol` is used —
 * istiod derives that field from the same rule (ambient/workloads.go toAppProtocolFromProtocol), so
 * both sources agree whenever both exist. Nothing known means 'unknown' (sniffing).
 *
 * Pure; no allocation beyond the lower-cased name.
 */
import type { AppProtocol } from '@ambient/control';
import type { ServicePortResource } from '../resources/types.js';
import type { PortProtocol } from './types.js';

/** Istio's protocol.Instance values, spelled as Istio spells them. */
export type IstioProtocol =
  | 'GRPC'
  | 'GRPC-Web'
  | 'HTTP'
  | 'HTTP_PROXY'
  | 'HTTP2'
  | 'HTTPS'
  | 'TCP'
  | 'TLS'
  | 'UDP'
  | 'Mongo'
  | 'Redis'
  | 'MySQL'
  | 'UnsupportedProtocol';

/** Ports Istio never sniffs (SMTP, DNS, MySQL, MongoDB): TCP when nothing else is declared. */
const WELL_KNOWN_TCP_PORTS: ReadonlySet<number> = new Set([25, 53, 3306, 27017]);

/** protocol.Parse: case-insensitive, unknown → UnsupportedProtocol. */
export function parseIstioProtocol(value: string): IstioProtocol {
  switch (value.toLowerCase()) {
    case 'tcp':
      return 'TCP';
    case 'udp':
      return 'UDP';
    case 'grpc':
      return 'GRPC';
    case 'grpc-web':
      return 'GRPC-Web';
    case 'http':
      return 'HTTP';
    case 'http_proxy':
      return 'HTTP_PROXY';
    case 'http2':
      return 'HTTP2';
    case 'https':
      return 'HTTPS';
    case 'tls':
      return 'TLS';
    case 'mongo':
      return 'Mongo';
    case 'redis':
      return 'Redis';
    case 'mysql':
      return 'MySQL';
    default:
      return 'UnsupportedProtocol';
  }
}

/** What ConvertProtocol reads of a Kubernetes Service port. */
export type KubePortInput = Pick<ServicePortResource, 'name' | 'port' | 'protocol' | 'appProtocol'>;

/** Istio's ConvertProtocol for a Kubernetes Service port. */
export function istioProtocolOfKubePort(port: KubePortInput): IstioProtocol {
  if (port.protocol.toUpperCase() === 'UDP') return 'UDP';
  let name = port.name ?? '';
  if (port.appProtocol !== undefined) {
    name = port.appProtocol;
    switch (name) {
      case 'kubernetes.io/h2c':
        return 'HTTP2';
      case 'kubernetes.io/ws':
        return 'HTTP';
      case 'kubernetes.io/wss':
        return 'HTTPS';
      default:
        break;
    }
  }
  if (name.length >= 8 && name.slice(0, 8).toLowerCase() === 'grpc-web') return 'GRPC-Web';
  const dash = name.indexOf('-');
  const parsed = parseIstioProtocol(dash >= 0 ? name.slice(0, dash) : name);
  if (parsed === 'UnsupportedProtocol' && WELL_KNOWN_TCP_PORTS.has(port.port)) return 'TCP';
  return parsed;
}

/**
 * The waypoint's view of an Istio protocol: which chain serves it. undefined for UDP (no chain).
 * HTTPS and TLS are opaque TLS (TCP chain); Mongo/Redis/MySQL are TCP; GRPC-Web is gRPC (HTTP/2 codec).
 */
function toPortProtocol(p: IstioProtocol): PortProtocol | undefined {
  switch (p) {
    case 'HTTP':
    case 'HTTP_PROXY':
      return 'http';
    case 'HTTP2':
      return 'http2';
    case 'GRPC':
    case 'GRPC-Web':
      return 'grpc';
    case 'HTTPS':
    case 'TLS':
      return 'tls';
    case 'TCP':
    case 'Mongo':
    case 'Redis':
    case 'MySQL':
      return 'tcp';
    case 'UDP':
      return undefined;
    case 'UnsupportedProtocol':
      return 'unknown';
  }
}

/** Workload-discovery AppProtocol → PortProtocol. */
export function fromAppProtocol(p: AppProtocol): PortProtocol {
  switch (p) {
    case 'HTTP11':
      return 'http';
    case 'HTTP2':
      return 'http2';
    case 'GRPC':
      return 'grpc';
    case 'TCP':
      return 'tcp';
    case 'TLS':
      return 'tls';
    case 'Unknown':
      return 'unknown';
  }
}

export interface PortProtocolInput {
  /** The Kubernetes Service port, when the waypoint has the Service resource. */
  readonly kube?: KubePortInput | undefined;
  /** The workload-discovery ServicePort.appProtocol of the same port. */
  readonly discovered?: AppProtocol | undefined;
}

/**
 * The protocol of one service port: the Kubernetes port first (appProtocol, else the name prefix),
 * then workload discovery, else 'unknown' (sniff). undefined: a UDP port, which the waypoint does not serve.
 */
export function portProtocol(input: PortProtocolInput): PortProtocol | undefined {
  if (input.kube !== undefined) {
    const fromKube = toPortProtocol(istioProtocolOfKubePort(input.kube));
    if (fromKube !== 'unknown') return fromKube;
  }
  if (input.discovered !== undefined) return fromAppProtocol(input.discovered);
  return 'unknown';
}
