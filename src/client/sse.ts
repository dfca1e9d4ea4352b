/**
 * A Server-Sent Events parser following the HTML Living Standard's "event stream interpretation":
 * CR, LF and CRLF line endings (also split across chunks), one leading BOM ignored, `data` lines
 * joined by LF, comments ignored, `id` values containing NUL ignored, `retry` only when all
 * ASCII digits, unknown fields ignored, an incomplete event at the end of a stream discarded.
 * Platform-neutral.
 */

/** One event as a subscriber sees it. */
export interface MercureEvent {
  /** The last event ID (the `id` of this event, or the latest one before it). */
  id: string;
  /** The SSE event type: `message` unless the update had a `type`. */
  type: string;
  /** The update's data; multi-line data joined by LF. */
  data: string;
  /** The `retry` field sent with this event (ms), if any. */
  retry: number | undefined;
}

export class SseParser {
  /** The last event ID string: updated when an event block is dispatched, kept across `reset()`. */
  lastEventId: string;
  private line = '';
  private afterCR = false;
  private bomChecked = false;
  private data = '';
  private eventType = '';
  private idBuffer: string;
  private retry: number | undefined;

  constructor(
    private readonly onEvent: (event: MercureEvent) => void,
    private readonly onRetry: (ms: number) => void = () => undefined,
    lastEventId = '',
  ) {
    this.lastEventId = lastEventId;
    this.idBuffer = lastEventId;
  }

  /** Feeds decoded text (any chunking). */
  feed(chunk: string): void {
    if (chunk.length === 0) return;
    let start = 0;
    if (!this.bomChecked) {
      this.bomChecked = true;
      if (chunk.charCodeAt(0) === 0xfeff) start = 1;
    }
    if (this.afterCR) {
      this.afterCR = false;
      if (chunk.charCodeAt(start) === 0x0a) start++;
    }
    let lineStart = start;
    for (let i = start; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (c !== 0x0a && c !== 0x0d) continue;
      const text = this.line + chunk.slice(lineStart, i);
      this.line = '';
      if (c === 0x0d) {
        if (i + 1 < chunk.length) {
          if (chunk.charCodeAt(i + 1) === 0x0a) i++;
        } else {
          this.afterCR = true;
        }
      }
      lineStart = i + 1;
      this.processLine(text);
    }
    if (lineStart < chunk.length) this.line += chunk.slice(lineStart);
  }

  /** The stream ended (or a new connection starts): a partial line or event is discarded. */
  reset(): void {
    this.line = '';
    this.afterCR = false;
    this.bomChecked = false;
    this.data = '';
    this.eventType = '';
    this.retry = undefined;
    this.idBuffer = this.lastEventId;
  }

  private processLine(line: string): void {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line.charCodeAt(0) === 0x3a) return; // comment
    const colon = line.indexOf(':');
    let field: string;
    let value: string;
    if (colon < 0) {
      field = line;
      value = '';
    } else {
      field = line.slice(0, colon);
      value = line.charCodeAt(colon + 1) === 0x20 ? line.slice(colon + 2) : line.slice(colon + 1);
    }
    switch (field) {
      case 'data':
        this.data += value + '\n';
        break;
      case 'event':
        this.eventType = value;
        break;
      case 'id':
        if (!value.includes('\u0000')) this.idBuffer = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) {
          const ms = Number(value);
          if (Number.isSafeInteger(ms)) {
            this.retry = ms;
            this.onRetry(ms);
          }
        }
        break;
      default:
        break;
    }
  }

  private dispatch(): void {
    this.lastEventId = this.idBuffer;
    if (this.data === '') {
      this.eventType = '';
      this.retry = undefined;
      return;
    }
    const event: MercureEvent = {
      id: this.lastEventId,
      type: this.eventType || 'message',
      data: this.data.slice(0, -1),
      retry: this.retry,
    };
    this.data = '';
    this.eventType = '';
    this.retry = undefined;
    this.onEvent(event);
  }
}
