// Typed protocol errors shared by the gateway and the client. Every rejection of bad input
// carries one of these codes on the wire (`error` message), so both ends can react by code
// rather than by parsing text. The table in README.md explains each code.

export const ERROR_CODES = [
  'BAD_FRAME', // not decodable at all: bad JSON, truncated or over-long binary frame
  'UNKNOWN_TYPE', // a well-formed message whose `type` (or binary kind) is not in this protocol
  'BAD_VERSION', // hello with a protocol version this end does not speak
  'BAD_FIELD', // a field missing, of the wrong type, out of its range, or not in the schema
  'TOKEN_OUT_OF_RANGE', // a token id outside [0, vocabSize)
  'BLOCK_TOO_LARGE', // a verify block longer than maxBlock, or a prompt/transcript over the limit
  'NOT_READY', // a message before the hello handshake finished
  'TOKENIZER_MISMATCH', // the draft's tokenizer hash differs from the target's
  'UNAUTHORIZED', // a missing or wrong shared-secret token
  'ORIGIN_REFUSED', // the browser Origin is not on the allowlist
  'UNKNOWN_SESSION', // a session id this connection never opened, or already closed
  'SESSION_EXISTS', // open with a session id that is still open on this connection
  'WRONG_MODE', // reserved, never sent: both modes may verify and generate (mode is for accounting)
  'BAD_SEQ', // a verify sequence number that is not the next one
  'BUSY', // a second verify (or generate) while one is in flight on the session
  'TOO_MANY_SESSIONS', // the gateway, this connection or this client address is at its session cap
  'CONTEXT_FULL', // the session would exceed --max-context
  'RATE_LIMITED', // requests faster than the per-session rate, or frames/errors faster than the per-connection rate
  'VERIFIER_FAILED', // the target backend failed on this session's request
  'SHUTTING_DOWN', // the gateway is stopping; reconnect (to it or another) and resume
  'CONNECTION_LOST', // client side: the socket closed and reconnecting was exhausted or disabled
  'TIMEOUT', // client side: no answer within timeoutMs and no reconnect left to try
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * Whether the gateway closes the connection after sending each code: `fatal` is the rule,
 * `except` names the case that goes the other way; null = never sent by the gateway (raised by
 * the client, or reserved). The gateway builds its errors from this table, README.md's error
 * table states it in words, and protocol-readme.test.ts checks the three agree.
 */
export const FATALITY: Record<ErrorCode, { fatal: boolean | null; except?: string }> = {
  BAD_FRAME: { fatal: false },
  UNKNOWN_TYPE: { fatal: false },
  BAD_VERSION: { fatal: true, except: 'a binary verify frame of another version' },
  BAD_FIELD: { fatal: false },
  TOKEN_OUT_OF_RANGE: { fatal: false },
  BLOCK_TOO_LARGE: { fatal: false },
  NOT_READY: { fatal: false, except: 'the hello timeout expired' },
  TOKENIZER_MISMATCH: { fatal: true },
  UNAUTHORIZED: { fatal: true },
  ORIGIN_REFUSED: { fatal: null },
  UNKNOWN_SESSION: { fatal: false },
  SESSION_EXISTS: { fatal: false },
  WRONG_MODE: { fatal: null },
  BAD_SEQ: { fatal: false },
  BUSY: { fatal: false },
  TOO_MANY_SESSIONS: { fatal: false },
  CONTEXT_FULL: { fatal: false },
  RATE_LIMITED: { fatal: false, except: 'a client over twice its frame or error rate' },
  VERIFIER_FAILED: { fatal: false },
  SHUTTING_DOWN: { fatal: true },
  CONNECTION_LOST: { fatal: null },
  TIMEOUT: { fatal: null },
};

const HINTS: Partial<Record<ErrorCode, string>> = {
  BAD_VERSION: 'update the client and the gateway to the same duet version',
  TOKENIZER_MISMATCH: 'pick a draft model that shares the target model\'s tokenizer (see /api/info)',
  UNAUTHORIZED: 'pass the gateway\'s --token secret on the WebSocket URL (?token=...) or as Authorization: Bearer ...',
  ORIGIN_REFUSED: 'add this page\'s origin to the gateway\'s --allow-origin list',
  TOO_MANY_SESSIONS: 'close a session or retry later; the operator can raise --max-sessions / --max-sessions-per-address',
  CONTEXT_FULL: 'start a new session with a shorter prompt or raise --max-context',
  RATE_LIMITED: 'slow down: requests are limited per session, frames and errors per connection',
  SHUTTING_DOWN: 'reconnect and reopen the session with its transcript (resume)',
  CONNECTION_LOST: 'check that the gateway is running and reachable, then retry',
};

/** What to do next for a code, for messages shown to people. */
export function hintFor(code: ErrorCode): string | undefined {
  return HINTS[code];
}

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === 'string' && (ERROR_CODES as readonly string[]).includes(x);
}

export class ProtocolError extends Error {
  override name = 'ProtocolError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Fatal: the connection is closed after this error (otherwise only the request failed). */
    readonly fatal = false,
    readonly session?: number,
    readonly seq?: number,
  ) {
    super(message);
  }
}
