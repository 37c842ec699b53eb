/**
 * The similarity page of a workflow (scientists only): "more like this" from one or several
 * examples, the most unusual subjects, the embeddings' 2-D map coloured by consensus, and what to
 * do with a selection: search by it, send it to volunteers first, label it for a new question
 * (whose head is fitted on the frozen embeddings and whose ranking downloads as CSV). Everything
 * comes from the similarity API (docs/similarity.md); the page's config is embedded as JSON
 * ("similarity-config").
 */

import "./similarity.css";
import { PALETTE } from "./charts";

// Its own element helper and fetch, not dom.ts/api.ts: a module shared with the classifier would
// become a chunk that the volunteers' page loads as one more request (as builder_dom.ts says).
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;
type Child = Node | string | null | undefined | false;

function build<E extends Element>(el: E, attrs: Attrs, children: Child[]): E {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, "").toLowerCase(), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  return build(document.createElement(tag), attrs, children);
}

function s<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): SVGElementTagNameMap[K] {
  return build(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children);
}

function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

interface Reply<T> {
  status: number;
  body: T | null;
}

/** JSON over fetch with the session cookie and the CSRF token; a network failure is status 0. */
class SimilarityApi {
  constructor(readonly root: string) {}

  url(path: string): string {
    return this.root.replace(/\/+$/, "") + "/" + path.replace(/^\/+/, "");
  }

  async request<T = unknown>(method: string, path: string, body?: unknown): Promise<Reply<T>> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = document.cookie.split(";").map((c) => c.trim().split("=")).find(([k]) => k === "csrftoken")?.slice(1).join("=");
    if (method !== "GET" && token) headers["X-CSRFToken"] = decodeURIComponent(token);
    try {
      const response = await fetch(this.url(path), { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await response.text();
      let parsed: T | null = null;
      try {
        parsed = text ? (JSON.parse(text) as T) : null;
      } catch {
        parsed = null;
      }
      return { status: response.status, body: parsed };
    } catch {
      return { status: 0, body: null };
    }
  }
}

interface Config {
  workflow: number;
  api: string;
  subject_page: string;
  examples: number[];
  questions: Array<{ key: string; answers: string[] }>;
}

interface Consensus {
  task: string;
  answer: number;
  label: string | null;
  probability: number;
}

export interface Card {
  id: number;
  external_id: string;
  image: string | null;
  status: string;
  retirement: string | null;
  classification_count: number;
  is_gold: boolean;
  consensus: Consensus[];
  distance?: number;
  anomaly?: number;
  rank?: number;
}

interface Space {
  label: string;
  n_subjects: number;
  built_at: string | null;
  anomaly_k: number;
}

interface Point {
  id: number;
  x: number;
  y: number;
  status: string;
  answer: number | null;
  selected: boolean;
}

interface Question {
  id: number;
  name: string;
  answers: string[];
  n_labels: number;
  metrics: { counts?: Record<string, number>; cross_validation?: { accuracy: number | null; folds: number; standard_error?: number } };
  fitted_at: string | null;
  stale: boolean;
}

const config = JSON.parse(document.getElementById("similarity-config")?.textContent ?? "{}") as Config;
const api = new SimilarityApi(config.api);
const root = document.getElementById("chorus-similarity") as HTMLElement;
const part = (id: string): HTMLElement => root.querySelector(`[data-testid="${id}"]`) as HTMLElement;

const state = {
  examples: [...config.examples],
  selected: new Set<number>(),
  sentFirst: new Set<number>(),
  cards: new Map<number, Card>(),
  questions: [] as Question[],
  mapQuestion: config.questions[0]?.key ?? "",
  anomalyStatus: "",
  anomalyOffset: 0,
};

/** "T0: Smooth 93%" for a card's first question with a consensus. */
export function consensusText(card: Pick<Card, "consensus">): string {
  const c = card.consensus[0];
  return c ? `${c.task}: ${c.label ?? c.answer} ${Math.round(c.probability * 100)}%` : "no consensus yet";
}

/** A cosine distance for a card: three decimals, or two significant digits when tiny. */
export function distanceText(d: number | undefined): string {
  if (d === undefined) return "–";
  return d !== 0 && Math.abs(d) < 0.001 ? d.toExponential(1) : d.toFixed(3);
}

function say(element: HTMLElement, text: string, isError = false): void {
  element.textContent = text;
  element.classList.toggle("form-error", isError);
}

function errorText(body: unknown, status: number): string {
  if (body && typeof body === "object") {
    return Object.entries(body as Record<string, unknown>).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(" ") : String(v)}`).join("; ");
  }
  return `request failed (${status})`;
}

function cardElement(card: Card, note: string): HTMLElement {
  state.cards.set(card.id, card);
  const selected = state.selected.has(card.id);
  const figure = h("figure", { class: `sim-card${selected ? " selected" : ""}`, "data-subject": card.id, "data-testid": "sim-card" },
    card.image ? h("img", { src: card.image, alt: `subject ${card.external_id}`, loading: "lazy" }) : h("div", { class: "no-image" }, "no image"),
    h("figcaption", {},
      h("a", { href: `${config.subject_page}${card.id}/` }, card.external_id),
      h("span", { class: "muted" }, consensusText(card)),
      h("span", { class: `badge ${card.status}` }, card.status === "retired" ? `retired: ${card.retirement ?? ""}` : `active · ${card.classification_count} votes`),
      state.sentFirst.has(card.id) ? h("span", { class: "badge first" }, "sent first") : null,
      h("span", { class: "muted" }, note),
    ),
    h("div", { class: "sim-card-actions" },
      h("label", {}, h("input", { type: "checkbox", checked: selected, "aria-label": `select ${card.external_id}`, onchange: (e: Event) => {
        if ((e.target as HTMLInputElement).checked) state.selected.add(card.id); else state.selected.delete(card.id);
        figure.classList.toggle("selected", state.selected.has(card.id));
        renderSelection();
      } }), " select"),
      h("button", { type: "button", class: "small", title: "add to the examples", onclick: () => { addExamples([card.id]); } }, "+ example"),
    ),
  );
  return figure;
}

function renderExamples(): void {
  const box = part("examples");
  clear(box);
  if (!state.examples.length) {
    box.append(h("p", { class: "muted" }, "No example yet: open a subject's page and choose “More like this”, or click a point of the map."));
    return;
  }
  box.append(h("span", { class: "muted" }, state.examples.length > 1 ? "Examples (searching by their mean): " : "Example: "));
  for (const id of state.examples) {
    const card = state.cards.get(id);
    box.append(h("span", { class: "chip", "data-testid": "example" },
      card?.image ? h("img", { src: card.image, alt: "" }) : null, card?.external_id ?? `#${id}`,
      h("button", { type: "button", class: "link", "aria-label": `remove example ${id}`, onclick: () => {
        state.examples = state.examples.filter((e) => e !== id);
        void searchSimilar();
      } }, "×")));
  }
}

