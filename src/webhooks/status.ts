/**
 * A webhook's status as its owner writes it to the store (so that the API answers the same on
 * every node) and as the API shows it.
 *
 * - `pending`: no process has taken it yet (or its owner just started).
 * - `active`: the last request was acknowledged, or there was nothing to send.
 * - `retrying`: the callback failed; requests are retried with exponential backoff.
 * - `failing`: it kept failing for longer than the give-up time (or its token is unusable); the
 *   callback is still probed at the longest backoff and delivery resumes from the cursor when it
 *   answers, or at once when the webhook is re-enabled.
 */
export type WebhookStateName = 'pending' | 'active' | 'retrying' | 'failing';

export interface WebhookStatus {
  state: WebhookStateName;
  /** Why it is retrying or failing. */
  reason?: string | undefined;
  /** When `state` was entered (ms since the epoch). */
  since: number;
  /** Consecutive failed attempts of the current request. */
  attempts: number;
  lastAttemptAt?: number | undefined;
  /** Times history had lost updates the webhook had not received yet (trimmed before delivery). */
  gaps: number;
  lastGap?: { at: number; after: string } | undefined;
  /** The process delivering it (host:pid). */
  owner?: string | undefined;
}

export function parseStatus(json: string | undefined): WebhookStatus | undefined {
  if (!json) return undefined;
  try {
    const s = JSON.parse(json) as WebhookStatus;
    return typeof s === 'object' && s !== null && typeof s.state === 'string' ? s : undefined;
  } catch {
    return undefined;
  }
}
