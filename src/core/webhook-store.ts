/**
 * What a transport keeps for webhook subscribers (src/webhooks/): registrations made through the
 * HTTP API, and for every webhook its cursor, its status and the lease that makes exactly one
 * hub process deliver it at a time. Declared in core/ because transports implement it and may
 * not import the webhooks layer.
 *
 * Ownership: a process that `acquire`s a webhook's lease gets a fencing token, larger than any
 * token handed out for that webhook before. Every cursor or status write carries the token and is
 * refused once the lease expired or passed to another process, so a stale owner (paused, cut off,
 * its renewals lost) can never move the cursor back or forth.
 */

/** One topic selector of a webhook, as registered. */
export interface WebhookSelector {
  /** `topic` = draft-07 selector (exact, URI template or `*`); the draft-08 matcher types otherwise. */
  readonly type: 'topic' | 'exact' | 'urlpattern';
  readonly value: string;
}

/** A webhook as the HTTP API registers it (configured webhooks are not stored). */
export interface WebhookRegistration {
  readonly name: string;
  readonly url: string;
  readonly selectors: readonly WebhookSelector[];
  /** Subscriber token whose grants decide which private updates the webhook gets; '' = none. */
  readonly token: string;
  /** HMAC-SHA256 key of the signature header. */
  readonly secret: string;
  /** Most updates per POST (1 = one update per request, the body is then an object). */
  readonly batch: number;
  /** Milliseconds since the epoch. */
  readonly createdAt: number;
}

/** A webhook's durable state. */
export interface WebhookState {
  /** Id of the last update the webhook is done with; undefined until its first owner set it. */
  readonly cursor: string | undefined;
  /** JSON status written by the owner (see webhooks/status.ts); undefined before any. */
  readonly status: string | undefined;
  /** Bumped by a re-enable request: the owner retries at once when it changes. */
  readonly nudge: number;
}

export interface WebhookStore {
  /**
   * Stores a registration and its initial cursor, unless the name is taken: resolves false then.
   */
  register(registration: WebhookRegistration, cursor: string): Promise<boolean>;
  /** Removes a registration with its state and lease; false when there was none. */
  unregister(name: string): Promise<boolean>;
  registrations(): Promise<WebhookRegistration[]>;
  /** State of the named webhooks (absent names: no state yet). */
  states(names: readonly string[]): Promise<Map<string, WebhookState>>;
  /**
   * Takes the lease for `ttl` ms when it is free or expired; resolves the fencing token, or null
   * when another owner holds it.
   */
  acquire(name: string, owner: string, ttl: number): Promise<number | null>;
  /** Extends a lease still held with this token; false when it was lost. */
  renew(name: string, owner: string, fence: number, ttl: number): Promise<boolean>;
  /** Gives the lease up (best effort: it expires anyway). */
  release(name: string, owner: string, fence: number): Promise<void>;
  /** Writes cursor and/or status if the lease is still held with this token; false otherwise. */
  commit(name: string, owner: string, fence: number, change: { cursor?: string; status?: string }): Promise<boolean>;
  /** Asks the owner, wherever it runs, to retry now (re-enable). */
  nudge(name: string): Promise<void>;
}
