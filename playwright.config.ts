// Playwright e2e config: Chromium with SwiftShader WebGPU against the real gateway
// (`duet serve`, cpu verifier, bundled tiny pair) serving the built app from dist/.
// Uses Playwright's own Chromium where it is installed, else Debian's /usr/bin/chromium.

import { defineConfig, devices, chromium } from '@playwright/test';
import { existsSync } from 'node:fs';

export const E2E_PORT = Number(process.env.DUET_E2E_PORT ?? 4317);

function executablePath(): string | undefined {
  if (process.env.DUET_CHROMIUM) return process.env.DUET_CHROMIUM;
  let bundled = '';
  try {
    bundled = chromium.executablePath();
  } catch {
    // no Playwright browser registry entry: use the system's
  }
  if (bundled && existsSync(bundled)) return undefined;
  return existsSync('/usr/bin/chromium') ? '/usr/bin/chromium' : undefined;
}

const BASE_ARGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
export const WEBGPU_ARGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', ...BASE_ARGS];

export default defineConfig({
  testDir: 'e2e',
  outputDir: 'test-results/e2e',
  // One worker: the machine has 2 cores and the CPU verifier and SwiftShader share them.
  workers: 1,
  fullyParallel: false,
  retries: 0,
  // Generous: SwiftShader and the CPU verifier share two cores (and, on a dev machine, more).
  timeout: 300_000,
  expect: { timeout: 60_000 },
  reporter: process.env.CI ? [['list'], ['html', { open: 'never', outputFolder: 'test-results/e2e-report' }]] : 'list',
  use: {
    baseURL: `http://127.0.0.1:${E2E_PORT}`,
    screenshot: 'only-on-failure',
    trace: 'retain-on-failure',
    viewport: { width: 1280, height: 860 },
    launchOptions: { executablePath: executablePath() },
  },
  projects: [
    {
      name: 'webgpu',
      testIgnore: /no-webgpu\.spec\.ts/,
      use: { ...devices['Desktop Chrome'], viewport: { width: 1280, height: 860 }, launchOptions: { executablePath: executablePath(), args: WEBGPU_ARGS } },
    },
    {
      // The same browser launched without the WebGPU flags and with WebGPU disabled.
      name: 'no-webgpu',
      testMatch: /no-webgpu\.spec\.ts/,
      use: { ...devices['Desktop Chrome'], viewport: { width: 1280, height: 860 }, launchOptions: { executablePath: executablePath(), args: [...BASE_ARGS, '--disable-webgpu'] } },
    },
  ],
  webServer: {
    command: `node bin/duet.mjs serve --port ${E2E_PORT} --host 127.0.0.1 --verifier cpu`,
    url: `http://127.0.0.1:${E2E_PORT}/api/info`,
    reuseExistingServer: !process.env.CI,
    timeout: 120_000,
    stdout: 'pipe',
    stderr: 'pipe',
  },
});
