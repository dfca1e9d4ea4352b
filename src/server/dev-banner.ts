import { SignJWT } from 'jose';

/** Mints the ready-to-paste tokens printed by `npm start` (development profile only). */
export async function devBanner(url: string, key: string): Promise<string> {
  const secret = new TextEncoder().encode(key);
  const publisher = await new SignJWT({ mercure: { publish: ['*'], subscribe: ['*'] } })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(secret);
  const subscriber = await new SignJWT({ mercure: { subscribe: ['*'] } })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(secret);
  const hub = `${url}/.well-known/mercure`;
  return [
    '',
    `  Quicksilver development hub on ${url}  (NOT for production: well-known key, anonymous, CORS *)`,
    '',
    `  Hub URL:          ${hub}`,
    `  Debugging UI:     ${hub}/ui/`,
    `  JWT key (HS256):  ${key}`,
    '',
    `  Publisher token:  ${publisher}`,
    `  Subscriber token: ${subscriber}`,
    '',
    '  Subscribe:  curl -N ' + `'${hub}?topic=https://example.com/books/1'`,
    '  Publish:    curl -X POST ' + `'${hub}' -H 'Authorization: Bearer ${publisher}' -d 'topic=https://example.com/books/1' -d 'data={"hello":"world"}'`,
    '',
  ].join('\n');
}
