/**
 * A subject's page for scientists: its images with the aggregated boxes (and their probabilities)
 * drawn over them, optionally every volunteer's boxes, the posterior's path vote by vote for each
 * question, and each required task's weighted risk vote by vote against its bar (the table of the
 * risks now is in the page itself). The data is embedded in the page (json_script "subject-data").
 */

import { formatNumber, lineChart, mount, svg, PALETTE, type Series } from "./charts";

interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
  probability?: number;
}

interface Task {
  type: string;
  answers?: Array<{ label: string }>;
}

/** One task's risk as the engine stores it under a posterior's "@risk" (aggregation.workflow.TaskRisk). */
export interface TaskRisk {
  kind: string;
  reach: number;
  risk: number;
  weighted_risk: number;
  bar: number | null;
  settled: boolean;
  answers: number;
}

export const RISK_KEY = "@risk";

interface Detail {
  images: Array<{ url: string; width: number; height: number }>;
  tasks: Record<string, Task>;
  questions: string[];
  path: Record<string, Array<{ n: number; classification: number; posterior: number[] | number[][] }>>;
  boxes: Record<string, { objects?: Box[]; expected_risk?: number }>;
  risk: Array<TaskRisk & { task: string; required: boolean }>;
  classifications: Array<{ id: number; annotations: Array<{ task: string; value: unknown }>; posterior_after: Record<string, unknown> | null }>;
}

/** Probability of each answer: a single question's posterior as is; a multiple one's P(yes) each. */
export function answerProbabilities(posterior: number[] | number[][]): number[] {
  return posterior.map((p) => (Array.isArray(p) ? p[1] ?? 0 : p));
}

function isBox(value: unknown): value is Box {
  const b = value as Box;
  return !!b && typeof b.x === "number" && typeof b.y === "number" && typeof b.width === "number" && typeof b.height === "number";
}

function drawImages(container: Element, detail: Detail): void {
  detail.images.forEach((image, index) => {
    const wrap = document.createElement("div");
    wrap.className = "overlay-wrap";
    const img = document.createElement("img");
    img.src = image.url;
    img.alt = `Subject image ${index + 1}`;
    img.width = image.width;
    img.height = image.height;
    const overlay = svg("svg", { viewBox: `0 0 ${image.width} ${image.height}`, class: "overlay", "aria-hidden": "true" });
    if (index === 0) {
      // Boxes are in the first image's pixels (docs/api.md).
      const raw = svg("g", { class: "raw-boxes" });
      for (const c of detail.classifications) {
        for (const a of c.annotations) {
          if (detail.tasks[a.task]?.type !== "drawing" || !Array.isArray(a.value)) continue;
          for (const b of a.value.filter(isBox)) raw.append(svg("rect", { x: b.x, y: b.y, width: b.width, height: b.height, class: "raw-box" }));
        }
      }
      overlay.append(raw);
      const scale = Math.max(image.width, image.height) / 300;
      for (const [key, result] of Object.entries(detail.boxes)) {
        for (const b of (result.objects ?? []).filter(isBox)) {
          const group = svg("g", { class: "agg-box", "data-task": key });
          group.append(svg("rect", { x: b.x, y: b.y, width: b.width, height: b.height, "stroke-width": 2 * scale }));
          const label = b.probability !== undefined ? `${Math.round(b.probability * 100)}%` : "";
          group.append(svg("text", { x: b.x + 2 * scale, y: Math.max(b.y - 3 * scale, 10 * scale), "font-size": 11 * scale }, label));
          overlay.append(group);
        }
      }
    }
    wrap.append(img, overlay);
    container.append(wrap);
  });
}

export function pathSeries(detail: Detail, key: string): Series[] {
  const steps = detail.path[key] ?? [];
  const answers = detail.tasks[key]?.answers ?? [];
  return answers.map((answer, i) => ({
    name: answer.label,
    color: PALETTE[i % PALETTE.length],
    points: steps.map((s) => [s.n, answerProbabilities(s.posterior)[i] ?? 0] as [number, number]),
  }));
}

