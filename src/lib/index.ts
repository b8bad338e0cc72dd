// duet's browser library (`import { createDuet } from 'duet'`): a draft model in a Web Worker,
// verified by a duet gateway, behind OpenAI's chat completions interface. See the README's
// "Use it in your app" and src/lib/types.ts for every field.

export { createDuet, CreateWebWorkerDuetEngine, DuetEngine } from './engine.ts';
export type { Completions, CreateDuetOptions, LoadOptions } from './engine.ts';
export { DuetError } from './errors.ts';
export type * from './types.ts';