function addExamples(ids: number[]): void {
  state.examples = [...new Set([...state.examples, ...ids])];
  void searchSimilar();
}

async function searchSimilar(): Promise<void> {
  const gallery = part("similar-gallery");
  renderExamples();
  if (!state.examples.length) {
    clear(gallery);
    return;
  }
  const r = await api.request<{ query: Card[]; results: Card[]; space: Space }>("GET", `similar/?subjects=${state.examples.join(",")}&count=20`);
  clear(gallery);
  if (r.status !== 200 || !r.body) {
    gallery.append(h("p", { class: "form-error" }, errorText(r.body, r.status)));
    return;
  }
  r.body.query.forEach((card) => state.cards.set(card.id, card));
  renderExamples();
  for (const card of r.body.results) gallery.append(cardElement(card, `distance ${distanceText(card.distance)}`));
  void drawMap();
}

async function loadAnomalies(more = false): Promise<void> {
  const gallery = part("anomaly-gallery");
  state.anomalyOffset = more ? state.anomalyOffset + 20 : 0;
  const status = state.anomalyStatus ? `&status=${state.anomalyStatus}` : "";
  const r = await api.request<{ results: Card[]; k: number }>("GET", `anomalies/?count=20&offset=${state.anomalyOffset}${status}`);
  if (!more) clear(gallery);
  if (r.status !== 200 || !r.body) {
    gallery.append(h("p", { class: "form-error" }, errorText(r.body, r.status)));
    return;
  }
  for (const card of r.body.results) gallery.append(cardElement(card, `#${card.rank} · ${r.body.k}th-neighbour distance ${distanceText(card.anomaly)}`));
}

function anomalyControls(): void {
  const box = root.querySelector(".anomaly-controls") as HTMLElement;
  box.append(
    h("label", {}, "Show ", h("select", { onchange: (e: Event) => { state.anomalyStatus = (e.target as HTMLSelectElement).value; void loadAnomalies(); } },
      h("option", { value: "" }, "every subject"), h("option", { value: "active" }, "active subjects"), h("option", { value: "retired" }, "retired subjects"))),
    " ", h("button", { type: "button", onclick: () => { void loadAnomalies(true); } }, "Show 20 more"),
  );
}

