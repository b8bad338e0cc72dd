// The committed kernel text (src/engine/cpu-matmul.wat) is what gen-matmul.ts writes, and the
// committed module bytes (cpu-matmul.wasm.ts) are what that text assembles to: an edit of
// either without `npm run build:wasm` fails here.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { OUT, WAT, assemble, render } from './build.ts';
import { matmulWat } from './gen-matmul.ts';

describe('cpu-matmul.wat', () => {
  it('is what gen-matmul.ts writes', () => {
    expect(readFileSync(WAT, 'utf8')).toBe(matmulWat());
  });
});

describe('cpu-matmul.wasm.ts', () => {
  it('is up to date with cpu-matmul.wat', async () => {
    expect(readFileSync(OUT, 'utf8')).toBe(render(await assemble()));
  });
});
