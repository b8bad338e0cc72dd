// The matmul shader assembly (matmul-wgsl.ts) and the Params uniform packer:
// - the packer writes exactly the WGSL struct of matmul_params.wgsl: same byte size, same
//   field names in the same order, each value at its field's offset;
// - the include rules (one directive, sections, placeholders, include once, typed errors);
// - `duet kernels --dump-wgsl DIR` writes every variant as a complete file: no directive left,
//   the choices its name states, and it compiles (createShaderModule + getCompilationInfo on
//   the test device, SwiftShader in CI; subgroup variants where the device has `subgroups`).
// The kernels' numerics are matmul.test.ts's (f64 oracle); this file checks the text.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../cli/main.ts';
import { type GpuContext, requestDevice } from './gpu.ts';
import { MATMUL_PARAMS_BYTES, MATMUL_PARAM_FIELDS, MatmulShapeError, type MatmulParams, allocateMatrix, chunkParams, packMatmulParams } from './matmul.ts';
import { WgslAssemblyError, allMatmulShaders, assembleWgsl, matmulShaderName, matmulWgsl } from './matmul-wgsl.ts';
import paramsSource from './matmul_params.wgsl?raw';
import { wgslStructBytes, wgslStructFields } from './testing.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

describe('matmul Params packer', () => {
  it('matches the WGSL struct: byte size, field names and order, each field at its offset', () => {
    expect(wgslStructBytes(paramsSource, 'Params')).toBe(MATMUL_PARAMS_BYTES);
    expect(wgslStructFields(paramsSource, 'Params')).toEqual([...MATMUL_PARAM_FIELDS, '_pad']);
    const p = Object.fromEntries(MATMUL_PARAM_FIELDS.map((k, i) => [k, 101 + i])) as unknown as MatmulParams;
    const bytes = packMatmulParams(p);
    expect(bytes.byteLength).toBe(MATMUL_PARAMS_BYTES);
    expect([...new Uint32Array(bytes)]).toEqual([...MATMUL_PARAM_FIELDS.map((_, i) => 101 + i), 0]);
  });

  it('chunkParams: the chunk at row 10 of a 5-row-chunked q4 matrix, m = 3', () => {
    const gw = allocateMatrix(ctx, 20, 40, 'q4', 'w', { maxChunkBytes: 5 * 12 * 4 });
    const c = gw.chunks[2]; // q4, 40 cols: 64 padded → 8 value words + 1 scale word → 12 words per row
    expect(c.rowStart).toBe(10);
    expect(chunkParams(gw, c, 3, 7, 44, 2, 21)).toEqual({
      rows: 5, cols: 40, rowWords: 12, scaleOffset: 8, m: 3, xOffset: 7, xStride: 44, outOffset: 12, outStride: 21, fullBlocks: 1, nBlocks: 2,
    });
    gw.destroy();
  });

  it('a value that is not a u32 is a typed error, not a wrapped word', () => {
    const p = Object.fromEntries(MATMUL_PARAM_FIELDS.map((k) => [k, 1])) as unknown as MatmulParams;
    expect(() => packMatmulParams({ ...p, xOffset: -1 })).toThrow(MatmulShapeError);
    expect(() => packMatmulParams({ ...p, m: 1.5 })).toThrow(MatmulShapeError);
    expect(() => packMatmulParams({ ...p, outStride: 2 ** 32 })).toThrow(MatmulShapeError);
  });
});

