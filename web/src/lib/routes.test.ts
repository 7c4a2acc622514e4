import { describe, expect, it } from 'vitest';
import { offers, routeSet } from './routes';

describe('routeSet', () => {
  const doc = {
    openapi: '3.1.0',
    paths: {
      '/v1/hosts/{name}': { get: {}, delete: {}, parameters: [] },
      '/v1/hosts/{name}/cordon': { post: {} },
      '/v1/images/{name}': { get: {}, summary: 'x' },
    },
  };
  it('lists the methods of each path, and nothing else', () => {
    expect([...routeSet(doc)].sort()).toEqual(['DELETE /v1/hosts/{name}', 'GET /v1/hosts/{name}', 'GET /v1/images/{name}', 'POST /v1/hosts/{name}/cordon']);
  });
  it('tells whether a route is offered', () => {
    const r = routeSet(doc);
    expect(offers(r, 'POST /v1/hosts/{name}/cordon')).toBe(true);
    expect(offers(r, 'PATCH /v1/images/{name}')).toBe(false);
    expect(offers(undefined, 'PATCH /v1/images/{name}')).toBe(true);
    expect(routeSet(undefined).size).toBe(0);
  });
});
