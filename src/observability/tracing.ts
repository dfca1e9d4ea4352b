/**
 * The slice of the OpenTelemetry tracing API the hub uses. Typed structurally so the core does not
 * depend on `@opentelemetry/api`: pass `trace.getTracer('quicksilver')` from it (or anything alike).
 */
export interface SpanLike {
  setAttribute(key: string, value: string | number | boolean): unknown;
  setStatus(status: { code: number; message?: string }): unknown;
  end(): void;
}

export interface TracerLike {
  startSpan(name: string, options?: { attributes?: Record<string, string | number | boolean>; kind?: number }): SpanLike;
}

/** OpenTelemetry's SpanKind.SERVER and SpanStatusCode.ERROR, without importing the package. */
const SPAN_KIND_SERVER = 1;
const STATUS_ERROR = 2;

/** Runs `work` inside a span named `name`, recording the HTTP status it answered with. */
export async function traced(
  tracer: TracerLike | undefined,
  name: string,
  attributes: Record<string, string | number | boolean>,
  status: () => number,
  work: () => Promise<void>,
): Promise<void> {
  if (!tracer) return work();
  const span = tracer.startSpan(name, { attributes, kind: SPAN_KIND_SERVER });
  try {
    await work();
    const code = status();
    span.setAttribute('http.response.status_code', code);
    if (code >= 500) span.setStatus({ code: STATUS_ERROR, message: `HTTP ${code}` });
  } catch (err) {
    span.setStatus({ code: STATUS_ERROR, message: (err as Error).message });
    throw err;
  } finally {
    span.end();
  }
}

/** Loads a tracer from `@opentelemetry/api` (an optional dependency), or explains why it cannot. */
export async function loadOpenTelemetryTracer(version: string): Promise<TracerLike | string> {
  try {
    const api = (await import('@opentelemetry/api')) as { trace: { getTracer(name: string, version?: string): TracerLike } };
    return api.trace.getTracer('quicksilver', version);
  } catch {
    return 'tracing needs the @opentelemetry/api package (npm install @opentelemetry/api) and an SDK registered with --import';
  }
}
