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

// C0, DEL, C1 and format (Cf) characters: CR, LF and NUL would end the SSE line early, and none
// of them can travel in the Last-Event-ID header a reconnecting client sends.
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\p{Cf}]/u;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Why `id` cannot be an update's id, or null. An id must come back intact in Last-Event-ID:
 * headers drop leading and trailing whitespace, and UTF-8 cannot carry a lone surrogate.
 */
export function idProblem(id: string): string | null {
  if (FORBIDDEN.test(id)) return 'contains a control or format character (CR, LF and NUL would break the event stream)';
  if (LONE_SURROGATE.test(id)) return 'contains a lone surrogate, which UTF-8 cannot carry';
  if (/^[ \t]|[ \t]$/.test(id)) return 'begins or ends with whitespace, which the Last-Event-ID header of a reconnection drops';
  if (id.startsWith('#') || id === 'earliest') return 'ids must not start with "#" nor be the reserved value "earliest"';
  return null;
}

/**
 * Why `type` cannot be an update's SSE event type, or null. (`mercure`, reserved for the hub's
 * own events, is refused by the publish endpoint: the hub itself uses it.)
 */
export function typeProblem(type: string): string | null {
  if (FORBIDDEN.test(type) || LONE_SURROGATE.test(type)) return 'contains a control or format character';
  return null;
}
