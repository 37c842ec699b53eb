/**
 * The retirement dashboard: polls the workflow's statistics (JSON) every few seconds and redraws
 * the summary cards and the SVG charts. Polling rather than server-sent events: under gunicorn's
 * sync/gthread workers a held-open event stream would tie up a worker thread per open dashboard,
 * while one cached JSON request every few seconds costs little and survives restarts and proxies.
 * The retirement events of the Redis stream still arrive, incrementally, through ``?after=``.
 */

import "./dashboard.css";
import { barChart, formatNumber, lineChart, mount, type Series } from "./charts";

interface Histogram {
  edges: number[];
  counts: number[];
}

export interface Statistics {
  taken_at: string;
  workflow: { id: number; name: string; active: boolean };
  classifications: { total: number; counted: number; unapplied: number; last_hour: number };
  subjects: number;
  retired: number;
  retired_by_reason: Record<string, number>;
  /** The reasons grouped by kind: every "consensus:<task>" under "consensus", with its count by task. */
  retired_by_kind: Record<string, { count: number; by_task: Record<string, number> }>;
  posterior_histogram: Histogram;
  skill_bits_histogram: Histogram;
  volunteers_with_skill: number;
  retired_over_time: { bucket: string; points: Array<{ at: string; by_reason: Record<string, number>; by_kind: Record<string, number> }> };
  classifications_per_hour: Array<{ hour: string; count: number }>;
  projection: { remaining: number; rate_per_hour: number; projected_completion: string | null; complete: boolean; window_hours: number };
  model: null | {
    version: number | string; state: string; accuracy: number | null; ece: number | null;
    /** Each task of the tree: whether the machine answers it, and why (not): "T1: gate not passed: 81% on 40 gold, needs 90%". */
    questions?: ModelQuestion[];
  };
  events: { cursor: string; events: Array<{ type: string; subject: number; reason: string; at: string }> };
  /** Human votes against a fixed-N majority, and accuracy against known answers, over the retired subjects. */
  tally?: Tally;
}

export interface Share {
  scored: number;
  right: number;
  accuracy: number | null;
}

export interface TallyGroup {
  retired: number;
  human_votes: number;
  votes_per_subject: number | null;
  fixed_n_votes: number;
  saved: number;
  fewer: number | null;
  accuracy: Share & { by_task: Record<string, Share> };
}

export interface Tally {
  /** N of the fixed-N majority and where it comes from ("the workflow's budget: Galaxy Zoo 2's votes per galaxy"). */
  fixed_n: { n: number; source: string };
  /** crowd: retired by the humans' votes (consensus, limit); machine: by the CNN; all: every retired subject. */
  groups: { crowd: TallyGroup; machine: TallyGroup; all: TallyGroup };
  human_votes_total: number;
}

export interface ModelQuestion {
  task: string;
  answers: boolean;
  reason: string;
  text: string;
}

const REASON_COLORS: Record<string, string> = { consensus: "#7ee787", machine: "#4fc3ff", limit: "#ff9f43" };

function set(root: Element, name: string, text: string): void {
  const el = root.querySelector(`[data-stat="${name}"]`);
  if (el) el.textContent = text;
}

function time(iso: string): string {
  const d = new Date(iso);
  return `${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`;
}

function dateTime(iso: string): string {
  return iso.replace("T", " ").slice(0, 16) + " UTC";
}

function histogramBars(h: Histogram, digits: number): Array<{ label: string; value: number }> {
  return h.counts.map((value, i) => ({ label: `${h.edges[i].toFixed(digits)}`, value }));
}

/** One line per kind of reason ("consensus" gathers the consensus on every task). */
export function retiredSeries(stats: Statistics): Series[] {
  const points = stats.retired_over_time.points;
  const kinds = Object.keys(points[points.length - 1]?.by_kind ?? {});
  return kinds.map((kind, i) => ({
    name: kind,
    color: REASON_COLORS[kind] ?? ["#ffcc00", "#c58cff", "#ff6b9a"][i % 3],
    points: points.map((p) => [Date.parse(p.at), p.by_kind[kind] ?? 0] as [number, number]),
  }));
}

