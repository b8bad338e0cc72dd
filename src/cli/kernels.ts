// `duet kernels --dump-wgsl DIR`: write every assembled matmul shader variant (see
// src/kernels/matmul-wgsl.ts) as a complete .wgsl file, so a reader or a shader debugger sees
// the real text the GPU compiles. Overrides (WG, ROWS, ACCUMULATE, XUP) keep their defaults
// in the files; createMatmul sets them per pipeline.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allMatmulShaders, matmulShaderName, matmulWgsl } from '../kernels/matmul-wgsl.ts';

export class KernelsUsageError extends Error {
  override name = 'KernelsUsageError';
}

const USAGE = `usage: duet kernels --dump-wgsl DIR
  --dump-wgsl DIR   write every assembled matmul shader variant to DIR/<variant>.wgsl (DIR is created)`;

/** Write every variant to dir; returns the paths written. */
export function dumpMatmulWgsl(dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  return allMatmulShaders().map((s) => {
    const name = matmulShaderName(s);
    const path = join(dir, `${name}.wgsl`);
    const note = `// ${name}: assembled by src/kernels/matmul-wgsl.ts (duet kernels --dump-wgsl); edit the sources in src/kernels/, not this file.\n`;
    writeFileSync(path, note + matmulWgsl(s));
    return path;
  });
}

export async function run(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h') {
    console.log(USAGE);
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] !== '--dump-wgsl' || argv.length !== 2) throw new KernelsUsageError(`unexpected arguments "${argv.join(' ')}"\n${USAGE}`);
  const paths = dumpMatmulWgsl(argv[1]);
  console.error(`duet kernels: wrote ${paths.length} matmul shader variants to ${argv[1]}`);
  return 0;
}
