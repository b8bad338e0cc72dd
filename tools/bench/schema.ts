// The shape of `duet bench all`'s results.json: what all.ts writes and report.ts renders, in
// a module of its own so that both import it and neither imports the other.

export const SECTIONS = ['kernels', 'spec', 'capacity', 'sidecar', 'verify', 'loadtime'] as const;
export type SectionName = (typeof SECTIONS)[number];

export type Section<T = unknown> =
  | { status: 'ok'; wallMs: number; data: T }
  | { status: 'error'; wallMs: number; error: string }
  | { status: 'skipped'; reason: string };

export interface Machine {
  cpu: string;
  cores: number;
  memBytes: number;
  node: string;
  platform: string;
  /** 1-minute load average at start and end: other work on the box skews every number. */
  loadavgStart: number;
  loadavgEnd: number;
  commit: string | null;
  /** sha256 (12 hex) of the bundled pair's weights at start and end: a pair replaced mid-run mixes two models. */
  models: { start: Record<string, string>; end: Record<string, string> };
}

export interface AllResults {
  schema: 'duet-bench-all/1';
  date: string;
  quick: boolean;
  machine: Machine;
  /** What ran each part: the WebGPU adapter (kernels), the backends of spec/capacity, the browser's adapter. */
  adapters: { webgpu: string | null; spec: string; capacity: string; browser: string | null };
  config: { rttMs: number[]; sessions: number[]; capacitySeconds: number; capacityMaxTokens: number };
  sections: Record<SectionName, Section>;
  unhandledRejections: string[];
  wallMs: number;
}
