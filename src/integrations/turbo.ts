/**
 * Turbo Streams over Mercure, like Symfony UX Turbo's `turbo_stream_listen`: render
 * `<turbo-stream>` elements, publish them on a topic, and render the `<turbo-stream-source>`
 * element that makes Turbo apply what the hub pushes.
 *
 * ```ts
 * import { turboStream, publishTurboStream, turboStreamSource, escapeHtml } from 'quicksilver/turbo';
 *
 * // in the page: <turbo-stream-source src="…/.well-known/mercure?topic=…">
 * page += turboStreamSource('/.well-known/mercure', [productTopic]);
 * // when a review is added:
 * await publishTurboStream(publisher, productTopic, [
 *   turboStream('append', 'reviews', `<li id="review_${id}">${escapeHtml(text)}</li>`),
 *   turboStream('update', 'quick-stats', statsHtml),
 * ]);
 * ```
 *
 * No runtime imports: the module also loads in browsers, where {@link defineTurboStreamSource}
 * gives `<turbo-stream-source with-credentials>` its meaning.
 */
import type { MercurePublisher } from '../client/publisher.js';

/** The media type of Turbo Stream responses to form submissions. */
export const TURBO_STREAM_MEDIA_TYPE = 'text/vnd.turbo-stream.html';

/** Turbo 8's stream actions. */
export const TURBO_STREAM_ACTIONS = ['append', 'prepend', 'replace', 'update', 'remove', 'before', 'after', 'refresh'] as const;
export type TurboStreamAction = (typeof TURBO_STREAM_ACTIONS)[number];

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for HTML content and attribute values (`&`, `<`, `>`, `"`, `'`). */
export function escapeHtml(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** Attribute values: strings and numbers are escaped, `true` renders a bare attribute, `false`/`undefined`/`null` omit it. */
export type AttributeValue = string | number | boolean | null | undefined;

const ATTRIBUTE_NAME = /^[A-Za-z_:][-A-Za-z0-9_:.]*$/;

function renderAttributes(attributes: Record<string, AttributeValue> | undefined, reserved: readonly string[]): string {
  if (!attributes) return '';
  let out = '';
  for (const [name, value] of Object.entries(attributes)) {
    if (!ATTRIBUTE_NAME.test(name)) throw new TypeError(`Invalid attribute name ${JSON.stringify(name)}`);
    if (reserved.includes(name.toLowerCase())) throw new TypeError(`The attribute "${name}" is set by the function itself; pass it as an argument`);
    if (value === undefined || value === null || value === false) continue;
    out += value === true ? ` ${name}` : ` ${name}="${escapeHtml(value)}"`;
  }
  return out;
}

export interface TurboStreamOptions {
  /** A CSS selector: the action applies to every match (`targets="…"`) instead of the `target` id. */
  targets?: string | undefined;
  /** Extra attributes, e.g. `{ method: 'morph' }` (replace/update, refresh), `{ 'request-id': … }` (refresh). */
  attributes?: Record<string, AttributeValue> | undefined;
}

/**
 * One `<turbo-stream action="…" target="…"><template>…</template></turbo-stream>`.
 *
 * `html` is markup, inserted as is: escape what users wrote with {@link escapeHtml}. `remove`
 * and `refresh` take no content; `refresh` needs no target. Custom actions (registered in
 * `Turbo.StreamActions`) are accepted too.
 */
export function turboStream(
  action: TurboStreamAction | (string & {}),
  target: string | null | undefined,
  html?: string | null,
  options: TurboStreamOptions = {},
): string {
  if (typeof action !== 'string' || !/^[a-z][a-z0-9_-]*$/i.test(action)) throw new TypeError(`Invalid Turbo Stream action ${JSON.stringify(action)}`);
  const hasTarget = target !== undefined && target !== null && target !== '';
  if (hasTarget && options.targets !== undefined) throw new TypeError('turboStream: give `target` (an id) or `targets` (a CSS selector), not both');
  if (!hasTarget && (options.targets === undefined || options.targets === '') && action !== 'refresh') {
    throw new TypeError(`turboStream: the "${action}" action needs a target id or a \`targets\` selector`);
  }
  const noContent = action === 'remove' || action === 'refresh';
  if (noContent && html !== undefined && html !== null && html !== '') throw new TypeError(`turboStream: the "${action}" action takes no content`);
  let open = `<turbo-stream action="${escapeHtml(action)}"`;
  if (hasTarget) open += ` target="${escapeHtml(target)}"`;
  else if (options.targets) open += ` targets="${escapeHtml(options.targets)}"`;
  open += renderAttributes(options.attributes, ['action', 'target', 'targets']) + '>';
  const content = noContent ? '' : `<template>${html ?? ''}</template>`;
  return `${open}${content}</turbo-stream>`;
}

export interface PublishTurboStreamOptions {
  /** Only subscribers authorized for one of the topics receive it (their `<turbo-stream-source with-credentials>` sends the cookie). */
  private?: boolean | undefined;
  /** The update id (default: the hub's). */
  id?: string | undefined;
  /** SSE `event` type. Turbo listens to `message` events only: leave it unset for a `<turbo-stream-source>`. */
  type?: string | undefined;
  retry?: number | undefined;
}

/**
 * Publishes Turbo Stream elements on a topic (or topics: the first is canonical). Every
 * `<turbo-stream-source>` subscribed to it applies them. Resolves to the update id.
 */
export function publishTurboStream(
  publisher: MercurePublisher,
  topics: string | readonly string[],
  streams: string | readonly string[],
  options: PublishTurboStreamOptions = {},
): Promise<string> {
  const data = typeof streams === 'string' ? streams : streams.join('\n');
  if (!/<turbo-stream[\s>]/i.test(data)) {
    return Promise.reject(new TypeError('publishTurboStream: no <turbo-stream> element in the data; render them with turboStream()'));
  }
  return publisher.publish({ topics, data, private: options.private, id: options.id, type: options.type, retry: options.retry });
}

export interface TurboStreamSourceOptions {
  /**
   * Send the hub's authorization cookie to a hub on another origin (`EventSource` with
   * `withCredentials`): renders a `with-credentials` attribute, which Turbo's own element ignores.
   * Load {@link defineTurboStreamSource} in the page before Turbo so the element honours it.
   */
  withCredentials?: boolean | undefined;
  /** `lastEventID`: replay what was published after this id. */
  lastEventId?: string | undefined;
  /** Extra attributes of the element (`id`, `data-…`). */
  attributes?: Record<string, AttributeValue> | undefined;
}

/** The subscription URL: `hubUrl?topic=…&topic=…` (a relative hub URL stays relative). */
export function turboStreamSourceUrl(hubUrl: string | URL, topics: string | readonly string[], lastEventId?: string): string {
  const list = typeof topics === 'string' ? [topics] : [...topics];
  if (list.length === 0 || list.some((t) => typeof t !== 'string' || t === '')) throw new TypeError('turboStreamSource: at least one non-empty topic');
  const params = new URLSearchParams();
  for (const t of list) params.append('topic', t);
  if (lastEventId !== undefined) params.set('lastEventID', lastEventId);
  const hub = String(hubUrl);
  if (hub === '') throw new TypeError('turboStreamSource: the hub URL is empty');
  const hash = hub.indexOf('#');
  const base = hash < 0 ? hub : hub.slice(0, hash);
  return `${base}${base.includes('?') ? '&' : '?'}${params.toString()}`;
}

/**
 * `<turbo-stream-source src="<hub>?topic=…"></turbo-stream-source>`: Turbo opens an
 * `EventSource` on the hub and applies every Turbo Stream published on the topics. The
 * equivalent of Symfony UX's `turbo_stream_listen()`.
 */
export function turboStreamSource(hubUrl: string | URL, topics: string | readonly string[], options: TurboStreamSourceOptions = {}): string {
  const src = turboStreamSourceUrl(hubUrl, topics, options.lastEventId);
  const extra = renderAttributes(options.attributes, ['src', 'with-credentials']);
  return `<turbo-stream-source src="${escapeHtml(src)}"${options.withCredentials ? ' with-credentials' : ''}${extra}></turbo-stream-source>`;
}

interface StreamSourceConnector {
  connectStreamSource(source: EventTarget): void;
  disconnectStreamSource(source: EventTarget): void;
}

/**
 * Browser only. Defines `<turbo-stream-source>` so that it honours `with-credentials` (an
 * `EventSource` that sends the hub's cookie cross-origin); otherwise it behaves like Turbo's own
 * element (EventSource, or WebSocket for `ws:`/`wss:` URLs). Turbo keeps an element already
 * defined, so import this module before `@hotwired/turbo`:
 *
 * ```html
 * <script type="module">
 *   import { defineTurboStreamSource } from '/quicksilver/turbo.js';
 *   defineTurboStreamSource();
 *   await import('/turbo.js');
 * </script>
 * ```
 * Returns false when the element was already defined (by Turbo: then loaded too early).
 */
export function defineTurboStreamSource(): boolean {
  const registry = (globalThis as { customElements?: CustomElementRegistry }).customElements;
  if (!registry) throw new Error('defineTurboStreamSource runs in a browser (no customElements here)');
  const existing = registry.get('turbo-stream-source') as (CustomElementConstructor & { quicksilver?: boolean }) | undefined;
  if (existing) {
    if (!existing.quicksilver) console.warn('<turbo-stream-source> is already defined (Turbo loaded first): with-credentials will be ignored. Call defineTurboStreamSource() before importing @hotwired/turbo.');
    return false;
  }
  const turbo = (): Promise<StreamSourceConnector> => {
    const now = (globalThis as { Turbo?: StreamSourceConnector }).Turbo;
    if (now?.connectStreamSource) return Promise.resolve(now);
    // Turbo defines <turbo-stream> and sets window.Turbo in the same module evaluation.
    return registry.whenDefined('turbo-stream').then(() => {
      const t = (globalThis as { Turbo?: StreamSourceConnector }).Turbo;
      if (!t?.connectStreamSource) throw new Error('window.Turbo is missing: load @hotwired/turbo');
      return t;
    });
  };
  class MercureStreamSourceElement extends HTMLElement {
    static quicksilver = true;
    streamSource: EventSource | WebSocket | null = null;

    connectedCallback(): void {
      const src = this.getAttribute('src') || '';
      const source = /^wss?:/.test(src) ? new WebSocket(src) : new EventSource(src, { withCredentials: this.hasAttribute('with-credentials') });
      this.streamSource = source;
      void turbo().then((t) => {
        if (this.streamSource === source) t.connectStreamSource(source);
      });
    }

    disconnectedCallback(): void {
      const source = this.streamSource;
      if (!source) return;
      this.streamSource = null;
      source.close();
      void turbo().then((t) => t.disconnectStreamSource(source));
    }

    get src(): string {
      return this.getAttribute('src') || '';
    }
  }
  registry.define('turbo-stream-source', MercureStreamSourceElement);
  return true;
}
