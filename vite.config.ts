// Vite builds the web app (src/ui) into dist/; Vitest (same config) runs the unit tests.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: '.',
  publicDir: 'public',
  build: { outDir: 'dist', target: 'es2022', emptyOutDir: true },
  worker: { format: 'es' },
  test: {
    include: ['src/**/*.test.ts', 'server/**/*.test.ts', 'tools/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // SwiftShader and the CPU reference are CPU-bound; the machine has 2 cores.
    fileParallelism: false,
  },
});