/** "consensus 9 (T0 7, T2 2) · limit 3": each kind of reason, and by task where the reasons name one. */
export function retiredByKindText(byKind: Statistics["retired_by_kind"]): string {
  return Object.entries(byKind)
    .map(([kind, { count, by_task }]) => {
      const tasks = Object.entries(by_task).map(([task, n]) => `${task} ${n}`);
      return `${kind} ${count}${tasks.length ? ` (${tasks.join(", ")})` : ""}`;
    })
    .join(" · ");
}

/** A retirement reason for people: "consensus:T1" (whole-workflow retirement names the task that settled last) → "consensus on T1". */
export function reasonLabel(reason: string): string {
  const [kind, task] = reason.split(/:(.*)/s);
  return task ? `${kind} on ${task}` : reason;
}

/** The machine's questions, answered ones first: one line each ("T0: answers: …", "T1: gate not passed: …"). */
export function modelQuestionLines(questions: ModelQuestion[] | undefined): string[] {
  const list = questions ?? [];
  return [...list.filter((q) => q.answers), ...list.filter((q) => !q.answers)].map((q) => q.text);
}

/** The list under the model card: created beside its note the first time (the page's template has only the card). */
function renderModelQuestions(root: HTMLElement, questions: ModelQuestion[] | undefined): void {
  const note = root.querySelector('[data-stat="model_metrics"]');
  if (!note?.parentElement) return;
  let list = note.parentElement.querySelector<HTMLUListElement>('[data-stat="model_questions"]');
  if (!list) {
    list = document.createElement("ul");
    list.dataset.stat = "model_questions";
    list.className = "card-note model-questions";
    note.after(list);
  }
  list.replaceChildren(...modelQuestionLines(questions).map((line) => {
    const item = document.createElement("li");
    item.textContent = line;
    return item;
  }));
}

/** "1,234": whole numbers with thousands separators (the tally's counts, exact). */
function count(value: number): string {
  return value.toLocaleString("en-US");
}

function percent(share: Share): string {
  return share.accuracy === null ? "–" : `${(100 * share.accuracy).toFixed(1)}%`;
}

/** The votes card: its value ("3.4 vs 40") and its note (the totals, each group, and what N is). */
export function tallyVotesText(tally: Tally): { value: string; note: string } {
  const { n, source } = tally.fixed_n;
  const { all, crowd, machine } = tally.groups;
  if (!all.retired) return { value: `– vs ${n}`, note: `Nothing retired yet. N = ${n}: ${source}.` };
  const each = (g: TallyGroup): string => (g.votes_per_subject === null ? "–" : g.votes_per_subject.toFixed(1));
  const fewer = all.fewer === null ? "no human votes" : `${all.fewer.toFixed(1)}× fewer`;
  const parts = [
    `${count(all.retired)} retired with ${count(all.human_votes)} human votes; a fixed ${n}-vote majority: ${count(all.fixed_n_votes)} (${fewer})`,
    `by the crowd ${each(crowd)} each (${count(crowd.retired)})`,
    `by the machine ${each(machine)} each (${count(machine.retired)})`,
    `N = ${n}: ${source}`,
  ];
  return { value: `${each(all)} vs ${n}`, note: parts.join(" · ") };
}

/** The accuracy card: every retired subject's (the crowd with the machine), then the crowd alone and the machine's own. */
export function tallyAccuracyText(tally: Tally): { value: string; note: string } {
  const { all, crowd, machine } = tally.groups;
  if (!all.accuracy.scored) {
    return {
      value: "–",
      note: "No known answers among the retired subjects yet (gold subjects never retire; a manifest's hidden #truth.<task> columns give them).",
    };
  }
  const tasks = Object.entries(all.accuracy.by_task).map(([task, share]) => `${task} ${percent(share)}`);
  const parts = [
    `against the known answers of ${count(all.accuracy.scored)} of ${count(all.retired)} retired`,
    `crowd alone ${percent(crowd.accuracy)} (${count(crowd.accuracy.scored)})`,
    `with the machine ${percent(all.accuracy)} (${count(all.accuracy.scored)})`,
    `the machine's retirements ${percent(machine.accuracy)} (${count(machine.accuracy.scored)})`,
    ...(tasks.length ? [`by question: ${tasks.join(", ")}`] : []),
  ];
  return { value: percent(all.accuracy), note: parts.join(" · ") };
}

