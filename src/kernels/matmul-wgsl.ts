// Assembly of the matmul shaders. Each kernel file (matmul_gemv.wgsl, matmul_gemv_rows.wgsl,
// matmul_tiled.wgsl, matmul_q8x.wgsl, matmul_gemv_q4_q8x.wgsl) names the code it uses with ONE
// directive, on a line of its own:
//
//   //#include FILE            the whole of FILE (a file without sections)
//   //#include FILE:SECTION    one section of FILE; a section runs from its `//#section NAME`
//                             line to the next one (or the end); text before the first
//                             section is that file's notes and is never included
//
// SECTION may hold the variant's choices: {format} (f32 f16 bf16 q8 q4), {x} (scalar vec4 glu
// gluvec4: matmul_x.wgsl) and {sg} (core subgroups: matmul_gemv_subgroups.wgsl). Includes nest
// and each FILE:SECTION is included once per shader (later includes of it are dropped), so a
// section states what it needs (the q4 decoder includes the f16 block scales) without
// duplicating it. Everything else is plain WGSL: the tuning knobs are `override` constants
// (WG, ROWS, ACCUMULATE, XUP) set at pipeline creation. What stays textual is what WGSL
// cannot select with an override: the x binding's type (array<f32> or array<vec4<f32>>),
// `enable subgroups` and the subgroup builtins, and the format's decoder (five different
// bodies of the same functions; overrides would compile all five into every pipeline).
// `duet kernels --dump-wgsl DIR` writes every variant as a complete .wgsl file.

import decodeSrc from './matmul_decode.wgsl?raw';
import gemvSrc from './matmul_gemv.wgsl?raw';
import gemvBlockSrc from './matmul_gemv_block.wgsl?raw';
import gemvQ4Q8xSrc from './matmul_gemv_q4_q8x.wgsl?raw';
import gemvRowsSrc from './matmul_gemv_rows.wgsl?raw';
import gemvSubgroupsSrc from './matmul_gemv_subgroups.wgsl?raw';
import outSrc from './matmul_out.wgsl?raw';
import paramsSrc from './matmul_params.wgsl?raw';
import q8xSrc from './matmul_q8x.wgsl?raw';
import tiledSrc from './matmul_tiled.wgsl?raw';
import xSrc from './matmul_x.wgsl?raw';
import { WEIGHT_FORMATS, type WeightFormat } from './matmul-layout.ts';

export class WgslAssemblyError extends Error {
  override name = 'WgslAssemblyError';
}

/** Every matmul WGSL file by name, as the include lines name them. */
export const MATMUL_WGSL_FILES: Readonly<Record<string, string>> = {
  'matmul_decode.wgsl': decodeSrc,
  'matmul_gemv.wgsl': gemvSrc,
  'matmul_gemv_block.wgsl': gemvBlockSrc,
  'matmul_gemv_q4_q8x.wgsl': gemvQ4Q8xSrc,
  'matmul_gemv_rows.wgsl': gemvRowsSrc,
  'matmul_gemv_subgroups.wgsl': gemvSubgroupsSrc,
  'matmul_out.wgsl': outSrc,
  'matmul_params.wgsl': paramsSrc,
  'matmul_q8x.wgsl': q8xSrc,
  'matmul_tiled.wgsl': tiledSrc,
  'matmul_x.wgsl': xSrc,
};

const INCLUDE = /^\/\/#include ([\w.]+)(?::([\w.{}]+))?[ \t]*$/.source;
const SECTION = /^\/\/#section ([\w.]+)[ \t]*$/m;
/** Any directive-looking text: none may be left in an assembled shader. */
const DIRECTIVE = /\/\/#|\/\*#/;

/** The sections of a file: name → text (the notes before the first section dropped). */
function sections(file: string, src: string): Map<string, string> {
  const parts = src.split(new RegExp(SECTION.source, 'gm'));
  const out = new Map<string, string>();
  for (let i = 1; i < parts.length; i += 2) {
    if (out.has(parts[i])) throw new WgslAssemblyError(`${file}: section "${parts[i]}" appears twice`);
    out.set(parts[i], parts[i + 1]);
  }
  return out;
}

/**
 * Expand the includes of `files[entry]` with the placeholders of `vars`: one complete WGSL
 * module. Each included piece is preceded by a `// ---- FILE:SECTION ----` line.
 */
