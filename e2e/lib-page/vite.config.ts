// Builds the library fixture page (e2e/lib-page, not shipped) into test-results/lib-page, the
// way an app's own Vite build would consume the package: `duet` is resolved by name, through
// a node_modules link to this repository (made by e2e/library.spec.ts) and package.json `exports`.
import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  base: '/',
  publicDir: false,
  logLevel: 'warn',
  build: { outDir: fileURLToPath(new URL('../../test-results/lib-page', import.meta.url)), emptyOutDir: true, target: 'es2022' },
  worker: { format: 'es' },
});
