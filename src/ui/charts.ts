// Hand-drawn SVG charts for the side-by-side view: acceptance per round, the histogram of
// accepted lengths, and the per-round timeline of draft / network / verify. Colours are
// written as attributes (not CSS variables) so a chart serialised for the PNG export looks
// the same as on screen.

import { s } from './dom.ts';
import type { RoundTiming } from '../lib/index.ts';

export const COLORS = { draft: '#22a06b', network: '#9aa5b1', verify: '#8a5cd6', correction: '#d9822b', bonus: '#3b6fd8', axis: '#c9d0d8', text: '#5d6672', empty: '#e8ecf0' };

const W = 360;
const H = 170;
const PAD = { l: 38, r: 8, t: 10, b: 24 };

function frame(title: string): SVGElement {
  return s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, xmlns: 'http://www.w3.org/2000/svg', width: W, height: H });
}

function text(x: number, y: number, str: string, anchor = 'middle'): SVGElement {
  return s('text', { x, y, 'text-anchor': anchor, fill: COLORS.text, 'font-size': 10, 'font-family': 'system-ui, sans-serif' }, str);
}

function axes(svg: SVGElement, yMax: number, yLabel: (v: number) => string, integer = false): void {
  const y0 = H - PAD.b;
  svg.append(s('line', { x1: PAD.l, y1: y0, x2: W - PAD.r, y2: y0, stroke: COLORS.axis }));
  // Counts get a middle tick only where it is a whole number.
  for (const f of integer && yMax % 2 !== 0 ? [0, 1] : [0, 0.5, 1]) {
    const y = y0 - f * (y0 - PAD.t);
    svg.append(s('line', { x1: PAD.l, y1: y, x2: W - PAD.r, y2: y, stroke: COLORS.axis, 'stroke-dasharray': f === 0 ? '' : '2 3', 'stroke-width': 0.6 }));
    svg.append(text(PAD.l - 4, y + 3, yLabel(f * yMax), 'end'));
  }
}

function placeholder(svg: SVGElement, msg: string): SVGElement {
  svg.append(text(W / 2, H / 2, msg));
  return svg;
}

/** Bars: accepted / proposed per round (green = accepted share, grey = rejected rest). */
export function acceptanceChart(rounds: RoundTiming[]): SVGElement {
  const svg = frame('Acceptance per round: accepted draft tokens out of drafted');
  axes(svg, 1, (v) => `${Math.round(v * 100)}%`);
  if (rounds.length === 0) return placeholder(svg, 'no rounds yet');
  const y0 = H - PAD.b;
  const span = W - PAD.l - PAD.r;
  const bw = span / rounds.length;
  rounds.forEach((r, i) => {
    const x = PAD.l + i * bw + bw * 0.1;
    const full = y0 - PAD.t;
    const acc = r.k > 0 ? r.accepted / r.k : 0;
    svg.append(s('rect', { x, y: PAD.t, width: Math.max(0.8, bw * 0.8), height: full, fill: COLORS.empty }));
    svg.append(s('rect', { x, y: y0 - acc * full, width: Math.max(0.8, bw * 0.8), height: acc * full, fill: COLORS.draft },
      s('title', {}, `round ${i + 1}: ${r.accepted}/${r.k} accepted`)));
  });
  const step = Math.max(1, Math.ceil(rounds.length / 8));
  for (let i = 0; i < rounds.length; i += step) svg.append(text(PAD.l + (i + 0.5) * bw, H - 8, String(i + 1)));
  return svg;
}

