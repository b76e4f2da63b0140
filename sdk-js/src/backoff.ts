// Jittered exponential backoff between failed reconnect rounds.

export interface Backoff {
  initialMs: number;
  maxMs: number;
  /** 0 = none, 1 = up to +100% of the delay. */
  jitter: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 50, maxMs: 2_000, jitter: 1 };

/** The delay after `failures` failed rounds of this outage, `sample`
 * uniform in [0, 1): min(initial * 2^failures, max) plus sample * jitter
 * times that. */
export function backoffDelay(b: Backoff, failures: number, sample: number): number {
  const base = Math.min(b.initialMs * 2 ** Math.min(failures, 31), b.maxMs);
  return base + base * Math.max(0, Math.min(1, sample) * b.jitter);
}
