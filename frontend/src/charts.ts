/**
 * Hand-written SVG charts for the dashboards (no chart library): a line chart of series over time
 * or over a count, and a bar chart. The scale and tick helpers are pure, so they are unit-tested.
 */

const SVG_NS = "http://www.w3.org/2000/svg";

export type Attrs = Record<string, string | number>;

export function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Attrs = {}, text?: string): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A linear map from [d0, d1] to [r0, r1]; a zero-width domain maps to the middle of the range. */
export function linear(d0: number, d1: number, r0: number, r1: number): (x: number) => number {
  if (d1 === d0) return () => (r0 + r1) / 2;
  return (x) => r0 + ((x - d0) / (d1 - d0)) * (r1 - r0);
}

/** About ``count`` round tick values (1, 2 or 5 times a power of ten) covering [0, max]. */
export function niceTicks(max: number, count = 4): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  const ticks: number[] = [];
  for (let v = 0; v < max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

export function formatNumber(value: number): string {
  if (Math.abs(value) >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (Math.abs(value) >= 1e4) return `${(value / 1e3).toFixed(1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

export const PALETTE = ["#ffcc00", "#4fc3ff", "#ff6b9a", "#7ee787", "#c58cff", "#ff9f43", "#a9b4c8"];

const W = 480;
const H = 220;
const M = { top: 14, right: 12, bottom: 34, left: 44 };

function frame(label: string): SVGSVGElement {
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart-svg" });
}

function yAxis(root: SVGSVGElement, ticks: number[], y: (v: number) => number, format: (v: number) => string = formatNumber): void {
  for (const t of ticks) {
    root.append(svg("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t), class: "grid" }));
    root.append(svg("text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end", class: "tick" }, format(t)));
  }
}

export interface Series {
  name: string;
  points: Array<[number, number]>;
  color?: string;
  /** Drawn dashed: a reference line (a bar, a threshold) rather than data. */
  dashed?: boolean;
}

export interface LineOptions {
  label: string;
  xFormat: (x: number) => string;
  yMax?: number;
  yFormat?: (v: number) => string;
  step?: boolean;
  xTicks?: number;
}

/** Legend entries laid out left to right, wrapping onto more rows: [x, row] for each. */
export function legendLayout(labels: string[], width: number, charWidth = 6.2): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let x = 0;
  let row = 0;
  for (const label of labels) {
    const w = 22 + label.length * charWidth;
    if (x > 0 && x + w > width) {
      x = 0;
      row += 1;
    }
    out.push([x, row]);
    x += w;
  }
  return out;
}

/** Lines (or steps) over a shared x axis, with a legend; an empty chart says so. */
export function lineChart(series: Series[], options: LineOptions): SVGSVGElement {
  const root = frame(options.label);
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "No data yet"));
    return root;
  }
  const labels = series.map((s) => `${s.name} (${formatNumber(s.points[s.points.length - 1]?.[1] ?? 0)})`);
  const legend = legendLayout(labels, W - M.left - 8);
  const rows = 1 + Math.max(0, ...legend.map(([, row]) => row));
  root.setAttribute("viewBox", `0 0 ${W} ${H + (rows - 1) * 14}`);
  const xs = all.map((p) => p[0]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const x = linear(x0, x1, M.left, W - M.right);
  const ticks = niceTicks(options.yMax ?? Math.max(...all.map((p) => p[1])), 4);
  const y = linear(0, ticks[ticks.length - 1], H - M.bottom, M.top);
  yAxis(root, ticks, y, options.yFormat);
  const distinct = new Set(xs).size;
  const xTickCount = Math.max(2, Math.min(options.xTicks ?? 4, distinct));
  for (let i = 0; i < xTickCount; i++) {
    const v = x0 === x1 ? x0 : x0 + ((x1 - x0) * i) / (xTickCount - 1);
    const anchor = x0 === x1 ? "middle" : i === 0 ? "start" : i === xTickCount - 1 ? "end" : "middle";
    root.append(svg("text", { x: x(v), y: H - M.bottom + 16, "text-anchor": anchor, class: "tick" }, options.xFormat(v)));
    if (x0 === x1) break;
  }
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    let d = "";
    s.points.forEach(([px, py], j) => {
      if (j === 0) d += `M${x(px).toFixed(1)},${y(py).toFixed(1)}`;
      else if (options.step) d += `H${x(px).toFixed(1)}V${y(py).toFixed(1)}`;
      else d += `L${x(px).toFixed(1)},${y(py).toFixed(1)}`;
    });
    const path = svg("path", { d, class: "series", stroke: color, "data-series": s.name, ...(s.dashed ? { "stroke-dasharray": "5 4" } : {}) });
    path.append(svg("title", {}, labels[i]));
    root.append(path);
    const last = s.points[s.points.length - 1];
    if (last) root.append(svg("circle", { cx: x(last[0]), cy: y(last[1]), r: 3, fill: color }));
    const [lx, row] = legend[i];
    root.append(svg("rect", { x: M.left + 8 + lx, y: H - 12 + row * 14, width: 10, height: 10, fill: color }));
    root.append(svg("text", { x: M.left + 22 + lx, y: H - 3 + row * 14, class: "legend" }, labels[i]));
  });
  return root;
}

export interface Bar {
  label: string;
  value: number;
}

/** Vertical bars with every ``labelEvery``-th label under them and the value in each bar's title. */
export function barChart(bars: Bar[], options: { label: string; labelEvery?: number; color?: string }): SVGSVGElement {
  const root = frame(options.label);
  const ticks = niceTicks(Math.max(0, ...bars.map((b) => b.value)), 4);
  const y = linear(0, ticks[ticks.length - 1], H - M.bottom, M.top);
  yAxis(root, ticks, y);
  const band = (W - M.left - M.right) / Math.max(1, bars.length);
  const every = options.labelEvery ?? 1;
  bars.forEach((b, i) => {
    const top = y(b.value);
    const rect = svg("rect", {
      x: (M.left + i * band + band * 0.1).toFixed(1),
      y: top.toFixed(1),
      width: (band * 0.8).toFixed(1),
      height: Math.max(0, H - M.bottom - top).toFixed(1),
      class: "bar",
      fill: options.color ?? PALETTE[1],
      "data-value": b.value,
      "data-label": b.label,
    });
    rect.append(svg("title", {}, `${b.label}: ${formatNumber(b.value)}`));
    root.append(rect);
    if (i % every === 0) root.append(svg("text", { x: M.left + i * band + band / 2, y: H - M.bottom + 16, "text-anchor": "middle", class: "tick" }, b.label));
  });
  return root;
}

export function mount(container: Element | null, chart: SVGSVGElement): void {
  if (!container) return;
  container.replaceChildren(chart);
}
