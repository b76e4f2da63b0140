// Typed errors: every refusal code of the wire protocol (docs/protocol.md
// §10) plus what can go wrong around it in a browser (no WebTransport,
// unreachable or untrusted edge, controller and CORS failures).
//
// One class, `RtnError`, with a string `code` to switch on: the names of
// the wire codes are the protocol's own (`TOKEN_EXPIRED`, `GOING_AWAY`...),
// the SDK's own codes are in lower case words joined by underscores too but
// never collide with them.

/** The wire `ErrorCode` values (common.proto), stable numbers. */
export const ErrorCode = {
  UNSPECIFIED: 0,
  TOKEN_MALFORMED: 1,
  TOKEN_BAD_SIGNATURE: 2,
  TOKEN_EXPIRED: 3,
  TOKEN_UNKNOWN_APP: 4,
  TOKEN_WRONG_CHANNEL: 5,
  NO_PUBLISH_RIGHT: 6,
  NO_SUBSCRIBE_RIGHT: 7,
  MALFORMED_FRAME: 10,
  UNKNOWN_MESSAGE: 11,
  FRAME_TOO_LARGE: 12,
  NOT_JOINED: 13,
  ALREADY_JOINED: 14,
  TOO_MANY_CHANNELS: 15,
  TOO_MANY_TRACKS: 16,
  UNKNOWN_TRACK: 17,
  BAD_SEQUENCE: 18,
  JOIN_TIMEOUT: 19,
  WRONG_ALPN: 20,
  UNAUTHENTICATED_PEER: 21,
  TOO_MANY_STREAMS: 22,
  RATE_LIMITED: 23,
  GOING_AWAY: 30,
  OVERLOADED: 31,
  INTERNAL: 32,
} as const;

export type WireErrorName = keyof typeof ErrorCode;

/** Failures that are not an edge's refusal. */
export type SdkErrorName =
  /** This browser has no WebTransport (or it is disabled). */
  | 'UNSUPPORTED'
  /** No candidate edge could be reached (network, refused, timed out). */
  | 'CONNECT_FAILED'
  /** The edge's certificate was not accepted: a bad `cert_sha256` list, or
   * a certificate the browser does not trust for `server_name`. Browsers do
   * not always tell this apart from CONNECT_FAILED. */
  | 'CERTIFICATE'
  /** The controller answered with an error status or a malformed answer. */
  | 'CONTROLLER'
  /** The controller could not be fetched: network, or the page's origin is
   * not in the controller's CORS allowlist (browsers do not say which). */
  | 'CONTROLLER_UNREACHABLE'
  | 'TIMEOUT'
  /** Media cannot be sent now: the client is between connections. */
  | 'NOT_CONNECTED'
  /** `trySendMessage` found `maxUnacked` messages unacknowledged. */
  | 'BACKPRESSURE'
  /** The client, the channel or the track is closed. */
  | 'CLOSED'
  /** The edge broke the protocol (bad frame, impossible reply). */
  | 'PROTOCOL'
  /** A bad argument or option. */
  | 'INVALID'
  /** End-to-end encryption: see `e2ee` on the error. */
  | 'E2EE';

export type RtnErrorName = WireErrorName | SdkErrorName;

/** End-to-end encryption failures (docs/e2ee.md). */
export type E2eeFailure =
  | { kind: 'unknown-key-id'; keyId: number }
  | { kind: 'rejected'; keyId: number }
  | { kind: 'malformed' }
  | { kind: 'no-send-key' }
  | { kind: 'too-large'; len: number; max: number };

const byNumber = new Map<number, WireErrorName>(
  Object.entries(ErrorCode).map(([k, v]) => [v, k as WireErrorName]),
);

/** The name of a wire code; unknown values are `UNSPECIFIED` (§10). */
export function wireName(code: number): WireErrorName {
  return byNumber.get(code) ?? 'UNSPECIFIED';
}

export class RtnError extends Error {
  override readonly name = 'RtnError';
  /** What went wrong; a wire code name for the edge's refusals. */
  readonly code: RtnErrorName;
  /** The wire number when the edge sent one (Error frame or close code). */
  readonly wireCode: number | undefined;
  /** Set for code `E2EE`. */
  readonly e2ee: E2eeFailure | undefined;

  constructor(code: RtnErrorName, message: string, opts: { wireCode?: number; e2ee?: E2eeFailure; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.wireCode = opts.wireCode;
    this.e2ee = opts.e2ee;
  }

  /** A token refusal (codes 1-5): the app must get a new token. */
  get isTokenRefusal(): boolean {
    return this.wireCode !== undefined && this.wireCode >= 1 && this.wireCode <= 5;
  }

  /** Refusals a reconnect will not fix (token and rights, codes 1-7). */
  get permanent(): boolean {
    return this.wireCode !== undefined && this.wireCode >= 1 && this.wireCode <= 7;
  }
}

/** An edge's `Error{code, message}`, or a WebTransport close code. */
export function fromWire(code: number, message: string): RtnError {
  const name = wireName(code);
  return new RtnError(name, message ? `${name}: ${message}` : name, { wireCode: code });
}

export function e2eeError(f: E2eeFailure): RtnError {
  const text: Record<E2eeFailure['kind'], string> = {
    'unknown-key-id': `sealed with key id ${'keyId' in f ? f.keyId : ''}, which this client does not hold`,
    rejected: `did not authenticate under key id ${'keyId' in f ? f.keyId : ''} (wrong key, or tampered with)`,
    malformed: 'not a sealed payload (sent without end-to-end encryption?)',
    'no-send-key': 'no key to seal with',
    'too-large': 'len' in f ? `a ${f.len}-byte payload exceeds the ${f.max} bytes that fit once sealed` : '',
  };
  return new RtnError('E2EE', `end-to-end encryption: ${text[f.kind]}`, { e2ee: f });
}

export const invalid = (message: string): RtnError => new RtnError('INVALID', message);
export const closedError = (): RtnError => new RtnError('CLOSED', 'closed');
