/**
 * The subscription URL: which topic selectors or matchers a subscription asks for, written as
 * the query parameters of draft-07 or draft-08, which cannot be mixed in one request.
 */

export interface TopicSelection {
  /** Draft-07 topic selectors (`topic=`): exact topics, URI templates, `*`. */
  topics?: string | readonly string[] | undefined;
  /** Draft-08 exact matchers (`match=`). */
  matches?: string | readonly string[] | undefined;
  /** Draft-08 URL Pattern matchers (`match_urlpattern=`). */
  matchUrlPatterns?: string | readonly string[] | undefined;
}

export interface SubscribeUrlOptions extends TopicSelection {
  /** Sent as `lastEventID` (draft-07) or `last_event_id` (draft-08): replay what was published after it. */
  lastEventId?: string | undefined;
}

export function list(v: string | readonly string[] | undefined): string[] {
  if (v === undefined) return [];
  return typeof v === 'string' ? [v] : [...v];
}

/**
 * The subscription URL: `?topic=…` (draft-07) or `?match=…&match_urlpattern=…` (draft-08), plus
 * the last event ID parameter of that version. Query parameters already in `hubUrl` are kept.
 */
export function subscribeUrl(hubUrl: string | URL, options: SubscribeUrlOptions): string {
  let url: URL;
  try {
    url = new URL(String(hubUrl), (globalThis as { location?: { href: string } }).location?.href);
  } catch {
    throw new TypeError(`Invalid hub URL ${JSON.stringify(String(hubUrl))}`);
  }
  const topics = list(options.topics);
  const matches = list(options.matches);
  const patterns = list(options.matchUrlPatterns);
  if (topics.length === 0 && matches.length === 0 && patterns.length === 0) {
    throw new TypeError('Nothing to subscribe to: give `topics` (draft-07) or `matches` / `matchUrlPatterns` (draft-08)');
  }
  if (topics.length > 0 && matches.length + patterns.length > 0) {
    throw new TypeError('A subscription cannot mix draft-07 `topics` with draft-08 `matches` / `matchUrlPatterns`');
  }
  for (const t of [...topics, ...matches, ...patterns]) {
    if (typeof t !== 'string' || t === '') throw new TypeError(`Invalid topic or matcher ${JSON.stringify(t)}`);
  }
  for (const t of topics) url.searchParams.append('topic', t);
  for (const m of matches) url.searchParams.append('match', m);
  for (const p of patterns) url.searchParams.append('match_urlpattern', p);
  if (options.lastEventId !== undefined) {
    url.searchParams.set(topics.length > 0 ? 'lastEventID' : 'last_event_id', options.lastEventId);
  }
  return url.href;
}
