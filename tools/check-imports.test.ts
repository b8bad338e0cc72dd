// The import-boundary rule (ui → engine → kernels; nothing imports ui) holds for the tree,
// and the checker does catch a violation (a fixture tree where kernels imports ui).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
// @ts-expect-error plain ESM script without types
import { checkImports } from './check-imports.mjs';

test('no import crosses a package boundary the wrong way', () => {
  expect(checkImports()).toEqual([]);
});

test('the checker reports a kernel that imports the ui', () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-imports-'));
  try {
    mkdirSync(join(dir, 'src/kernels'), { recursive: true });
    mkdirSync(join(dir, 'src/ui'), { recursive: true });
    writeFileSync(join(dir, 'src/ui/app.ts'), 'export const x = 1;\n');
    writeFileSync(join(dir, 'src/kernels/bad.ts'), "import { x } from '../ui/app.ts';\nexport const y = x;\n");
    writeFileSync(join(dir, 'src/ui/ok.ts'), "import { y } from '../kernels/bad.ts';\nexport const z = y;\n");
    const v: string[] = checkImports(dir);
    expect(v).toHaveLength(1);
    expect(v[0]).toContain('src/kernels/bad.ts');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
