/**
 * The task-tree editor of the project builder: one card per task (type, question or instruction,
 * help, answers with their branches, rectangle tools with min/max marks), the first task, and the
 * tree as JSON. Text edits change the tree as typed; structural edits redraw the cards. Every change
 * is reported through `onChange`, which checks the tree on the server and refreshes the preview.
 */

import type { Task, TaskTree } from "./tasks";
import { clear, el } from "./builder_dom";
import {
  TASK_TYPES, addAnswer, addTask, addTool, changeType, prompt, removeAnswer, removeTask, removeTool, setNext,
  setToolLimit, taskKeys, unreachable, type TaskType,
} from "./builder_tree";

export class TreeEditor {
  readonly tree: TaskTree;
  private readonly root: HTMLElement;
  private readonly onChange: () => void;
  private readonly editable: boolean;
  private json: HTMLTextAreaElement | null = null;

  constructor(root: HTMLElement, tree: TaskTree, onChange: () => void, editable = true) {
    this.root = root;
    this.tree = tree;
    this.onChange = onChange;
    this.editable = editable;
    this.render();
  }

  private changed(redraw: boolean): void {
    if (redraw) this.render();
    else if (this.json) this.json.value = JSON.stringify(this.tree, null, 2);
    this.onChange();
  }

  render(): void {
    const focused = document.activeElement instanceof HTMLElement && this.root.contains(document.activeElement) ? document.activeElement.dataset.testid : undefined;
    clear(this.root);
    const keys = taskKeys(this.tree);
    const first = this.select("first-task", "The classification starts with", keys.map((k) => [k, `${k}: ${short(prompt(this.tree.tasks[k]))}`]), this.tree.first_task, (value) => {
      this.tree.first_task = value;
      this.changed(true);
    });
    const adders = el("div", { class: "tree-adders", role: "group", "aria-label": "Add a task" });
    for (const { type, label } of TASK_TYPES) {
      adders.append(this.button(`Add: ${label.toLowerCase()}`, `add-${type}`, () => {
        addTask(this.tree, type);
        this.changed(true);
      }));
    }
    const cards = el("ol", { class: "task-cards" });
    for (const key of keys) cards.append(this.card(key));
    const lost = unreachable(this.tree);
    this.json = el("textarea", { class: "tree-json", rows: 12, readonly: true, "aria-label": "The tree as JSON", "data-testid": "tree-json" });
    this.json.value = JSON.stringify(this.tree, null, 2);
    this.root.append(el("div", { class: "tree-start" }, first), cards);
    if (lost.length) this.root.append(el("p", { class: "muted", "data-testid": "unreachable" }, `Never asked (no answer leads there): ${lost.join(", ")}.`));
    if (this.editable) this.root.append(adders);
    this.root.append(el("details", { class: "tree-json-box" }, el("summary", {}, "The tree as JSON"), this.json));
    if (!this.editable) for (const control of this.root.querySelectorAll<HTMLInputElement>("input, textarea, select, button")) control.disabled = true;
    if (focused) this.root.querySelector<HTMLElement>(`[data-testid="${focused}"]`)?.focus();
  }

  private card(key: string): HTMLElement {
    const task = this.tree.tasks[key];
    const others = taskKeys(this.tree).filter((k) => k !== key);
    const nextChoices: Array<[string, string]> = [["", "(end of the classification)"], ...others.map((k): [string, string] => [k, `${k}: ${short(prompt(this.tree.tasks[k]))}`])];
    const type = this.select(`${key}-type`, `Type of ${key}`, TASK_TYPES.map((t) => [t.type, t.label]), task.type, (value) => {
      changeType(this.tree, key, value as TaskType);
      this.changed(true);
    });
    const remove = this.button("Remove", `${key}-remove`, () => {
      removeTask(this.tree, key);
      this.changed(true);
    }, `Remove task ${key}`);
    remove.disabled = taskKeys(this.tree).length < 2;
    const text = this.textArea(`${key}-text`, task.type === "drawing" ? "Instruction" : "Question", prompt(task), (value) => {
      if (task.type === "drawing") task.instruction = value;
      else task.question = value;
    });
    const help = this.textArea(`${key}-help`, "Help (optional; Markdown, shown under the task)", task.help ?? "", (value) => {
      if (value) task.help = value;
      else delete task.help;
    });
    const body = el("div", { class: "task-body" }, text, help);
    if (task.type === "drawing") body.append(this.tools(key, task));
    else body.append(this.answers(key, task, nextChoices));
    if (task.type !== "single") {
      body.append(this.select(`${key}-next`, "Then", nextChoices, task.next ?? "", (value) => {
        setNext(this.tree, key, value || null);
        this.changed(false);
      }));
    }
    return el(
      "li",
      { class: "task-card", "data-task": key, "data-testid": `task-${key}` },
      el("div", { class: "task-head" }, el("h3", {}, key), type, this.editable ? remove : null),
      body,
    );
  }

