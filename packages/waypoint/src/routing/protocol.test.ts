import type { AppProtocol } from '@ambient/control';
import { describe, expect, it } from 'vitest';
import { istioProtocolOfKubePort, parseIstioProtocol, portProtocol, type IstioProtocol, type KubePortInput } from './protocol.js';
import type { PortProtocol } from './types.js';

const port = (name: string | undefined, appProtocol?: string, p = 8080, protocol = 'TCP'): KubePortInput => ({ name, port: p, protocol, appProtocol });

describe('istioProtocolOfKubePort (Istio ConvertProtocol)', () => {
  const cases: Array<[string, KubePortInput, IstioProtocol]> = [
    ['appProtocol http', port('tcp-x', 'http'), 'HTTP'],
    ['appProtocol HTTP (case-insensitive)', port(undefined, 'HTTP'), 'HTTP'],
    ['appProtocol http2', port(undefined, 'http2'), 'HTTP2'],
    ['appProtocol grpc', port(undefined, 'grpc'), 'GRPC'],
    ['appProtocol grpc-web', port(undefined, 'grpc-web'), 'GRPC-Web'],
    ['appProtocol GRPC-Web any case', port(undefined, 'GRPC-WEB'), 'GRPC-Web'],
    ['appProtocol https', port(undefined, 'https'), 'HTTPS'],
    ['appProtocol tls', port(undefined, 'tls'), 'TLS'],
    ['appProtocol tcp beats an http- name', port('http-web', 'tcp'), 'TCP'],
    ['kubernetes.io/h2c', port('grpc', 'kubernetes.io/h2c'), 'HTTP2'],
    ['kubernetes.io/ws', port(undefined, 'kubernetes.io/ws'), 'HTTP'],
    ['kubernetes.io/wss', port(undefined, 'kubernetes.io/wss'), 'HTTPS'],
    ['kubernetes.io/H2C is not the Kubernetes name (case-sensitive)', port(undefined, 'kubernetes.io/H2C'), 'UnsupportedProtocol'],
    ['an unknown appProtocol decides: the name is not consulted', port('http', 'hbone'), 'UnsupportedProtocol'],
    ['appProtocol with a dash: the part before it', port(undefined, 'http-custom'), 'HTTP'],
    ['name http', port('http'), 'HTTP'],
    ['name http-web', port('http-web'), 'HTTP'],
    ['name HTTP2-x', port('HTTP2-x'), 'HTTP2'],
    ['name grpc', port('grpc'), 'GRPC'],
    ['name grpc-foo', port('grpc-foo'), 'GRPC'],
    ['name grpc-web-foo', port('grpc-web-foo'), 'GRPC-Web'],
    ['name https-admin', port('https-admin'), 'HTTPS'],
    ['name tls-x', port('tls-x'), 'TLS'],
    ['name tcp', port('tcp'), 'TCP'],
    ['name mongo', port('mongo'), 'Mongo'],
    ['name redis-cache', port('redis-cache'), 'Redis'],
    ['name mysql', port('mysql'), 'MySQL'],
    ['name http_proxy', port('http_proxy'), 'HTTP_PROXY'],
    ['name httpfoo is no prefix', port('httpfoo'), 'UnsupportedProtocol'],
    ['name web', port('web'), 'UnsupportedProtocol'],
    ['no name', port(undefined), 'UnsupportedProtocol'],
    ['unnamed well-known port 3306 is TCP', port(undefined, undefined, 3306), 'TCP'],
    ['unnamed well-known port 53 is TCP', port('dns', undefined, 53), 'TCP'],
    ['well-known port keeps a declared protocol', port('http', undefined, 25), 'HTTP'],
    ['UDP port', port('http', 'http', 53, 'UDP'), 'UDP'],
  ];
  it.each(cases)('%s', (_label, input, expected) => {
    expect(istioProtocolOfKubePort(input)).toBe(expected);
  });

  it('parses protocol names case-insensitively and refuses unknown ones', () => {
    expect(parseIstioProtocol('GrPc')).toBe('GRPC');
    expect(parseIstioProtocol('hbone')).toBe('UnsupportedProtocol');
    expect(parseIstioProtocol('')).toBe('UnsupportedProtocol');
  });
});

describe('portProtocol', () => {
  const cases: Array<[string, Parameters<typeof portProtocol>[0], PortProtocol | undefined]> = [
    ['conformance echo:80 (appProtocol http)', { kube: port('http', 'http', 80) }, 'http'],
    ['conformance echo:7070 (appProtocol kubernetes.io/h2c)', { kube: port('grpc', 'kubernetes.io/h2c', 7070) }, 'http2'],
    ['conformance echo-v1:7070 (name grpc only)', { kube: port('grpc', undefined, 7070) }, 'grpc'],
    ['conformance :443 named https, no appProtocol', { kube: port('https', undefined, 443) }, 'tls'],
    ['conformance :9090 named tcp', { kube: port('tcp', undefined, 9090) }, 'tcp'],
    ['grpc-web is served as gRPC', { kube: port('grpc-web') }, 'grpc'],
    ['Mongo is opaque TCP', { kube: port('mongo') }, 'tcp'],
    ['UDP is not served', { kube: port('dns', undefined, 53, 'UDP') }, undefined],
    ['kube port unknown → discovery decides', { kube: port('web'), discovered: 'HTTP2' }, 'http2'],
    ['no kube port: discovery HTTP11', { discovered: 'HTTP11' }, 'http'],
    ['no kube port: discovery GRPC', { discovered: 'GRPC' }, 'grpc'],
    ['no kube port: discovery TCP', { discovered: 'TCP' }, 'tcp'],
    ['no kube port: discovery TLS', { discovered: 'TLS' }, 'tls'],
    ['no kube port: discovery Unknown', { discovered: 'Unknown' as AppProtocol }, 'unknown'],
    ['nothing known: sniff', {}, 'unknown'],
    ['kube port wins over discovery', { kube: port('tcp'), discovered: 'HTTP11' }, 'tcp'],
  ];
  it.each(cases)('%s', (_label, input, expected) => {
    expect(portProtocol(input)).toBe(expected);
  });
});
