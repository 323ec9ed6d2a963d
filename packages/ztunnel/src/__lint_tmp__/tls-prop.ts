import tls from 'node:tls';
export const s = tls.connect(443, 'example.com');