export function assembleWgsl(files: Readonly<Record<string, string>>, entry: string, vars: Readonly<Record<string, string>> = {}): string {
  const done = new Set<string>();
  const expand = (file: string, text: string): string =>
    text.replace(new RegExp(INCLUDE, 'gm'), (_line, name: string, rawSection: string | undefined) => {
      const section = rawSection?.replace(/\{(\w+)\}/g, (_m, v: string) => {
        const value = vars[v];
        if (value === undefined) throw new WgslAssemblyError(`${file}: "//#include ${name}:${rawSection}" needs {${v}}, which this shader has no value for`);
        return value;
      });
      const key = section === undefined ? name : `${name}:${section}`;
      if (done.has(key)) return `// ---- ${key}: included above ----`;
      const src = files[name];
      if (src === undefined) throw new WgslAssemblyError(`${file}: includes unknown file ${name}`);
      const parts = sections(name, src);
      let body: string | undefined;
      if (section === undefined) {
        if (parts.size) throw new WgslAssemblyError(`${file}: ${name} has sections (${[...parts.keys()].join(', ')}); include one as ${name}:SECTION`);
        body = src;
      } else {
        body = parts.get(section);
        if (body === undefined) throw new WgslAssemblyError(`${file}: ${name} has no section "${section}" (it has ${[...parts.keys()].join(', ') || 'none'})`);
      }
      done.add(key); // before expanding: a piece that includes itself gets the 'included above' line
      return `// ---- ${key} ----\n${expand(name, body).trim()}`;
    });
  const root = files[entry];
  if (root === undefined) throw new WgslAssemblyError(`unknown WGSL file ${entry}`);
  done.add(entry);
  const out = expand(entry, root);
  const line = out.split('\n').find((l) => DIRECTIVE.test(l));
  if (line !== undefined) throw new WgslAssemblyError(`${entry}: assembled shader still holds a directive: ${line.trim()}`);
  return out;
}

/** How a kernel reads x (matmul_x.wgsl): vec4 loads when aligned; glu = silu(gate) · up. */
export type XAccess = 'scalar' | 'vec4' | 'glu' | 'gluvec4';
export const X_ACCESSES: readonly XAccess[] = ['scalar', 'vec4', 'glu', 'gluvec4'];

/** A kernel with format / x / subgroup choices (tiled: no subgroup form). */
export interface MatmulMainShader {
  kernel: 'coop' | 'rows' | 'tiled';
  format: WeightFormat;
  x: XAccess;
  subgroups?: boolean;
}
/** One assembled matmul shader; the two of the q8-activation GEMV have no choices. */
export type MatmulShader = MatmulMainShader | { kernel: 'q8x' | 'gemv_q4_q8x' };

const hasChoices = (s: MatmulShader): s is MatmulMainShader => s.kernel === 'coop' || s.kernel === 'rows' || s.kernel === 'tiled';

const ENTRY: Record<MatmulShader['kernel'], string> = {
  coop: 'matmul_gemv.wgsl',
  rows: 'matmul_gemv_rows.wgsl',
  tiled: 'matmul_tiled.wgsl',
  q8x: 'matmul_q8x.wgsl',
  gemv_q4_q8x: 'matmul_gemv_q4_q8x.wgsl',
};

/** File-name-safe name of a variant: matmul_coop_q4_vec4_subgroups, matmul_q8x, … */
export function matmulShaderName(s: MatmulShader): string {
  if (!hasChoices(s)) return `matmul_${s.kernel}`;
  return `matmul_${s.kernel}_${s.format}_${s.x}_${s.subgroups ? 'subgroups' : 'core'}`;
}

const assembled = new Map<string, string>();

/** The complete WGSL of one variant (memoized). */
export function matmulWgsl(s: MatmulShader): string {
  const name = matmulShaderName(s);
  let code = assembled.get(name);
  if (code === undefined) {
    if (s.kernel === 'tiled' && s.subgroups) throw new WgslAssemblyError('the tiled matmul kernel has no subgroup variant');
    const vars: Record<string, string> = hasChoices(s) ? { format: s.format, x: s.x, sg: s.subgroups ? 'subgroups' : 'core' } : {};
    code = assembleWgsl(MATMUL_WGSL_FILES, ENTRY[s.kernel], vars);
    assembled.set(name, code);
  }
  return code;
}

/** Every variant createMatmul can build. */
export function allMatmulShaders(): MatmulShader[] {
  const out: MatmulShader[] = [];
  for (const format of WEIGHT_FORMATS) {
    for (const x of X_ACCESSES) {
      for (const kernel of ['coop', 'rows'] as const) for (const subgroups of [false, true]) out.push({ kernel, format, x, subgroups });
      out.push({ kernel: 'tiled', format, x, subgroups: false });
    }
  }
  out.push({ kernel: 'q8x' }, { kernel: 'gemv_q4_q8x' });
  return out;
}
