/**
 * The project builder's task-tree model: the edits the tree editor makes (add, remove and retype
 * tasks, answers and tools, branch by answer), applied in place to a tree of the shape the volunteer
 * classifier reads (tasks.ts; validated on the server by projects/task_tree.py). Pure, no DOM.
 * Keys a task may carry that the editor does not show (mirror_swaps, examples) are kept.
 */

import type { Answer, DrawingTask, RectangleTool, SingleTask, Task, TaskTree } from "./tasks";

export type TaskType = Task["type"];

export const TASK_TYPES: Array<{ type: TaskType; label: string }> = [
  { type: "single", label: "Question, one answer" },
  { type: "multiple", label: "Question, several answers" },
  { type: "drawing", label: "Drawing (rectangles)" },
];

/** A task as edited: the classifier's shape plus whatever else the workflow stored on it. */
export type EditedTask = Task & Record<string, unknown>;

export function cloneTree(tree: TaskTree): TaskTree {
  return JSON.parse(JSON.stringify(tree)) as TaskTree;
}

export function taskKeys(tree: TaskTree): string[] {
  return Object.keys(tree.tasks);
}

/** The first free key of the form T<n>. */
export function newTaskKey(tree: TaskTree): string {
  for (let n = 0; ; n++) if (!(`T${n}` in tree.tasks)) return `T${n}`;
}

export function blankTask(type: TaskType): Task {
  if (type === "drawing") return { type, instruction: "Draw a box around each…", tools: [{ type: "rectangle", label: "Object", min: 0, max: 10 }], next: null };
  const answers: Answer[] = [{ label: "Yes" }, { label: "No" }];
  return type === "single" ? { type, question: "New question", answers } : { type, question: "New question", answers, next: null };
}

/** Adds a task at the end; returns its key. An empty tree starts with it. */
export function addTask(tree: TaskTree, type: TaskType): string {
  const key = newTaskKey(tree);
  tree.tasks[key] = blankTask(type);
  if (!(tree.first_task in tree.tasks) || Object.keys(tree.tasks).length === 1) tree.first_task = key;
  return key;
}

/** Every branch that led to a removed task ends there instead; the first task moves to the next one. */
export function removeTask(tree: TaskTree, key: string): void {
  delete tree.tasks[key];
  for (const task of Object.values(tree.tasks)) {
    if (task.type === "single") {
      for (const answer of task.answers) if (answer.next === key) answer.next = null;
    } else if (task.next === key) task.next = null;
  }
  if (tree.first_task === key) tree.first_task = taskKeys(tree)[0] ?? "";
}

export function prompt(task: Task): string {
  return task.type === "drawing" ? task.instruction : task.question;
}

/** Retypes a task, keeping what carries over: the wording, the help, the answers between the two
 * kinds of question (one-answer branches become the one next of a several-answer question: the first
 * branch set; the other way every answer takes that next), the next task. */
export function changeType(tree: TaskTree, key: string, type: TaskType): void {
  const old = tree.tasks[key] as EditedTask;
  if (!old || old.type === type) return;
  const text = prompt(old);
  const next = old.type === "single" ? (old.answers.find((a) => a.next)?.next ?? null) : (old.next ?? null);
  const answers = (old.type === "drawing" ? (blankTask("single") as SingleTask).answers : old.answers).map(withoutNext);
  let task: EditedTask;
  if (type === "drawing") task = { ...(blankTask("drawing") as DrawingTask), instruction: text, next };
  else if (type === "single") task = { type, question: text, answers: answers.map((a) => ({ ...a, next })) };
  else task = { type, question: text, answers, next };
  if (old.help) task.help = old.help;
  if (type !== "drawing" && old.type !== "drawing" && old.mirror_swaps !== undefined) task.mirror_swaps = old.mirror_swaps;
  tree.tasks[key] = task;
}

function withoutNext(answer: Answer): Answer {
  const copy = { ...answer };
  delete copy.next;
  return copy;
}

