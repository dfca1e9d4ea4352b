/*
 * The JetStream stream that holds the updates: its configuration from the transport's options,
 * and creating it or bringing its limits back in line on every (re)connection. Separate from the
 * connection lifecycle that calls it because it is pure configuration, read once per setup.
 */
import { DiscardPolicy, nanos, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig, type StreamInfo } from 'nats';
import type { Logger } from '../../observability/logger.js';
import { isStreamNotFound } from './support.js';

/** What the stream must look like. */
export interface StreamSpec {
  readonly stream: string;
  /** Subjects it captures: `<subject>.>`. */
  readonly filter: string;
  /** `max_msgs`; 0 = no limit. */
  readonly size: number;
  /** `max_age` in ms; 0 = no limit. */
  readonly maxAge: number;
  readonly replicas: number;
  /** `duplicate_window` in ms, within which a `Nats-Msg-Id` seen before is not stored again. */
  readonly dedupeWindow: number;
}

function streamConfig(spec: StreamSpec): Partial<StreamConfig> {
  return {
    subjects: [spec.filter],
    retention: RetentionPolicy.Limits,
    max_msgs: spec.size > 0 ? spec.size : -1,
    max_age: nanos(spec.maxAge),
    discard: DiscardPolicy.Old,
    num_replicas: spec.replicas,
    // Every publish carries its update id as Nats-Msg-Id unless the window is 0 (then unused).
    duplicate_window: nanos(spec.dedupeWindow > 0 ? spec.dedupeWindow : 120_000),
  };
}

/** Creates the stream, or updates its limits when they drifted from `spec`; returns its info. */
export async function ensureStream(jsm: JetStreamManager, spec: StreamSpec, log: Logger): Promise<StreamInfo> {
  const want = streamConfig(spec);
  let info: StreamInfo;
  try {
    info = await jsm.streams.info(spec.stream);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    info = await jsm.streams.add({ ...want, name: spec.stream, storage: StorageType.File });
    log.info({ transport: 'nats', stream: spec.stream, subjects: want.subjects }, 'created the JetStream stream');
    return info;
  }
  const c = info.config;
  const drift =
    c.subjects?.length !== 1 ||
    c.subjects[0] !== spec.filter ||
    c.max_msgs !== want.max_msgs ||
    c.max_age !== want.max_age ||
    c.discard !== DiscardPolicy.Old ||
    c.num_replicas !== spec.replicas ||
    c.duplicate_window !== want.duplicate_window ||
    c.retention !== RetentionPolicy.Limits;
  if (drift) {
    info = await jsm.streams.update(spec.stream, { ...c, ...want });
    log.info({ transport: 'nats', stream: spec.stream }, 'updated the JetStream stream limits');
  }
  if (c.storage !== StorageType.File) {
    log.warn({ transport: 'nats', stream: spec.stream }, 'the JetStream stream uses memory storage: history does not survive a NATS restart');
  }
  return info;
}
