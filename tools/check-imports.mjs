#!/usr/bin/env node
// Import-boundary check: ui → lib (the library and its worker) → engine → kernels; protocol
// beside engine (it may use engine types; engine never imports protocol); server →
// engine/protocol; nothing imports ui, and only the ui and e2e import lib. Test files may also
// import tools/ fixtures. And no module imports itself round a circle, at any length, type-only
// and dynamic imports included (a worker spawned by `new URL(...)` is a separate module graph,
// so it is no edge). Prints each violation; exits 1 if any.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Which top-level areas each area may import from (besides itself and npm packages). */
const allowed = {
  'src/kernels': [],
  'src/engine': ['src/kernels'],
  'src/protocol': ['src/engine'],
  'src/lib': ['src/engine', 'src/protocol', 'src/kernels'],
  'src/ui': ['src/lib'],
  'src/cli': ['src/engine', 'src/kernels', 'src/protocol', 'server', 'tools'],
  server: ['src/engine', 'src/protocol', 'src/kernels'],
  tools: ['src/engine', 'src/kernels', 'src/protocol', 'server', 'src/cli'],
  e2e: ['src/lib', 'src/engine', 'src/protocol', 'src/kernels'],
};

/**
 * Single files allowed one more area. The engine check page runs the CPU reference in the page,
 * beside the worker's GPU, so it alone in the ui reaches into the engine.
 */
const fileExtras = { 'src/ui/engine-check.ts': ['src/engine'] };

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

/** import/export … from, import(…), side-effect import, and new URL(…) (a worker or asset). */
const IMPORT_RE = /(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|import\s*['"]([^'"]+)['"]|new URL\(\s*['"]([^'"]+)['"]/g;

/** Every relative import of every file: { rel, spec, target, isUrl }. */
function* importsOf(base, files) {
  for (const file of files) {
    const rel = relative(base, file);
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2] ?? m[3] ?? m[4];
      if (!spec.startsWith('.')) continue;
      yield { rel, spec, target: relative(base, resolve(dirname(file), spec.replace(/\?.*$/, ''))), isUrl: m[4] !== undefined };
    }
  }
}

/**
 * One circle per strongly connected component of the module graph (Tarjan), each written as
 * the shortest path from the component's first file back to itself.
 */
export function findCycles(graph) {
  const index = new Map();
  const low = new Map();
  const stack = [];
  const onStack = new Set();
  const components = [];
  let next = 0;
  const visit = (v) => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
    }
    if (low.get(v) === index.get(v)) {
      const c = [];
      let w;
      do {
        w = stack.pop();
        onStack.delete(w);
        c.push(w);
      } while (w !== v);
      if (c.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(c.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return components.map((c) => {
    const inC = new Set(c);
    const start = c[0];
    const prev = new Map();
    const queue = [start];
    for (let i = 0; i < queue.length; i++) {
      const v = queue[i];
      for (const w of graph.get(v) ?? []) {
        if (!inC.has(w)) continue;
        if (w === start) {
          const path = [start];
          for (let u = v; u !== start; u = prev.get(u)) path.splice(1, 0, u);
          return [...path, start];
        }
        if (!prev.has(w)) {
          prev.set(w, v);
          queue.push(w);
        }
      }
    }
    return [...c, start];
  });
}

export function checkImports(base = root) {
  const violations = [];
  const files = [];
  for (const top of ['src', 'server', 'tools', 'e2e']) {
    try {
      files.push(...walk(join(base, top)));
    } catch {
      continue;
    }
  }
  const known = new Set(files.map((f) => relative(base, f)));
  const graph = new Map([...known].map((f) => [f, []]));
  for (const { rel, spec, target, isUrl } of importsOf(base, files)) {
    if (!isUrl && known.has(target) && !graph.get(rel).includes(target)) graph.get(rel).push(target);
    const from = areaOf(rel);
    const to = areaOf(target);
    if (!from || !to || to === from) continue;
    const ok = allowed[from].includes(to) || fileExtras[rel]?.includes(to) || (isTest(rel) && testExtras.includes(to));
    if (!ok) violations.push(`${rel}: imports ${spec} (${from} may not import ${to})`);
  }
  for (const cycle of findCycles(graph)) violations.push(`${cycle[0]}: import cycle ${cycle.join(' → ')}`);
  return violations;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const v = checkImports();
  for (const line of v) console.error(line);
  console.log(v.length ? `${v.length} import-boundary violation(s)` : 'import boundaries ok');
  process.exitCode = v.length ? 1 : 0;
}
