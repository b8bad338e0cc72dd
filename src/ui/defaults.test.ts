// The app's sampling defaults are the ones tools/train/report.py measured on the bundled pair
// (chat_defaults in public/models/report.json): they cannot drift apart silently.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_SETTINGS } from './state.ts';

const root = join(import.meta.dirname, '../..');

describe('the app defaults are the measured ones', () => {
  it('chat sampling defaults equal report.json chat_defaults (chosen by measuring held-out replies)', async () => {
    const report = JSON.parse(readFileSync(join(root, 'public/models/report.json'), 'utf8')) as {
      chat_defaults: { temperature: number; top_p: number; chosen: { max_newline_run: number; min_distinct2: number } };
    };
    expect(DEFAULT_SETTINGS.temperature).toBe(report.chat_defaults.temperature);
    expect(DEFAULT_SETTINGS.topP).toBe(report.chat_defaults.top_p);
    // the measured setting meets the readability rule it was chosen by: every reply, not the mean
    expect(report.chat_defaults.chosen.max_newline_run).toBeLessThanOrEqual(3);
    expect(report.chat_defaults.chosen.min_distinct2).toBeGreaterThanOrEqual(0.7);
  });
});
