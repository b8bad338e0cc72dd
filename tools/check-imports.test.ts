// The import-boundary rule (ui → lib → engine → kernels; protocol beside engine, never
// imported by it; nothing imports ui; no circles) holds for the tree, and the checker does
// catch each wrong-way import and each circle (fixture trees).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
// @ts-expect-error plain ESM script without types
import { checkImports } from './check-imports.mjs';

test('no import crosses a package boundary the wrong way, and no module imports itself round a circle', () => {
  expect(checkImports()).toEqual([]);
});

interface FixtureTree {
  write(rel: string, text: string): void;
  check(): string[];
}

/** A test on a fixture tree in a temp dir (write files, then check() it), removed afterwards. */
function onTree(body: (t: FixtureTree) => void): () => void {
  return () => {
    const dir = mkdtempSync(join(tmpdir(), 'duet-imports-'));
    try {
      body({
        write: (rel, text) => {
          mkdirSync(join(dir, rel, '..'), { recursive: true });
          writeFileSync(join(dir, rel), text);
        },
        check: () => checkImports(dir),
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('the checker fails an engine file that imports the protocol', onTree((t) => {
  t.write('src/protocol/messages.ts', 'export type Msg = { type: string };\n');
  t.write('src/engine/speculative.ts', 'export const s = 1;\n');
  t.write('src/protocol/client.ts', "import { s } from '../engine/speculative.ts';\nexport const c = s;\n");
  expect(t.check()).toEqual([]);
  t.write('src/engine/target-link.ts', "import type { Msg } from '../protocol/messages.ts';\nexport type Link = Msg;\n");
  expect(t.check()).toEqual(['src/engine/target-link.ts: imports ../protocol/messages.ts (src/engine may not import src/protocol)']);
}));

test('the checker fails a two-file circle inside one room', onTree((t) => {
  t.write('src/engine/loader/model.ts', 'export const m = 1;\n');
  t.write('src/engine/loader/gguf.ts', "import { m } from './model.ts';\nexport const g = m;\n");
  expect(t.check()).toEqual([]);
  // the way back is a dynamic import: still a circle
  t.write('src/engine/loader/model.ts', "export const m = 1;\nexport const open = () => import('./gguf.ts');\n");
  expect(t.check()).toEqual(['src/engine/loader/gguf.ts: import cycle src/engine/loader/gguf.ts → src/engine/loader/model.ts → src/engine/loader/gguf.ts']);
}));

test('the checker fails a longer circle, type-only edges included, and names each circle once', onTree((t) => {
  t.write('tools/bench/all.ts', "import { r } from './report.ts';\nexport type Results = { n: number };\nexport const a = r;\n");
  t.write('tools/bench/report.ts', "import { p } from './plots.ts';\nexport const r = p;\n");
  t.write('tools/bench/plots.ts', "import type { Results } from './all.ts';\nexport const p = 1;\nexport type R = Results;\n");
  t.write('server/a.ts', "import { b } from './b.ts';\nexport const a = 1;\nexport const x = b;\n");
  t.write('server/b.ts', "export { a as b } from './a.ts';\n");
  expect(t.check()).toEqual([
    'server/a.ts: import cycle server/a.ts → server/b.ts → server/a.ts',
    'tools/bench/all.ts: import cycle tools/bench/all.ts → tools/bench/report.ts → tools/bench/plots.ts → tools/bench/all.ts',
  ]);
}));

test('a worker spawned by new URL is a separate module graph, not a circle', onTree((t) => {
  t.write('src/lib/engine.ts', "import type { Api } from './worker/entry.ts';\nexport const w = new URL('./worker/entry.ts', import.meta.url);\nexport type A = Api;\n");
  t.write('src/lib/worker/entry.ts', "import { w } from '../engine.ts';\nexport type Api = { w: typeof w };\n");
  // engine.ts → entry.ts (type import) → engine.ts is a circle; the URL alone is not
  expect(t.check()).toHaveLength(1);
  t.write('src/lib/engine.ts', "export const w = new URL('./worker/entry.ts', import.meta.url);\n");
  expect(t.check()).toEqual([]);
}));

test('only the engine check page of the ui reaches into the engine', onTree((t) => {
  t.write('src/engine/reference.ts', 'export const cpu = 1;\n');
  t.write('src/ui/engine-check.ts', "import { cpu } from '../engine/reference.ts';\nexport const e = cpu;\n");
  expect(t.check()).toEqual([]);
  t.write('src/ui/chat.ts', "import { cpu } from '../engine/reference.ts';\nexport const c = cpu;\n");
  expect(t.check()).toEqual(['src/ui/chat.ts: imports ../engine/reference.ts (src/ui may not import src/engine)']);
}));

test('the checker reports a kernel that imports the ui', onTree((t) => {
  t.write('src/ui/app.ts', 'export const x = 1;\n');
  t.write('src/kernels/bad.ts', "import { x } from '../ui/app.ts';\nexport const y = x;\n");
  t.write('src/lib/ok.ts', "import { y } from '../kernels/bad.ts';\nexport const z = y;\n");
  const v = t.check();
  expect(v).toHaveLength(1);
  expect(v[0]).toContain('src/kernels/bad.ts');
}));

test('the checker holds the library room to ui → lib → engine, and engine off protocol', onTree((t) => {
  t.write('src/protocol/client.ts', 'export const c = 1;\n');
  t.write('src/engine/model.ts', 'export const m = 1;\n');
  t.write('src/lib/worker/entry.ts', "import { m } from '../../engine/model.ts';\nimport { c } from '../../protocol/client.ts';\nexport const w = m + c;\n");
  t.write('src/lib/index.ts', "export const l = 1;\nconst u = new URL('./worker/entry.ts', import.meta.url);\n");
  t.write('src/ui/app.ts', "import { l } from '../lib/index.ts';\nexport const a = l;\n");
  expect(t.check()).toEqual([]);
  // each wrong way, one at a time
  t.write('src/engine/bad.ts', "import { c } from '../protocol/client.ts';\nexport const b = c;\n");
  t.write('src/engine/bad2.ts', "import { l } from '../lib/index.ts';\nexport const b = l;\n");
  t.write('src/ui/bad.ts', "import { c } from '../protocol/client.ts';\nexport const b = c;\n");
  t.write('src/lib/bad.ts', "import { a } from '../ui/app.ts';\nexport const b = a;\n");
  expect(t.check().map((line) => line.split(':')[0]).sort()).toEqual(['src/engine/bad.ts', 'src/engine/bad2.ts', 'src/lib/bad.ts', 'src/ui/bad.ts']);
}));
