// @rtn/sdk: the browser SDK of RTN. See README.md.

export { Client, MOVED_TO_FASTER_EDGE, type ClientOptions, type JoinOptions } from './client';
export { Channel, TrackPublisher } from './channel';
export type { EdgeCandidate, WebTransportCtor } from './connection';
export { ChannelKey, E2eeKeys, MAX_KEYS } from './e2ee';
export { ErrorCode, RtnError, type E2eeFailure, type RtnErrorName, type SdkErrorName, type WireErrorName } from './errors';
export type { EventOf, MediaEvent, MessageEvent, RtnEvent, RtnEventType } from './events';
export { shouldSwitch } from './nearest';
export type { TrackKindName } from './proto';
export type { Stats } from './stats';
export type { Backoff } from './backoff';
