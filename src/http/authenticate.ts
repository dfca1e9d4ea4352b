import { extractToken, type Grants, type Role } from '../auth/index.js';
import type { AuthProblem } from './auth-response.js';
import type { HubContext } from './context.js';
import { header, hubUrl, type Request } from './http-util.js';
import { DRAFT8_COOKIE } from './resource-metadata.js';

export interface Authenticated {
  /** Null for an anonymous request. */
  grants: Grants | null;
  /** Where the token came from (the cookie needs a CSRF check when publishing). */
  source: 'header' | 'cookie' | 'query' | null;
}

/**
 * Finds and verifies the request's token for a role. A present-but-invalid token is always a
 * failure, even where anonymous access is allowed: a stale cookie must not silently downgrade.
 */
export async function authenticate(
  ctx: HubContext,
  req: Request,
  role: Role,
  queryToken: string | undefined,
): Promise<Authenticated | AuthProblem> {
  const presented = extractToken(
    { authorization: req.headers.authorization, cookie: header(req, 'cookie'), queryToken },
    [ctx.options.cookieName, DRAFT8_COOKIE],
  );
  if (presented === null) return { grants: null, source: null };
  if ('error' in presented) return { kind: presented.error, message: presented.message };
  const audience = ctx.options.resourceIdentifier ?? hubUrl(req, ctx.options.trustProxy);
  const result = await ctx.authorizer.verify(presented.token, role, audience);
  if ('error' in result) {
    ctx.log.debug({ role, source: presented.source, reason: result.message }, 'token rejected');
    return { kind: 'invalid_token', message: result.message };
  }
  return { grants: result, source: presented.source };
}

export function isAuthProblem(v: Authenticated | AuthProblem): v is AuthProblem {
  return 'kind' in v;
}
