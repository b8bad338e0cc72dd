// WGSL sources are imported as strings (`import src from './x.wgsl?raw'`): Vite does this in
// the browser build and in Vitest; bin/wgsl-loader.mjs does it for the Node CLI.
declare module '*.wgsl?raw' {
  const source: string;
  export default source;
}
