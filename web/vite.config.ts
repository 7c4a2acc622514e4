import { defineConfig } from 'vite';

// The console is served by `polyvisor server` at /, from web/dist embedded
// in the binary; `npm run dev` proxies the API to a local server.
export default defineConfig({
  base: '/',
  build: { outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 1500 },
  server: { proxy: { '/v1': { target: process.env.POLYVISOR_URL ?? 'https://127.0.0.1:7443', secure: false, ws: true } } },
  test: { environment: 'node', include: ['src/**/*.test.ts'] },
});
