// Node module hook: `import x from './k.wgsl?raw'` yields the file's text, as Vite does.
import { readFile } from 'node:fs/promises';

export async function load(url, context, nextLoad) {
  if (url.startsWith('file:') && /\.wgsl(\?raw)?$/.test(url)) {
    const path = new URL(url.replace(/\?raw$/, ''));
    const source = await readFile(path, 'utf8');
    return { format: 'module', source: `export default ${JSON.stringify(source)};`, shortCircuit: true };
  }
  return nextLoad(url, context);
}
