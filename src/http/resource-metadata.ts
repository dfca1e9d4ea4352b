import { HUB_PATH } from '../core/subscription.js';

/** RFC 9728 location of the metadata for the hub URL `/.well-known/mercure`. */
export const RESOURCE_METADATA_PATH = `/.well-known/oauth-protected-resource${HUB_PATH}`;

export const AUTHORIZATION_DETAIL_TYPE = 'https://mercure.rocks/authorization-detail';

/** Draft-08's name for the authorization cookie. */
export const DRAFT8_COOKIE = '__Secure-mercure_access_token';

/** The draft-08 protected-resource metadata document. */
export function resourceMetadata(options: {
  resource: string;
  authorizationServers?: readonly string[] | undefined;
  subscriptions: boolean;
  cookie: boolean;
}): Record<string, unknown> {
  const doc: Record<string, unknown> = {
    resource: options.resource,
    bearer_methods_supported: ['header'],
    authorization_details_types_supported: [AUTHORIZATION_DETAIL_TYPE],
    mercure_matcher_types_supported: ['exact', 'urlpattern'],
  };
  if (options.authorizationServers && options.authorizationServers.length > 0) {
    doc.authorization_servers = options.authorizationServers;
  }
  if (options.cookie) doc.mercure_cookie = DRAFT8_COOKIE;
  if (options.subscriptions) doc.mercure_subscriptions = true;
  return doc;
}
