// Media that arrives too late to be played is dropped before the app sees
// it (after an outage, packets queued on the way arrive seconds late).
// Clocks are not synchronised, so lateness is relative: per track, the
// smallest `arrival - sender timestamp` seen is the baseline (clock offset
// plus the fastest path), and a packet more than the bound above it is late.

export class LatenessGate {
  private minOffsetUs = Infinity;

  /** Whether a packet sent at `sentUs` (sender clock) and received at
   * `nowUs` (ours) is within `boundUs` of the fastest seen. */
  onTime(sentUs: number, nowUs: number, boundUs: number): boolean {
    const offset = nowUs - sentUs;
    this.minOffsetUs = Math.min(this.minOffsetUs, offset);
    return offset - this.minOffsetUs <= boundUs;
  }
}