/** Map coordinates to a 480 x 360 box with a margin (the same scale on both axes keeps distances). */
export function mapScale(points: Array<{ x: number; y: number }>, width = 480, height = 360, margin = 12): (p: { x: number; y: number }) => [number, number] {
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const span = Math.max(x1 - x0, y1 - y0, 1e-9);
  const k = Math.min(width - 2 * margin, height - 2 * margin) / span;
  return (p) => [margin + (p.x - x0) * k, height - margin - (p.y - y0) * k];
}

async function drawMap(): Promise<void> {
  const box = part("map");
  const marked = [...new Set([...state.examples, ...state.selected])];
  const question = state.mapQuestion ? `&question=${state.mapQuestion}` : "";
  const r = await api.request<{ points: Point[]; answers: string[] }>("GET", `map/?limit=5000${question}&selected=${marked.join(",")}`);
  clear(box);
  if (r.status !== 200 || !r.body) {
    box.append(h("p", { class: "form-error" }, errorText(r.body, r.status)));
    return;
  }
  const { points, answers } = r.body;
  if (!points.length) return;
  const at = mapScale(points);
  const plot = s("svg", { viewBox: "0 0 480 360", class: "map-svg", role: "img", "aria-label": "map of the embeddings" });
  const examples = new Set(state.examples);
  const ordered = [...points.filter((p) => !p.selected), ...points.filter((p) => p.selected)];  // marked points on top
  for (const p of ordered) {
    const [x, y] = at(p);
    const colour = p.answer === null ? "#5b6680" : PALETTE[p.answer % PALETTE.length];
    const dot = s("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: p.selected ? 5 : 2.5, fill: colour, class: p.selected ? (examples.has(p.id) ? "example" : "marked") : "",
      "data-subject": p.id, onclick: () => { state.examples = [p.id]; void searchSimilar(); } });
    dot.append(s("title", {}, `subject ${p.id} · ${p.answer === null ? "no consensus" : answers[p.answer]} · ${p.status}`));
    plot.append(dot);
  }
  box.append(plot, h("p", { class: "legend muted" },
    ...answers.map((a, i) => h("span", {}, h("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), a)),
    h("span", {}, h("span", { class: "swatch", style: "background:#5b6680" }), "no consensus"),
    h("span", {}, h("span", { class: "swatch ring" }), "examples and selection")));
}

function mapControls(): void {
  const box = root.querySelector(".map-controls") as HTMLElement;
  if (config.questions.length < 2) return;
  box.append(h("label", {}, "Colour by ", h("select", { onchange: (e: Event) => { state.mapQuestion = (e.target as HTMLSelectElement).value; void drawMap(); } },
    ...config.questions.map((q) => h("option", { value: q.key }, q.key)))));
}

function renderSelection(): void {
  const bar = part("selection-bar");
  clear(bar);
  const ids = [...state.selected];
  const message = h("span", { class: "muted", "data-testid": "action-message" });
  const labelTarget = h("select", { "aria-label": "question and answer" },
    ...state.questions.flatMap((q) => q.answers.map((a, i) => h("option", { value: `${q.id}:${i}` }, `${q.name}: ${a}`))));
  bar.append(
    h("strong", {}, `${ids.length} selected`),
    h("button", { type: "button", disabled: !ids.length, onclick: () => { state.examples = ids; void searchSimilar(); } }, "Search by these"),
    h("button", { type: "button", class: "primary", disabled: !ids.length, "data-testid": "send-first", onclick: async () => {
      const r = await api.request<{ queued: number; retired_or_gone: number }>("POST", "send-first/", { subjects: ids });
      if (r.status === 200 && r.body) {
        const text = `${r.body.queued} sent to volunteers first${r.body.retired_or_gone ? ` (${r.body.retired_or_gone} already retired)` : ""}.`;
        await loadSentFirst();
        await searchSimilar();  // the cards get their "sent first" badge
        say(part("selection-bar").querySelector("[data-testid=action-message]") as HTMLElement, text);
      } else say(message, errorText(r.body, r.status), true);
    } }, "Send to volunteers first"),
    ...(!state.questions.length ? [] : [h("span", { class: "label-as" }, "Label as ", labelTarget, h("button", { type: "button", disabled: !ids.length, onclick: async () => {
      const [question, answer] = labelTarget.value.split(":").map(Number);
      const r = await api.request<Question>("POST", `questions/${question}/labels/`, { labels: ids.map((subject) => ({ subject, answer })) });
      if (r.status === 200) {
        say(message, `${ids.length} labelled.`);
        await loadQuestions();
      } else say(message, errorText(r.body, r.status), true);
    } }, "Label"))]),
    h("button", { type: "button", class: "secondary", disabled: !ids.length, onclick: () => {
      state.selected.clear();
      root.querySelectorAll(".sim-card.selected").forEach((el) => el.classList.remove("selected"));
      root.querySelectorAll<HTMLInputElement>(".sim-card input[type=checkbox]").forEach((el) => { el.checked = false; });
      renderSelection();
    } }, "Clear"),
    message,
  );
}

async function loadSentFirst(): Promise<void> {
  const r = await api.request<{ subjects: number[] }>("GET", "send-first/");
  state.sentFirst = new Set(r.body?.subjects ?? []);
  const line = part("sent-first");
  clear(line);
  if (!state.sentFirst.size) {
    line.append("No subject is sent to volunteers first.");
    return;
  }
  line.append(`${state.sentFirst.size} subject(s) are sent to volunteers first (they stay first until they retire). `,
    h("button", { type: "button", class: "link", onclick: async () => {
      await api.request("DELETE", "send-first/");
      await loadSentFirst();
    } }, "Withdraw all"));
}

function questionRow(q: Question): HTMLElement {
  const cv = q.metrics.cross_validation;
  const counts = Object.entries(q.metrics.counts ?? {}).map(([a, n]) => `${a} ${n}`).join(", ");
  const status = h("span", { class: "muted" });
  const csvText = h("textarea", { rows: 3, cols: 40, placeholder: "external_id,answer" });
  return h("div", { class: "question", "data-testid": "question" },
    h("h3", {}, q.name, " ", h("span", { class: "muted" }, `(${q.answers.join(" / ")})`)),
    h("p", {}, `${q.n_labels} labels${counts ? ` (${counts})` : ""}. `,
      q.fitted_at ? (cv?.accuracy != null ? `Cross-validated accuracy ${(cv.accuracy * 100).toFixed(1)}% ± ${((cv.standard_error ?? 0) * 100).toFixed(1)} (${cv.folds} folds).` : "Fitted.") : "Not fitted yet.",
      q.stale ? " Fitted on older embeddings: fit again." : ""),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: async () => {
        const r = await api.request("POST", `questions/${q.id}/fit/`);
        if (r.status === 200) await loadQuestions(); else say(status, errorText(r.body, r.status), true);
      } }, "Fit the head"),
      q.fitted_at ? h("a", { class: "button-link", href: api.url(`questions/${q.id}/ranking.csv`) }, "Download the ranking (CSV)") : null,
      status),
    h("details", {}, h("summary", {}, "Import labels (CSV)"), csvText, h("button", { type: "button", onclick: async () => {
      const r = await api.request("POST", `questions/${q.id}/labels/`, { csv: csvText.value });
      if (r.status === 200) await loadQuestions(); else say(status, errorText(r.body, r.status), true);
    } }, "Import")),
  );
}