describe('WGSL include assembly', () => {
  const files = {
    'k.wgsl': '// kernel\n//#include lib.wgsl:{v}\n//#include whole.wgsl\nfn main() {}\n',
    'lib.wgsl': 'notes, never included\n//#section a\n//#include lib.wgsl:shared\nfn a() {}\n//#section b\n//#include lib.wgsl:shared\n//#include whole.wgsl\nfn b() {}\n//#section shared\nconst S = 1;\n',
    'whole.wgsl': 'const W = 2;\n',
    'bad.wgsl': '//#include lib.wgsl\n',
    'cycle.wgsl': '//#include loop.wgsl:x\n',
    'loop.wgsl': '//#section x\n//#include loop.wgsl:x\n',
    'stray.wgsl': 'fn f(/*#args*/) {}\n',
  };

  it('expands a section chosen by a placeholder, nested includes once each, and drops the notes', () => {
    const a = assembleWgsl(files, 'k.wgsl', { v: 'a' });
    expect(a).toBe('// kernel\n// ---- lib.wgsl:a ----\n// ---- lib.wgsl:shared ----\nconst S = 1;\nfn a() {}\n// ---- whole.wgsl ----\nconst W = 2;\nfn main() {}\n');
    const b = assembleWgsl(files, 'k.wgsl', { v: 'b' });
    expect(b.match(/const W = 2;/g)).toHaveLength(1);
    expect(b).toContain('// ---- whole.wgsl: included above ----');
    expect(b).not.toContain('notes');
    expect(assembleWgsl(files, 'cycle.wgsl')).toBe('// ---- loop.wgsl:x ----\n// ---- loop.wgsl:x: included above ----\n');
  });

  it('mistakes are typed errors naming the file', () => {
    expect(() => assembleWgsl(files, 'k.wgsl', {})).toThrow(/needs \{v\}/);
    expect(() => assembleWgsl(files, 'k.wgsl', { v: 'c' })).toThrow(/lib.wgsl has no section "c"/);
    expect(() => assembleWgsl(files, 'bad.wgsl')).toThrow(/has sections/);
    expect(() => assembleWgsl(files, 'stray.wgsl')).toThrow(WgslAssemblyError);
    expect(() => assembleWgsl(files, 'none.wgsl')).toThrow(WgslAssemblyError);
  });
});

describe('duet kernels --dump-wgsl', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'duet-wgsl-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes every variant as a complete file that compiles', async () => {
    expect(await main(['kernels', '--dump-wgsl', dir])).toBe(0);
    const shaders = allMatmulShaders();
    expect(shaders).toHaveLength(2 * 5 * 4 * 2 + 5 * 4 + 2); // coop/rows × formats × x × core/subgroups, tiled, q8x pair
    expect(readdirSync(dir).sort()).toEqual(shaders.map((s) => `${matmulShaderName(s)}.wgsl`).sort());
    // SwiftShader (the CI adapter) has subgroups: there every file must be compiled.
    if (/swiftshader/i.test(ctx.adapterName)) expect(ctx.hasSubgroups).toBe(true);
    let compiled = 0;
    for (const s of shaders) {
      const name = matmulShaderName(s);
      const code = readFileSync(join(dir, `${name}.wgsl`), 'utf8');
      expect(code.endsWith(matmulWgsl(s)), `${name} is the text createMatmul compiles`).toBe(true);
      expect(code, name).not.toMatch(/\/\/#|\/\*#/);
      if ('format' in s) {
        expect(code.includes('enable subgroups;'), name).toBe(Boolean(s.subgroups));
        expect(code, name).toContain(`// ---- matmul_decode.wgsl:${s.format} ----`);
        expect(code, name).toContain(`// ---- matmul_x.wgsl:${s.x} ----`);
        if (!s.subgroups) expect(code, name).not.toMatch(/subgroup\w*\(/);
        if (!ctx.hasSubgroups && s.subgroups) continue;
      }
      ctx.device.pushErrorScope('validation');
      const module = ctx.device.createShaderModule({ label: name, code });
      const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => `${name}:${m.lineNum}: ${m.message}`);
      const invalid = await ctx.device.popErrorScope();
      expect(errors, name).toEqual([]);
      expect(invalid?.message, name).toBeUndefined();
      compiled++;
    }
    expect(compiled).toBe(ctx.hasSubgroups ? shaders.length : shaders.filter((s) => !('format' in s && s.subgroups)).length);
  });

  it('without arguments prints its usage and fails; unknown options are typed errors', async () => {
    expect(await main(['kernels'])).toBe(2);
    expect(await main(['kernels', '--dump-wgsl'])).toBe(1);
  });
});
