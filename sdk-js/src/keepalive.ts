// When the periodic keepalive may be skipped (as the Rust SDK's
// `watchdog::keepalive_due`).
//
// The client sends a keepalive every `keepaliveIntervalMs` and the edge
// answers each: about 45 µs of the edge's CPU apiece, so at one per 150 ms
// they alone take 0.3 of a core per 1,000 sessions (docs/benchmarks.md,
// "Footprint"). Media arriving proves the edge alive as well as an answer
// does (protocol §4.1), so while it arrives the keepalive goes once a
// second (keeping the round-trip figures fresh), but only on a fast path:
// when media stops, the next tick asks within two intervals and the answer
// takes a round trip, which must fit the liveness timeout with room to
// spare. On a slow path the answers already in flight are what keeps the
// link alive across such a pause, so every tick sends one, as before.

/** While media arrives on a fast path, the periodic keepalive goes at most
 * this often. */
export const KEEPALIVE_WHILE_MEDIA_MS = 1_000;

/** Whether the periodic keepalive is due at `now` (ms, one clock): always,
 * unless media arrived within the last interval on a path whose round trip
 * (`rttMs`; undefined: not measured yet) is short enough; then once per
 * `KEEPALIVE_WHILE_MEDIA_MS` since the last one (`lastSent`). */
export function keepaliveDue(
  now: number,
  lastMedia: number,
  lastSent: number,
  rttMs: number | undefined,
  intervalMs: number,
  livenessMs: number,
): boolean {
  const mediaFlowing = now - lastMedia < intervalMs;
  const fastPath = rttMs !== undefined && 2 * intervalMs + 2 * rttMs <= livenessMs;
  return !(mediaFlowing && fastPath) || now - lastSent >= KEEPALIVE_WHILE_MEDIA_MS;
}
