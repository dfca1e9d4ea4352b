/**
 * An update as the hub stores and dispatches it. Immutable once built: the same object is
 * shared by history, every transport and every subscriber.
 */
export interface Update {
  /** The first topic is the canonical one, the rest are alternates. Never empty. */
  readonly topics: readonly string[];
  readonly data: string;
  readonly private: boolean;
  readonly id: string;
  /** SSE `event` field. */
  readonly type?: string | undefined;
  /** SSE `retry` field in milliseconds; 0 or undefined means absent. */
  readonly retry?: number | undefined;
}

/**
 * An update as a transport hands it back: with its position in the transport's single,
 * hub-wide order. Positions strictly increase in delivery order, which is what lets a replay
 * and the live stream be stitched together without gap or duplicate.
 */
export interface StoredUpdate extends Update {
  readonly seq: bigint;
}

export function createUpdate(fields: {
  topics: readonly string[];
  data?: string | undefined;
  private?: boolean | undefined;
  id: string;
  type?: string | undefined;
  retry?: number | undefined;
}): Update {
  const update: Update = {
    topics: Object.freeze([...fields.topics]),
    data: fields.data ?? '',
    private: fields.private ?? false,
    id: fields.id,
    type: fields.type || undefined,
    retry: fields.retry || undefined,
  };
  return Object.freeze(update);
}