/** Histogram: how many rounds accepted 0, 1, ..., kMax draft tokens. */
export function histogramChart(rounds: RoundTiming[]): SVGElement {
  const svg = frame('Histogram of accepted draft tokens per round');
  const kMax = Math.max(1, ...rounds.map((r) => r.k));
  const counts = new Array<number>(kMax + 1).fill(0);
  for (const r of rounds) counts[r.accepted]++;
  const top = Math.max(1, ...counts);
  axes(svg, top, (v) => String(Math.round(v)), true);
  if (rounds.length === 0) return placeholder(svg, 'no rounds yet');
  const y0 = H - PAD.b;
  const bw = (W - PAD.l - PAD.r) / counts.length;
  counts.forEach((c, n) => {
    const hgt = (c / top) * (y0 - PAD.t);
    const x = PAD.l + n * bw + bw * 0.15;
    svg.append(s('rect', { x, y: y0 - hgt, width: bw * 0.7, height: hgt, fill: n === kMax ? COLORS.bonus : COLORS.draft, rx: 2 },
      s('title', {}, `${c} round(s) accepted ${n}`)));
    svg.append(text(PAD.l + (n + 0.5) * bw, H - 8, String(n)));
  });
  return svg;
}

/** Timeline: one row per round, draft → network → verify, on the run's wall clock. */
export function timelineChart(rounds: RoundTiming[]): SVGElement {
  const rows = Math.max(1, rounds.length);
  const rowH = Math.max(3, Math.min(14, 220 / rows));
  const width = 960;
  const height = Math.max(110, PAD.t + rows * rowH + PAD.b);
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'Timeline of each round: draft, network, verify', xmlns: 'http://www.w3.org/2000/svg', width, height });
  if (rounds.length === 0) {
    svg.append(text(width / 2, height / 2, 'no rounds yet'));
    return svg;
  }
  const end = Math.max(1, ...rounds.map((r) => r.startMs + r.draftMs + r.networkMs + r.verifyMs));
  const x = (ms: number): number => PAD.l + (ms / end) * (width - PAD.l - PAD.r);
  const y0 = height - PAD.b;
  svg.append(s('line', { x1: PAD.l, y1: y0, x2: width - PAD.r, y2: y0, stroke: COLORS.axis }));
  for (const f of [0, 0.25, 0.5, 0.75, 1]) svg.append(text(x(f * end), height - 8, `${Math.round(f * end)} ms`, f === 0 ? 'start' : f === 1 ? 'end' : 'middle'));
  // Before round 1: the target's prefill of the prompt and its first token.
  const open = rounds[0].startMs;
  if (open > 0) {
    svg.append(s('rect', { x: x(0), y: PAD.t, width: x(open) - x(0), height: rowH * 0.8, fill: 'none', stroke: COLORS.network, 'stroke-dasharray': '3 2' },
      s('title', {}, `prefill + first token: ${open.toFixed(0)} ms`)));
    if (x(open) - x(0) > 90) svg.append(text((x(0) + x(open)) / 2, PAD.t + rowH * 0.8 + 11, 'prefill + first token'));
  }
  rounds.forEach((r, i) => {
    const y = PAD.t + i * rowH;
    let t = r.startMs;
    for (const [part, ms] of [['draft', r.draftMs], ['network', r.networkMs], ['verify', r.verifyMs]] as const) {
      if (ms > 0) {
        svg.append(s('rect', { x: x(t), y, width: Math.max(0.6, x(t + ms) - x(t)), height: rowH * 0.8, fill: COLORS[part] },
          s('title', {}, `round ${i + 1} ${part}: ${ms.toFixed(1)} ms`)));
      }
      t += ms;
    }
  });
  svg.append(text(PAD.l - 4, PAD.t + rowH * 0.7, '1', 'end'));
  svg.append(text(PAD.l - 4, PAD.t + (rounds.length - 0.3) * rowH, String(rounds.length), 'end'));
  return svg;
}

/** Renders an SVG chart into a canvas context at (x, y), scaled to width w. */
export async function drawSvg(ctx: CanvasRenderingContext2D, svg: SVGElement, x: number, y: number, w: number): Promise<number> {
  const xml = new XMLSerializer().serializeToString(svg);
  const img = new Image();
  img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(xml)}`;
  await img.decode();
  const hgt = (img.height / img.width) * w;
  ctx.drawImage(img, x, y, w, hgt);
  return hgt;
}
