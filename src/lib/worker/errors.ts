// Errors in the worker: anything thrown by the loader, the engine, the protocol client or the
// controller becomes a DuetErrorInfo (code, message, what to do). It crosses comlink as the
// JSON message of a plain Error (comlink keeps only name and message); the main thread turns
// it back into a DuetError (src/lib/errors.ts).

import type { DuetErrorCode, DuetErrorInfo } from '../types.ts';
import { ProtocolError } from '../../protocol/errors.ts';

/** A failure the worker already explained; its message is the JSON of `info`. */
export class WorkerFailure extends Error {
  constructor(readonly info: DuetErrorInfo) {
    super(JSON.stringify(info));
  }
}

export function fail(code: DuetErrorCode, message: string, hint: string): never {
  throw new WorkerFailure({ code, message, hint });
}

export function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name && err.name !== 'Error' ? `${err.name}: ` : ''}${err.message}` : String(err);
}

/**
 * Map anything thrown while loading, connecting or running to what the user is shown.
 * The protocol client wraps every transport failure (refused socket, drop, timeout) in a
 * ProtocolError, so those codes are the whole list of gateway failures.
 */
export function toErrorInfo(err: unknown, gatewayUrl: string): DuetErrorInfo {
  if (err instanceof WorkerFailure) return err.info;
  if (err instanceof ProtocolError) {
    switch (err.code) {
      case 'TOKENIZER_MISMATCH':
        return { code: 'tokenizer-mismatch', message: `The gateway's target model uses a different tokenizer than the draft (${err.message}).`, hint: 'Choose a draft made for the same tokenizer as the target (Models view), or start the gateway with a matching target.' };
      case 'UNAUTHORIZED':
        return { code: 'auth-refused', message: `The gateway at ${gatewayUrl} refused the access token.`, hint: 'Enter the token the gateway was started with (--token) in the Models view and connect again.' };
      case 'ORIGIN_REFUSED':
        return { code: 'auth-refused', message: `The gateway at ${gatewayUrl} does not accept connections from this page's origin (${self.location.origin}).`, hint: 'Start the gateway with --allow-origin for this origin, or open the app from the gateway itself.' };
      case 'CONNECTION_LOST':
      case 'TIMEOUT':
      case 'SHUTTING_DOWN':
        // worded for both a gateway never reached and one lost mid-run: the client's message says which
        return { code: 'gateway-unreachable', message: `No connection to the gateway at ${gatewayUrl} (${err.message}).`, hint: 'Check that `duet serve` is running, then retry.' };
      default:
        return { code: 'internal', message: `The gateway answered ${err.code}: ${err.message}`, hint: 'Retry; if it keeps happening, see the gateway log.' };
    }
  }
  return { code: 'internal', message: errorText(err), hint: 'Retry; if it keeps happening, reload the page.' };
}
