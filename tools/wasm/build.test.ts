// The committed module bytes (src/engine/cpu-matmul.wasm.ts) are what cpu-matmul.wat assembles
// to: an edit of the .wat without `npm run build:wasm` fails here.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { OUT, assemble, render } from './build.ts';

describe('cpu-matmul.wasm.ts', () => {
  it('is up to date with cpu-matmul.wat', async () => {
    expect(readFileSync(OUT, 'utf8')).toBe(render(await assemble()));
  });
});
