// Small dependency-free SVG charts for the benchmark report: a line chart over categorical x
// positions (k = 1..8, adaptive; sessions 1..128; RTT ms) and a grouped bar chart. Each chart
// carries a title and a caption line (the machine and adapter it ran on), so a figure copied
// out of the report still says where its numbers came from.

export interface Series {
  name: string;
  /** One value per x category; null where nothing was measured. */
  values: (number | null)[];
  dashed?: boolean;
}

export interface ChartSpec {
  title: string;
  caption: string;
  xLabel: string;
  yLabel: string;
  categories: string[];
  series: Series[];
  /** Horizontal reference line (e.g. speedup 1, copy-kernel ratio 1). */
  refLine?: { y: number; label: string };
  /** Category indices the lines do not connect into (e.g. "adaptive" after k = 8). */
  breakBefore?: number[];
  /** Pixels (default 640): many categories need more. */
  width?: number;
}

const H = 360;
const M = { l: 64, r: 16, t: 48, b: 92 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

export const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A "nice" upper bound and tick step for [0, max]. */
function niceScale(max: number): { top: number; step: number } {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  return { top: Math.ceil(max / step - 1e-9) * step, step };
}

const fmt = (v: number): string => (Number.isInteger(v) ? String(v) : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : Number(v.toPrecision(3)).toString());

function frame(c: ChartSpec, yMax: number): { parts: string[]; y: (v: number) => number } {
  const W = c.width ?? 640;
  const { top, step } = niceScale(yMax);
  const y = (v: number): number => M.t + (H - M.t - M.b) * (1 - v / top);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<title>${esc(c.title)}</title>`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(c.title)}</text>`,
    `<text x="${W / 2}" y="34" text-anchor="middle" fill="#555">${esc(c.caption)}</text>`,
  ];
  for (let v = 0; v <= top + 1e-9; v += step) {
    parts.push(`<line x1="${M.l}" x2="${W - M.r}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${M.l - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`);
  }
  parts.push(`<line x1="${M.l}" x2="${M.l}" y1="${M.t}" y2="${H - M.b}" stroke="#333"/>`);
  parts.push(`<line x1="${M.l}" x2="${W - M.r}" y1="${H - M.b}" y2="${H - M.b}" stroke="#333"/>`);
  parts.push(`<text transform="translate(14 ${(M.t + H - M.b) / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`);
  parts.push(`<text x="${(M.l + W - M.r) / 2}" y="${H - M.b + 34}" text-anchor="middle">${esc(c.xLabel)}</text>`);
  if (c.refLine && c.refLine.y <= top) {
    const ry = y(c.refLine.y).toFixed(1);
    parts.push(`<line x1="${M.l}" x2="${W - M.r}" y1="${ry}" y2="${ry}" stroke="#888" stroke-dasharray="2 3"/>`);
    parts.push(`<text x="${W - M.r - 4}" y="${Number(ry) - 4}" text-anchor="end" fill="#666">${esc(c.refLine.label)}</text>`);
  }
  return { parts, y };
}

function legend(series: Series[]): string[] {
  return series.map((s, i) => {
    const x = M.l + (i % 3) * 190;
    const y = H - 36 + Math.floor(i / 3) * 14;
    const col = COLORS[i % COLORS.length];
    return `<rect x="${x}" y="${y - 8}" width="14" height="8" fill="${col}"/><text x="${x + 18}" y="${y}">${esc(s.name)}</text>`;
  });
}

const maxOf = (c: ChartSpec): number => Math.max(c.refLine?.y ?? 0, ...c.series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v))));

/** Lines over categorical x positions; a gap where a value is null. */
export function lineChart(c: ChartSpec): string {
  const W = c.width ?? 640;
  const { parts, y } = frame(c, maxOf(c));
  const n = c.categories.length;
  const x = (i: number): number => M.l + ((W - M.l - M.r) * (i + 0.5)) / Math.max(1, n);
  c.categories.forEach((cat, i) => parts.push(`<text x="${x(i).toFixed(1)}" y="${H - M.b + 16}" text-anchor="middle">${esc(cat)}</text>`));
  c.series.forEach((s, si) => {
    const col = COLORS[si % COLORS.length];
    let d = '';
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) return;
      d += `${d && s.values[i - 1] !== null && !c.breakBefore?.includes(i) ? 'L' : 'M'}${x(i).toFixed(1)} ${y(v).toFixed(1)} `;
      parts.push(`<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${col}"><title>${esc(`${s.name} @ ${c.categories[i]}: ${fmt(v)}`)}</title></circle>`);
    });
    if (d) parts.push(`<path d="${d.trim()}" fill="none" stroke="${col}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
  });
  parts.push(...legend(c.series), '</svg>');
  return parts.join('\n') + '\n';
}

/** Grouped bars: one group per category, one bar per series, the value printed on top. */
export function barChart(c: ChartSpec): string {
  const W = c.width ?? 640;
  const { parts, y } = frame(c, maxOf(c));
  const n = c.categories.length;
  const groupW = (W - M.l - M.r) / Math.max(1, n);
  const barW = (groupW * 0.8) / Math.max(1, c.series.length);
  c.categories.forEach((cat, i) => {
    const cx = M.l + groupW * (i + 0.5);
    parts.push(`<text x="${cx.toFixed(1)}" y="${H - M.b + 16}" text-anchor="middle">${esc(cat)}</text>`);
    c.series.forEach((s, si) => {
      const v = s.values[i];
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      const x0 = M.l + groupW * i + groupW * 0.1 + barW * si;
      const y0 = y(v);
      parts.push(`<rect x="${x0.toFixed(1)}" y="${y0.toFixed(1)}" width="${(barW - 1).toFixed(1)}" height="${(H - M.b - y0).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${s.name} @ ${cat}: ${fmt(v)}`)}</title></rect>`);
      if (barW >= 14) parts.push(`<text x="${(x0 + barW / 2).toFixed(1)}" y="${(y0 - 3).toFixed(1)}" text-anchor="middle" font-size="9">${fmt(v)}</text>`);
    });
  });
  parts.push(...legend(c.series), '</svg>');
  return parts.join('\n') + '\n';
}