export function addAnswer(tree: TaskTree, key: string): void {
  const task = tree.tasks[key];
  if (task?.type === "drawing" || !task) return;
  task.answers.push({ label: `Answer ${task.answers.length + 1}` });
}

/** Removes an answer; mirror swaps naming it go, the later answers' indices in the others move down. */
export function removeAnswer(tree: TaskTree, key: string, index: number): void {
  const task = tree.tasks[key] as EditedTask;
  if (!task || task.type === "drawing") return;
  task.answers.splice(index, 1);
  const swaps = task.mirror_swaps;
  if (Array.isArray(swaps)) {
    task.mirror_swaps = swaps
      .filter((pair) => Array.isArray(pair) && !pair.includes(index))
      .map((pair) => (pair as number[]).map((i) => (i > index ? i - 1 : i)));
  }
}

export function addTool(tree: TaskTree, key: string): void {
  const task = tree.tasks[key];
  if (task?.type !== "drawing") return;
  task.tools.push({ type: "rectangle", label: `Tool ${task.tools.length + 1}`, min: 0, max: 10 });
}

export function removeTool(tree: TaskTree, key: string, index: number): void {
  const task = tree.tasks[key];
  if (task?.type === "drawing") task.tools.splice(index, 1);
}

/** Sets where the classification goes after a task (after one of its answers for a one-answer question). */
export function setNext(tree: TaskTree, key: string, next: string | null, answer?: number): void {
  const task = tree.tasks[key];
  if (!task) return;
  const target = next && next in tree.tasks && next !== key ? next : null;
  if (task.type === "single") {
    if (answer === undefined) for (const a of task.answers) a.next = target;
    else if (task.answers[answer]) task.answers[answer].next = target;
  } else task.next = target;
}

/** A mark limit as typed: a whole number, or the text itself for the server to refuse with its message. */
export function markLimit(text: string): number | string {
  return /^\s*\d+\s*$/.test(text) ? Number(text) : text;
}

export function setToolLimit(tool: RectangleTool, which: "min" | "max", text: string): void {
  (tool as unknown as Record<string, unknown>)[which] = markLimit(text);
}

/** The tasks no path from the first task reaches (they would never be asked). */
export function unreachable(tree: TaskTree): string[] {
  const seen = new Set<string>();
  const stack = tree.first_task in tree.tasks ? [tree.first_task] : [];
  while (stack.length) {
    const key = stack.pop()!;
    if (seen.has(key)) continue;
    seen.add(key);
    const task = tree.tasks[key];
    const nexts = task.type === "single" ? task.answers.map((a) => a.next) : [task.next];
    for (const next of nexts) if (next && next in tree.tasks && !seen.has(next)) stack.push(next);
  }
  return taskKeys(tree).filter((key) => !seen.has(key));
}

export interface TreePlan {
  change: "none" | "minor" | "major";
  new_workflow: boolean;
  version: string;
}

/** What saving would do, for the scientist, from the server's plan (projects/versioning.py). */
export function describePlan(plan: TreePlan): string {
  if (plan.change === "none") return "No change to save.";
  if (plan.new_workflow) {
    return `Saving makes version ${plan.version} as a new workflow (what answers mean changes and this one has been launched); this one is paused and keeps its classifications.`;
  }
  return `Saving makes version ${plan.version} (${plan.change === "major" ? "a major change, in place: nothing is classified yet" : "a minor change: help, limits or swaps"}).`;
}

/** Field errors of a JSON 400 as lines of text ("tasks: task T1: question text is required"). */
export function errorLines(body: unknown): string[] {
  if (body === null || typeof body !== "object") return [typeof body === "string" ? body : "The server refused this."];
  const lines: string[] = [];
  for (const [field, messages] of Object.entries(body as Record<string, unknown>)) {
    const list = Array.isArray(messages) ? messages : [messages];
    for (const message of list) lines.push(field === "detail" ? String(message) : `${field}: ${typeof message === "string" ? message : JSON.stringify(message)}`);
  }
  return lines;
}
