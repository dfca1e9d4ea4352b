/**
 * Values the hub uses when nothing is configured: the well-known development key, the default
 * transport and the `--dev` profile layer. Kept together so "what do I get without settings" is
 * answered in one place (the per-setting built-in defaults are applied in index.ts).
 */
import { type Layer, put } from './settings.js';

/** The well-known development key of the reference hub's official image (HS256). Never use it in production. */
export const DEV_KEY = '!ChangeThisMercureHubJWTSecretKey!';

/**
 * The embedded, persistent store in `./.quicksilver/` (relative to the working directory), with
 * bounded history: 100 000 updates and 7 days, whichever is reached first.
 */
export const DEFAULT_TRANSPORT_URL = 'lmdb://./.quicksilver/hub.lmdb';

/**
 * The `--dev` profile's store: its own file, so that a development hub and a production start
 * in the same directory never share a store (one store has one owning hub; the second would be
 * refused).
 */
export const DEV_TRANSPORT_URL = 'lmdb://./.quicksilver/dev.lmdb';

/** Example keys published in documentation: anyone can sign tokens with them. */
export const WELL_KNOWN_KEYS = [DEV_KEY, '!ChangeMe!'];

/**
 * The `--dev` profile, applied above the built-in defaults and below every explicit setting:
 *
 * - publisher key: {@link DEV_KEY} (HS256) when no publisher key or JWKS URL is configured;
 *   the subscriber key then defaults to the publisher key, as always;
 * - `anonymous`: true;
 * - `subscriptions`: true;
 * - `cors_origins`: `*`;
 * - `publish_origins`: `*`;
 * - `ui` and `demo`: true;
 * - `addr`: `localhost:3000` (only reachable from this machine; use `--addr :3000` in a container);
 * - `transport_url`: {@link DEV_TRANSPORT_URL}.
 */
export function devLayer(): Layer {
  const src = '--dev';
  const layer: Layer = {};
  put(layer, 'anonymous', true, src, '');
  put(layer, 'subscriptions', true, src, '');
  put(layer, 'corsOrigins', ['*'], src, '');
  put(layer, 'publishOrigins', ['*'], src, '');
  put(layer, 'ui', true, src, '');
  put(layer, 'demo', true, src, '');
  put(layer, 'addr', 'localhost:3000', src, '');
  put(layer, 'transportUrl', DEV_TRANSPORT_URL, src, '');
  return layer;
}
