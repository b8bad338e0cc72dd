// The import-boundary rule (ui → engine → kernels; nothing imports ui) holds for the tree.
import { expect, test } from 'vitest';
// @ts-expect-error plain ESM script without types
import { checkImports } from './check-imports.mjs';

test('no import crosses a package boundary the wrong way', () => {
  expect(checkImports()).toEqual([]);
});
