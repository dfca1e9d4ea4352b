/*
 * Helpers the NATS files share: classifying NATS API errors and bounding waits. Separate so that
 * the transport, the history reader and presence agree on what "no message" or "stream not found"
 * looks like without importing each other.
 */
import type { KV, KvEntry, NatsError } from 'nats';

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function apiErrorCode(err: unknown): number | undefined {
  return (err as NatsError | undefined)?.api_error?.err_code;
}

export function isNoMessage(err: unknown): boolean {
  return apiErrorCode(err) === 10037 || (err as NatsError | undefined)?.code === '404';
}

export function isStreamNotFound(err: unknown): boolean {
  return apiErrorCode(err) === 10059 || errorMessage(err) === 'stream not found';
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export async function withTimeout<T>(ms: number, p: Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The current value of every key of a KV bucket (or those matching `key`). Deletes are filtered
 * here rather than with `ignoreDeletes`: with it the watcher never reports initialization when the
 * last entry is a delete marker.
 */
export async function kvSnapshot(kv: KV, key?: string): Promise<KvEntry[]> {
  const out: KvEntry[] = [];
  let initialized = false;
  let iter: Awaited<ReturnType<KV['watch']>> | undefined;
  iter = await kv.watch({
    ...(key ? { key } : {}),
    initializedFn: () => {
      initialized = true;
      iter?.stop();
    },
  });
  if (initialized) iter.stop();
  for await (const e of iter) {
    if (e.operation === 'PUT') out.push(e);
  }
  return out;
}
