// A terminal progress bar for model loads (cli-progress): bytes read, rate and ETA, fed by the
// loader's own progress events (src/engine/loader/source.ts ProgressTracker). It draws only on
// a TTY and never under --json, so piped and machine-readable output stay clean. It lives in
// server/ so `duet serve` and the src/cli commands share it (src/cli may import server/, not
// the other way round).

import cliProgress from 'cli-progress';
import type { LoadProgress, ProgressFn } from '../src/engine/loader/source.ts';

export interface LoadBar {
  /** Pass to the loader's `onProgress`; undefined when the bar is off. */
  onProgress: ProgressFn | undefined;
  /** Finish the line (call in finally: a failed load must not leave the cursor mid-bar). */
  stop(): void;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${UNITS[i]}`;
}

export function formatEta(sec: number): string {
  if (!Number.isFinite(sec)) return '?';
  const s = Math.round(sec);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** The text after the bar, e.g. "12.0 MiB / 48.0 MiB | 6.0 MiB/s | ETA 6s". */
export function progressText(p: LoadProgress): string {
  return `${formatBytes(p.loadedBytes)} / ${formatBytes(p.totalBytes)} | ${formatBytes(p.bytesPerSec)}/s | ETA ${formatEta(p.etaSec)}`;
}

/**
 * A bar on `stream` (default stderr) while `label` loads; off when `quiet` (--json) or when the
 * stream is not a TTY.
 */
export function loadBar(label: string, { quiet = false, stream = process.stderr }: { quiet?: boolean; stream?: NodeJS.WriteStream } = {}): LoadBar {
  if (quiet || !stream.isTTY) return { onProgress: undefined, stop() {} };
  const bar = new cliProgress.SingleBar({
    format: `loading ${label} [{bar}] {percentage}% | {detail}`,
    stream, hideCursor: true, clearOnComplete: false, barsize: 30, fps: 10,
  }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    onProgress(p) {
      const total = Number.isFinite(p.totalBytes) && p.totalBytes > 0 ? p.totalBytes : Math.max(1, p.loadedBytes);
      if (!started) {
        bar.start(total, p.loadedBytes, { detail: progressText(p) });
        started = true;
      } else {
        bar.setTotal(total);
        bar.update(p.loadedBytes, { detail: progressText(p) });
      }
    },
    stop() {
      if (started) bar.stop();
      started = false;
    },
  };
}

/** Run a load with a bar for it (see loadBar), stopping the bar however the load ends. */
export async function withLoadBar<T>(label: string, quiet: boolean, load: (onProgress: ProgressFn | undefined) => Promise<T>): Promise<T> {
  const bar = loadBar(label, { quiet });
  try {
    return await load(bar.onProgress);
  } finally {
    bar.stop();
  }
}
