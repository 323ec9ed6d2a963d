/** The workload/service/policy store: immutable snapshots, serialized atomic writes, subscriptions. */
export { createStore, Store, type StoreOptions, type StoreSubscriber } from './store.js';
export { Snapshot, type AddressMatch, type WorkloadInfo } from './snapshot.js';
export { pickBestService, pickWorkloadForAddress, serviceVisibleTo } from './ranking.js';
export type * from './types.js';
