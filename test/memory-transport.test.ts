import { MemoryTransport } from '../src/transports/memory.js';
import { transportConformance } from './transport-conformance.js';

transportConformance('memory', async (o) => new MemoryTransport({ size: o?.size ?? 1000 }));

import { describe, expect, it } from 'vitest';
import { createTransport } from '../src/transports/index.js';
import { createLogger } from '../src/observability/logger.js';

describe('memory:// URLs', () => {
  it('take a size and a max_age duration', async () => {
    const t = await createTransport('memory://?size=3&max_age=1h', createLogger('silent'));
    expect(t.name).toBe('memory');
    await expect(createTransport('memory://?max_age=soon', createLogger('silent'))).rejects.toThrow(/max_age/);
    await expect(createTransport('ftp://x', createLogger('silent'))).rejects.toThrow(/unsupported transport/);
  });
});
