// The one accumulator of speculative decoding's counts: tokens, target passes, verify rounds,
// drafted and accepted tokens, k, and times, summed over the rounds of one run (the controller)
// or over many runs and sessions (the benchmarks), with the ratios every report derives from
// them. (src/engine/stats.ts is the chi-square test, not this.)

/** Counts one run (or a batch of runs) adds to a tally; missing fields add 0. */
export interface TallyCounts {
  tokens?: number;
  targetPasses?: number;
  rounds?: number;
  drafted?: number;
  accepted?: number;
  /** k summed over verify rounds (k = 0 stretches add nothing). */
  kSum?: number;
  wallMs?: number;
  /** Draft forward time and the drafted tokens it is spread over. */
  draftMs?: number;
  draftTokens?: number;
  /** Target forward time summed over verify rounds. */
  verifyMs?: number;
}

export class SpecTally {
  tokens = 0;
  targetPasses = 0;
  rounds = 0;
  drafted = 0;
  accepted = 0;
  kSum = 0;
  wallMs = 0;
  draftMs = 0;
  draftTokens = 0;
  verifyMs = 0;

  /** One verify round: k drafted tokens, `accepted` of them standing, verifyMs of target time. */
  round(k: number, accepted: number, verifyMs = 0): void {
    this.rounds++;
    this.drafted += k;
    this.accepted += accepted;
    this.kSum += k;
    this.verifyMs += verifyMs;
  }

  add(c: TallyCounts): void {
    this.tokens += c.tokens ?? 0;
    this.targetPasses += c.targetPasses ?? 0;
    this.rounds += c.rounds ?? 0;
    this.drafted += c.drafted ?? 0;
    this.accepted += c.accepted ?? 0;
    this.kSum += c.kSum ?? 0;
    this.wallMs += c.wallMs ?? 0;
    this.draftMs += c.draftMs ?? 0;
    this.draftTokens += c.draftTokens ?? 0;
    this.verifyMs += c.verifyMs ?? 0;
  }

  /** Accepted / drafted draft tokens (0 when nothing was drafted). */
  get acceptanceRate(): number {
    return this.drafted ? this.accepted / this.drafted : 0;
  }

  get meanAcceptedPerRound(): number {
    return this.rounds ? this.accepted / this.rounds : 0;
  }

  /** Generated tokens per target pass (prefill included, so target-only decoding gives 1). */
  get tokensPerTargetPass(): number {
    return this.targetPasses ? this.tokens / this.targetPasses : 0;
  }

  /** Mean k over verify rounds. */
  get meanKPerRound(): number {
    return this.rounds ? this.kSum / this.rounds : 0;
  }

  get verifyMsPerPass(): number {
    return this.rounds ? this.verifyMs / this.rounds : 0;
  }

  get draftMsPerToken(): number {
    return this.draftTokens ? this.draftMs / this.draftTokens : 0;
  }

  get tokPerSec(): number {
    return this.wallMs > 0 ? (this.tokens * 1000) / this.wallMs : 0;
  }
}
