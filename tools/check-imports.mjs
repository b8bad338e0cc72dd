#!/usr/bin/env node
// Import-boundary check: ui → engine → kernels; protocol is shared by browser and server;
// server → engine/protocol; nothing imports ui. Test files may also import tools/ fixtures. Prints each violation; exits 1 if any.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Which top-level areas each area may import from (besides itself and npm packages). */
const allowed = {
  'src/kernels': [],
  'src/engine': ['src/kernels', 'src/protocol'],
  'src/protocol': ['src/engine'],
  'src/ui': ['src/engine', 'src/protocol', 'src/kernels'],
  'src/cli': ['src/engine', 'src/kernels', 'src/protocol', 'server', 'tools'],
  server: ['src/engine', 'src/protocol', 'src/kernels'],
  tools: ['src/engine', 'src/kernels', 'src/protocol', 'server', 'src/cli'],
  e2e: ['src/engine', 'src/protocol', 'src/kernels'],
};

/** Tests may also use fixture generators (tools/) and drive the CLI; shipped code may not. */
const testExtras = ['tools', 'src/cli'];
const isTest = (rel) => /\.test\.ts$/.test(rel);

function areaOf(rel) {
  for (const a of Object.keys(allowed)) if (rel === a || rel.startsWith(a + '/')) return a;
  return null;
}

function* walk(dir) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* walk(p);
    else if (/\.(ts|mts|js|mjs)$/.test(name)) yield p;
  }
}

export function checkImports(base = root) {
  const violations = [];
  for (const top of ['src', 'server', 'tools', 'e2e']) {
    let files;
    try {
      files = [...walk(join(base, top))];
    } catch {
      continue;
    }
    for (const file of files) {
      const rel = relative(base, file);
      const from = areaOf(rel);
      if (!from) continue;
      const text = readFileSync(file, 'utf8');
      const re = /(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|new URL\(\s*['"]([^'"]+)['"]/g;
      for (const m of text.matchAll(re)) {
        const spec = m[1] ?? m[2] ?? m[3];
        if (!spec.startsWith('.')) continue;
        const target = relative(base, resolve(dirname(file), spec.replace(/\?.*$/, '')));
        const to = areaOf(target);
        if (!to || to === from) continue;
        if (!allowed[from].includes(to) && !(isTest(rel) && testExtras.includes(to))) violations.push(`${rel}: imports ${spec} (${from} may not import ${to})`);
      }
    }
  }
  return violations;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const v = checkImports();
  for (const line of v) console.error(line);
  console.log(v.length ? `${v.length} import-boundary violation(s)` : 'import boundaries ok');
  process.exitCode = v.length ? 1 : 0;
}
