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
  'WRONG_MODE', // verify on a baseline session, or generate on a speculative one
  'BAD_SEQ', // a verify sequence number that is not the next one
  'BUSY', // a second verify (or generate) while one is in flight on the session
  'TOO_MANY_SESSIONS', // the gateway is at --max-sessions
  'CONTEXT_FULL', // the session would exceed --max-context
  'RATE_LIMITED', // the session sends faster than the per-session rate limit
  'VERIFIER_FAILED', // the target backend failed on this session's request
  'SHUTTING_DOWN', // the gateway is stopping; reconnect (to it or another) and resume
  'CONNECTION_LOST', // client side: the socket closed and reconnecting was exhausted or disabled
  'TIMEOUT', // client side: no answer within timeoutMs and no reconnect left to try
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const HINTS: Partial<Record<ErrorCode, string>> = {
  BAD_VERSION: 'update the client and the gateway to the same duet version',
  TOKENIZER_MISMATCH: 'pick a draft model that shares the target model\'s tokenizer (see /api/info)',
  UNAUTHORIZED: 'pass the gateway\'s --token secret as ?token=... or in hello',
  ORIGIN_REFUSED: 'add this page\'s origin to the gateway\'s --allow-origin list',
  TOO_MANY_SESSIONS: 'retry later or raise --max-sessions',
  CONTEXT_FULL: 'start a new session with a shorter prompt or raise --max-context',
  RATE_LIMITED: 'slow down; the limit is per session',
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
