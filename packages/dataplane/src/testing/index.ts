export * from './certs.js';
export * from './crl.js';