async function loadQuestions(): Promise<void> {
  const r = await api.request<{ questions: Question[] }>("GET", "questions/");
  state.questions = r.body?.questions ?? [];
  const box = part("questions");
  clear(box);
  for (const q of state.questions) box.append(questionRow(q));
  const name = h("input", { type: "text", placeholder: "name, e.g. ring", "aria-label": "new question's name" });
  const answers = h("input", { type: "text", placeholder: "answers, e.g. no ring, ring", "aria-label": "new question's answers" });
  const message = h("span", { class: "muted" });
  box.append(h("form", { class: "actions", onsubmit: async (e: Event) => {
    e.preventDefault();
    const r = await api.request("POST", "questions/", { name: name.value, answers: answers.value.split(",").map((a) => a.trim()).filter(Boolean) });
    if (r.status === 201) await loadQuestions(); else say(message, errorText(r.body, r.status), true);
  } }, name, answers, h("button", { type: "submit" }, "New question"), message));
  renderSelection();
}

async function start(): Promise<void> {
  const spaces = await api.request<{ spaces: Array<Space & { current: boolean; state: string }> }>("GET", "spaces/");
  const current = spaces.body?.spaces.find((sp) => sp.current);
  const building = spaces.body?.spaces.find((sp) => sp.state === "building");
  say(part("space"), current
    ? `Embeddings of the ${current.label}: ${current.n_subjects} subjects${current.built_at ? `, built ${current.built_at.slice(0, 19).replace("T", " ")} UTC` : ""}.${building ? " New ones are being built." : ""}`
    : "No embeddings yet: they are built on the ml worker when a model version is promoted (or the trunk is pretrained).");
  anomalyControls();
  mapControls();
  await loadSentFirst();
  await loadQuestions();
  if (!current) return;
  await Promise.all([searchSimilar(), loadAnomalies()]);
  if (!state.examples.length) await drawMap();  // else the search drew it, with the examples ringed
}

if (root) void start();
