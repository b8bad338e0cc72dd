#!/usr/bin/env node
// The `duet` CLI. Runs the TypeScript sources directly through tsx, so it works right after
// `npm ci` with no build step; WGSL `?raw` imports are served by wgsl-loader.mjs.
import { register } from 'node:module';
import { register as registerTsx } from 'tsx/esm/api';

register('./wgsl-loader.mjs', import.meta.url);
registerTsx();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