export function render(root: HTMLElement, stats: Statistics, subjectUrl: string): void {
  const proj = stats.projection;
  set(root, "subjects", formatNumber(stats.subjects));
  set(root, "retired", formatNumber(stats.retired));
  set(root, "retired_by_reason", retiredByKindText(stats.retired_by_kind));
  set(root, "remaining", formatNumber(proj.remaining));
  set(root, "classifications", formatNumber(stats.classifications.total));
  set(root, "last_hour", `${stats.classifications.last_hour} in the last hour · ${stats.classifications.unapplied} waiting`);
  set(root, "projected_completion", proj.complete ? "complete" : proj.projected_completion ? dateTime(proj.projected_completion) : "not yet known");
  set(root, "rate", `${proj.rate_per_hour.toFixed(1)} retired per hour (last ${Math.min(24, proj.window_hours).toFixed(1)} h)`);
  set(root, "model", stats.model ? `version ${stats.model.version} (${stats.model.state})` : "none yet");
  set(root, "model_metrics", stats.model ? `accuracy ${stats.model.accuracy?.toFixed(3) ?? "–"} · ECE ${stats.model.ece?.toFixed(3) ?? "–"}` : "");
  renderModelQuestions(root, stats.model?.questions);
  if (stats.tally) {
    const votes = tallyVotesText(stats.tally);
    const accuracy = tallyAccuracyText(stats.tally);
    set(root, "tally_votes", votes.value);
    set(root, "tally_votes_note", votes.note);
    set(root, "tally_accuracy", accuracy.value);
    set(root, "tally_accuracy_note", accuracy.note);
  }

  mount(root.querySelector("#chart-retired .plot"), lineChart(retiredSeries(stats), {
    label: "Subjects retired over time by reason", xFormat: (x) => time(new Date(x).toISOString()), step: true,
  }));
  const hours = stats.classifications_per_hour;
  mount(root.querySelector("#chart-hourly .plot"), barChart(
    hours.map((h) => ({ label: time(h.hour), value: h.count })), { label: "Classifications per hour", labelEvery: 6 },
  ));
  mount(root.querySelector("#chart-posterior .plot"), barChart(histogramBars(stats.posterior_histogram, 1), {
    label: "Histogram of the highest posterior", labelEvery: 2, color: "#ffcc00",
  }));
  mount(root.querySelector("#chart-skill .plot"), barChart(histogramBars(stats.skill_bits_histogram, 2), {
    label: `Volunteer skill in bits (${stats.volunteers_with_skill} volunteers)`, labelEvery: 2, color: "#7ee787",
  }));

  const list = root.querySelector(".events");
  if (list) {
    for (const event of stats.events.events) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = `${subjectUrl}${event.subject}/`;
      link.textContent = `subject ${event.subject}`;
      item.append(`${time(event.at)} `, link, ` retired (${reasonLabel(event.reason)})`);
      list.prepend(item);
    }
    while (list.children.length > 30) list.lastElementChild?.remove();
  }
}

function start(): void {
  const root = document.getElementById("chorus-dashboard");
  if (!root) return;
  const url = root.dataset.statisticsUrl ?? "";
  const subjectUrl = root.dataset.subjectUrl ?? "";
  const interval = Number(root.dataset.intervalMs ?? 5000);
  const status = root.querySelector(".live-status");
  let cursor = "0-0";
  let timer = 0;
  const tick = async (): Promise<void> => {
    try {
      const response = await fetch(`${url}?after=${encodeURIComponent(cursor)}`, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const stats = (await response.json()) as Statistics;
      cursor = stats.events.cursor;
      render(root, stats, subjectUrl);
      root.dataset.updatedAt = stats.taken_at;
      if (status) status.textContent = `Live: updated ${dateTime(stats.taken_at)}, every ${interval / 1000} s.`;
    } catch (error) {
      if (status) status.textContent = `Could not update (${String(error)}); retrying.`;
    }
    timer = window.setTimeout(tick, document.hidden ? interval * 6 : interval);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      window.clearTimeout(timer);
      void tick();
    }
  });
  void tick();
}

if (typeof document !== "undefined") start(); // not under unit tests (node)