/**
 * The weighted risk of each required task after each classification, and its bar as a flat line
 * (tasks not required are left out: they do not decide retirement).
 */
export function riskSeries(detail: Pick<Detail, "risk" | "classifications">): Series[] {
  const series: Series[] = [];
  detail.risk.filter((r) => r.required).forEach((task, i) => {
    const color = PALETTE[i % PALETTE.length];
    const points: Array<[number, number]> = [];
    detail.classifications.forEach((c, n) => {
      const risks = c.posterior_after?.[RISK_KEY] as Record<string, TaskRisk> | undefined;
      const risk = risks?.[task.task];
      if (risk) points.push([n + 1, risk.weighted_risk]);
    });
    if (!points.length || task.bar === null) return;
    series.push({ name: `${task.task} weighted risk`, color, points });
    series.push({ name: `${task.task} bar`, color, dashed: true, points: [[points[0][0], task.bar], [points[points.length - 1][0], task.bar]] });
  });
  return series;
}

function start(): void {
  const data = document.getElementById("subject-data");
  if (!data?.textContent) return;
  const detail = JSON.parse(data.textContent) as Detail;
  const stack = document.querySelector(".image-stack");
  if (stack) drawImages(stack, detail);
  const toggle = document.getElementById("show-raw-boxes") as HTMLInputElement | null;
  const syncRaw = (): void => document.querySelectorAll<SVGGElement>(".raw-boxes").forEach((g) => g.classList.toggle("shown", !!toggle?.checked));
  toggle?.addEventListener("change", syncRaw);
  syncRaw();

  const paths = document.querySelector(".paths");
  for (const key of detail.questions) {
    if (!detail.path[key]?.length || !paths) continue;
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.task = key;
    const caption = document.createElement("figcaption");
    caption.textContent = `${key}: probability of each answer after each classification`;
    const plot = document.createElement("div");
    figure.append(caption, plot);
    paths.append(figure);
    mount(plot, lineChart(pathSeries(detail, key), {
      label: `Posterior path of ${key}`, xFormat: (x) => `#${Math.round(x)}`, yMax: 1, yFormat: (v) => v.toFixed(1),
      // Whole vote numbers: a tick on every vote while they fit.
      xTicks: detail.path[key].length <= 10 ? detail.path[key].length : 5,
    }));
  }
  const risks = riskSeries(detail);
  if (paths && risks.length) {
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.task = RISK_KEY;
    const caption = document.createElement("figcaption");
    caption.textContent = "Weighted risk of each required task after each classification, and its bar";
    const plot = document.createElement("div");
    figure.append(caption, plot);
    paths.append(figure);
    const steps = Math.max(...risks.map((s) => s.points[s.points.length - 1][0]));
    mount(plot, lineChart(risks, {
      label: "Weighted risk path", xFormat: (x) => `#${Math.round(x)}`, yFormat: (v) => String(Number(v.toPrecision(2))),
      xTicks: steps <= 10 ? steps : 5,
    }));
  }
  if (paths && !paths.children.length) paths.textContent = "No classification has been aggregated yet.";

  // The first question's posterior after each classification; without a question, the first task's weighted risk.
  const first = detail.questions[0];
  const riskTask = detail.risk[0]?.task;
  for (const c of detail.classifications) {
    const cell = document.querySelector(`[data-posterior-of="${c.id}"]`);
    if (!cell) continue;
    const p = first === undefined ? undefined : c.posterior_after?.[first];
    const risk = riskTask === undefined ? undefined : (c.posterior_after?.[RISK_KEY] as Record<string, TaskRisk> | undefined)?.[riskTask];
    if (Array.isArray(p)) cell.textContent = answerProbabilities(p as number[]).map((v) => formatNumber(Number(v))).join(" / ");
    else if (first === undefined && risk) cell.textContent = String(Number(risk.weighted_risk.toPrecision(2)));
  }
}

if (typeof document !== "undefined") start(); // not under unit tests (node)
