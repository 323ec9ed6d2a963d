export * from './authorization.js';
export * from './gateway.js';
export * from './identity.js';
export * from './ip.js';
export * from './service.js';
export * from './workload.js';
