// The library's typed error: every rejection of a DuetEngine call and every failed stream
// throws a DuetError with a code to branch on and a hint to show.

import type { DuetErrorCode, DuetErrorInfo } from './types.ts';

export class DuetError extends Error implements DuetErrorInfo {
  override name = 'DuetError';
  readonly code: DuetErrorCode;
  readonly hint: string;

  constructor(info: DuetErrorInfo) {
    super(info.message);
    this.code = info.code;
    this.hint = info.hint;
  }

  /**
   * What the worker threw, as a DuetError: its failures carry a JSON DuetErrorInfo as the
   * message (comlink keeps only name and message of an Error); anything else is 'internal'.
   */
  static from(err: unknown): DuetError {
    if (err instanceof DuetError) return err;
    const message = err instanceof Error ? err.message : String(err);
    let parsed: unknown;
    try {
      parsed = JSON.parse(message);
    } catch {
      parsed = null; // a plain message: not one of the worker's explained failures
    }
    if (isInfo(parsed)) return new DuetError(parsed);
    return new DuetError({ code: 'internal', message, hint: 'Reload the page; if it persists, see the browser console.' });
  }

  toJSON(): DuetErrorInfo {
    return { code: this.code, message: this.message, hint: this.hint };
  }
}

function isInfo(v: unknown): v is DuetErrorInfo {
  return typeof v === 'object' && v !== null && typeof (v as DuetErrorInfo).code === 'string' && typeof (v as DuetErrorInfo).message === 'string' && typeof (v as DuetErrorInfo).hint === 'string';
}
