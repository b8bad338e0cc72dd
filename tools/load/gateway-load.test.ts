// The load test, short: a `duet serve` child process, 4 churning sessions for 3 s while 8
// never-reading connections (another client address, their own process) flood pings. No
// session error, the probe client never locked out, the gateway's send queues inside the
// memory budget and its RSS bounded. The full run (64 sessions × 60 s) is the CLI's.
import { describe, expect, it } from 'vitest';
import { runLoad } from './gateway-load.ts';

describe('gateway load (short)', () => {
  it('4 sessions × 3 s with 8 flooders: 0 errors, probe gets through, queues within budget', async () => {
    const r = await runLoad({ sessions: 4, seconds: 3, flood: 8, memoryBudgetMb: 8 });
    expect(r.errorSamples).toEqual([]);
    expect(r.errors).toBe(0);
    expect(r.requests).toBeGreaterThan(8);
    expect(r.probeMs.failures).toBe(0);
    expect(r.probeMs.n).toBeGreaterThan(0);
    expect(r.probeMs.max).toBeLessThan(5000);
    expect(r.peakQueuedBytes).toBeLessThanOrEqual(r.memoryBudgetBytes);
    expect(r.rssMb.peak - r.rssMb.start).toBeLessThan(200);
    // the profile is read from the gateway's /metrics: every open it counted, and its passes
    expect(r.profile.passes).toBeGreaterThan(0);
    expect(r.profile.gatewayOpenMeanMs).toBeGreaterThanOrEqual(0);
    expect(r.openMs.p95).toBeLessThanOrEqual(r.openMs.p99);
  });
});