  private answers(key: string, task: Exclude<Task, { type: "drawing" }>, nextChoices: Array<[string, string]>): HTMLElement {
    const list = el("ol", { class: "answer-rows", "aria-label": `Answers of ${key}` });
    task.answers.forEach((answer, i) => {
      const label = this.input(`${key}-answer-${i}`, `${key} answer ${i + 1}`, answer.label, (value) => {
        answer.label = value;
      });
      const row = el("li", { class: "answer-row" }, label);
      if (task.type === "single") {
        row.append(this.select(`${key}-answer-${i}-next`, `After answer ${i + 1}`, nextChoices, answer.next ?? "", (value) => {
          setNext(this.tree, key, value || null, i);
          this.changed(false);
        }));
      }
      const remove = this.button("×", `${key}-answer-${i}-remove`, () => {
        removeAnswer(this.tree, key, i);
        this.changed(true);
      }, `Remove answer ${i + 1} of ${key}`);
      remove.disabled = task.answers.length <= 2;
      if (this.editable) row.append(remove);
      list.append(row);
    });
    const add = this.button("Add answer", `${key}-add-answer`, () => {
      addAnswer(this.tree, key);
      this.changed(true);
    });
    return el("fieldset", { class: "answers" }, el("legend", {}, task.type === "single" ? "Answers (one is chosen) and where each leads" : "Answers (any number may be chosen)"), list, this.editable ? add : null);
  }

  private tools(key: string, task: Extract<Task, { type: "drawing" }>): HTMLElement {
    const list = el("ol", { class: "tool-rows", "aria-label": `Tools of ${key}` });
    task.tools.forEach((tool, i) => {
      const row = el(
        "li",
        { class: "tool-row" },
        this.input(`${key}-tool-${i}`, `${key} tool ${i + 1} (rectangle)`, tool.label, (value) => {
          tool.label = value;
        }),
        this.input(`${key}-tool-${i}-min`, "Fewest marks", String(tool.min ?? 0), (value) => setToolLimit(tool, "min", value), "number"),
        this.input(`${key}-tool-${i}-max`, "Most marks", String(tool.max ?? 20), (value) => setToolLimit(tool, "max", value), "number"),
      );
      const remove = this.button("×", `${key}-tool-${i}-remove`, () => {
        removeTool(this.tree, key, i);
        this.changed(true);
      }, `Remove tool ${i + 1} of ${key}`);
      remove.disabled = task.tools.length <= 1;
      if (this.editable) row.append(remove);
      list.append(row);
    });
    const add = this.button("Add tool", `${key}-add-tool`, () => {
      addTool(this.tree, key);
      this.changed(true);
    });
    return el("fieldset", { class: "tools" }, el("legend", {}, "Rectangle tools, with the fewest and most marks a volunteer may draw"), list, this.editable ? add : null);
  }

  // ---- controls --------------------------------------------------------------------------------
  private input(id: string, label: string, value: string, set: (value: string) => void, type = "text"): HTMLElement {
    const input = el("input", { id: `tree-${id}`, type, value, "data-testid": id, ...(type === "number" ? { min: 0, step: 1, class: "narrow-number" } : {}) });
    input.addEventListener("input", () => {
      set(input.value);
      this.changed(false);
    });
    return el("label", { class: "field" }, el("span", {}, label), input);
  }

  private textArea(id: string, label: string, value: string, set: (value: string) => void): HTMLElement {
    const area = el("textarea", { id: `tree-${id}`, rows: 2, "data-testid": id });
    area.value = value;
    area.addEventListener("input", () => {
      set(area.value);
      this.changed(false);
    });
    return el("label", { class: "field" }, el("span", {}, label), area);
  }

  private select(id: string, label: string, options: Array<[string, string]>, value: string, set: (value: string) => void): HTMLElement {
    const select = el("select", { id: `tree-${id}`, "data-testid": id });
    for (const [optionValue, text] of options) select.append(el("option", { value: optionValue, selected: optionValue === value }, text));
    select.value = value;
    select.addEventListener("change", () => set(select.value));
    return el("label", { class: "field" }, el("span", {}, label), select);
  }

  private button(text: string, testid: string, onClick: () => void, label?: string): HTMLButtonElement {
    const button = el("button", { type: "button", "data-testid": testid, "aria-label": label ?? null }, text);
    button.addEventListener("click", (event) => {
      event.preventDefault();
      onClick();
    });
    return button;
  }
}

function short(text: string): string {
  const one = text.replace(/\s+/g, " ").trim();
  return one.length > 40 ? `${one.slice(0, 39)}…` : one;
}
