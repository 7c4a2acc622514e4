// Which routes the server offers, from its OpenAPI document
// (GET /v1/openapi.json): a control whose route the server does not have
// is not offered, rather than failing with "no route".
export type RouteSet = Set<string>;

const methods = ['get', 'put', 'post', 'delete', 'patch'];

export function routeSet(doc: unknown): RouteSet {
  const out: RouteSet = new Set();
  const paths = (doc as { paths?: Record<string, Record<string, unknown>> } | undefined)?.paths ?? {};
  for (const [path, item] of Object.entries(paths)) {
    for (const m of Object.keys(item ?? {})) if (methods.includes(m)) out.add(`${m.toUpperCase()} ${path}`);
  }
  return out;
}

// offers tells whether the server has the route ("PATCH /v1/images/{name}").
// Without a document to go by (undefined), everything is offered and the
// API answers for itself.
export function offers(routes: RouteSet | undefined, route: string): boolean {
  return !routes || routes.has(route);
}
