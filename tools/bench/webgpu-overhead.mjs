// Runs webgpu-overhead.ts through tsx with the WGSL ?raw loader (like bin/duet.mjs).
import { register } from 'node:module';
import { register as registerTsx } from 'tsx/esm/api';

register('../../bin/wgsl-loader.mjs', import.meta.url);
registerTsx();
await import('./webgpu-overhead.ts');
