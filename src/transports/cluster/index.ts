/*
 * The worker cluster transport (`--workers N`): the primary process owns the real transport
 * (LMDB, memory, Redis…) and relays it to the workers over the cluster IPC channels, which carry
 * JSON. The primary runs a ClusterPrimaryRelay (primary.ts); each worker's hub runs on a
 * ClusterWorkerTransport (worker.ts); they speak the protocol in protocol.ts over the ports and
 * batching outbox of ipc.ts. This file is the entry the server and tests import from.
 */
export { CLUSTER_CHUNK, CLUSTER_METRICS_TIMEOUT, CLUSTER_REQUEST_TIMEOUT, clusterOps } from './protocol.js';
export { processPort, workerPort, type IpcPort } from './ipc.js';
export { ClusterPrimaryRelay, type ClusterPrimaryRelayOptions } from './primary.js';
export { ClusterWorkerTransport, type ClusterWorkerTransportOptions } from './worker.js';
