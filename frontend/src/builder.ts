/**
 * Entry of the project builder's pages (builder.js): forms sent with fetch whose field errors (a
 * JSON 400) show next to their fields; on a workflow's page the task-tree editor, checked on the
 * server as it is edited, with the live preview (the volunteers' classifier in a sandboxed frame,
 * fed the tree: builder_frame.ts, builder_preview.ts), saving, the subject upload with its progress bar, launch and
 * pause.
 */

import "./builder.css";
import type { TaskTree } from "./tasks";
import { clear, csrfToken, el, flashNext, post, takeFlash } from "./builder_dom";
import { TreeEditor } from "./builder_editor";
import { previewDocument, type PreviewParts } from "./builder_frame";
import { cloneTree, describePlan, errorLines, type TreePlan } from "./builder_tree";
import { formatBytes, sendUpload, uploadProblems, type UploadLimits } from "./builder_upload";

interface Endpoints {
  check_tree: string;
  save_tree: string;
  upload: string;
  launch: string;
  pause: string;
}

function readJson<T>(id: string): T | null {
  const node = document.getElementById(id);
  return node?.textContent ? (JSON.parse(node.textContent) as T) : null;
}

/** Field errors into the form's `[data-error-for=field]` slots; the rest into `[data-error-for="*"]`. */
function showErrors(scope: Element, body: unknown): void {
  hideErrors(scope);
  const leftover: string[] = [];
  const errors = body && typeof body === "object" ? (body as Record<string, unknown>) : { detail: [String(body)] };
  for (const [field, messages] of Object.entries(errors)) {
    const slot = scope.querySelector<HTMLElement>(`[data-error-for="${CSS.escape(field)}"]`);
    const text = (Array.isArray(messages) ? messages : [messages]).map(String).join("; ");
    if (slot) {
      slot.textContent = text;
      slot.hidden = false;
    } else leftover.push(...errorLines({ [field]: messages }));
  }
  const rest = scope.querySelector<HTMLElement>('[data-error-for="*"]');
  if (rest && leftover.length) {
    rest.textContent = leftover.join("; ");
    rest.hidden = false;
  }
}

function hideErrors(scope: Element): void {
  for (const slot of scope.querySelectorAll<HTMLElement>("[data-error-for]")) {
    slot.hidden = true;
    slot.textContent = "";
  }
}

function successText(body: unknown): string {
  const data = (body ?? {}) as Record<string, unknown>;
  if (typeof data.retired_now === "number") return `Saved; the log was re-aggregated: ${data.retired_now} subject(s) retired by the new rules.`;
  return "Saved.";
}

function wireForms(): void {
  for (const form of document.querySelectorAll<HTMLFormElement>("form[data-builder-form]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector<HTMLButtonElement>("button[type=submit]");
      if (button) button.disabled = true;
      const reply = await post(form.action, new FormData(form));
      if (button) button.disabled = false;
      const status = form.querySelector<HTMLElement>("[data-form-status]");
      if (reply.status >= 200 && reply.status < 300) {
        hideErrors(form);
        const url = (reply.body as { url?: string } | null)?.url;
        if (url) window.location.assign(url);
        else if (status) status.textContent = successText(reply.body);
      } else {
        if (status) status.textContent = "Nothing was changed.";
        showErrors(form, reply.body);
      }
    });
  }
  for (const form of document.querySelectorAll<HTMLFormElement>("form[data-retirement-form]")) {
    const sync = () => {
      const scope = form.querySelector<HTMLInputElement>("input[name=scope]:checked")?.value ?? "workflow";
      for (const fieldset of form.querySelectorAll<HTMLFieldSetElement>("fieldset[data-scope]")) fieldset.hidden = fieldset.dataset.scope !== scope;
    };
    form.addEventListener("change", sync);
    sync();
  }
}

async function text(url: string): Promise<string> {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.text();
}

class Preview {
  private readonly frame: HTMLIFrameElement;
  private readonly parts: Promise<PreviewParts | null>;
  private readonly status: HTMLElement | null;
  private readonly output: HTMLElement | null;
  private pending: TaskTree | null = null;
  private shown = "";
  private loads = 0;

  constructor(frame: HTMLIFrameElement, urls: { css: string; preview: string; classifier: string }, private readonly name: string, private readonly subjects: unknown[]) {
    this.frame = frame;
    this.status = document.querySelector("[data-testid=preview-status]");
    this.output = document.querySelector("[data-testid=preview-output]");
    this.parts = Promise.all([text(urls.css), text(urls.preview), text(urls.classifier)])
      .then(([css, preview, classifier]) => ({ css, preview, classifier }))
      .catch(() => {
        if (this.status) this.status.textContent = "The preview could not load the classifier; reload the page to try again.";
        return null;
      });
    window.addEventListener("message", (event) => {
      if (event.source !== this.frame.contentWindow) return;
      const message = event.data as { source?: string; type?: string; annotations?: unknown };
      if (message?.source !== "chorus-preview") return;
      if (message.type === "ready" && this.pending) {
        this.frame.contentWindow?.postMessage({ source: "chorus-builder", type: "tree", tree: this.pending, name: this.name, subjects: this.subjects }, "*");
        delete this.frame.dataset.loading; // the document of the latest tree is there
      } else if (message.type === "classification" && this.output) {
        this.output.textContent = JSON.stringify(message.annotations, null, 1);
        this.frame.dataset.submitted = String(Number(this.frame.dataset.submitted ?? "0") + 1);
      }
    });
  }

  /** Shows the tree in a fresh classifier (a fresh document: nothing of the last tree's walk remains). */
  async show(tree: TaskTree): Promise<void> {
    const json = JSON.stringify(tree);
    if (json === this.shown) return;
    this.shown = json;
    this.pending = cloneTree(tree);
    this.frame.dataset.loading = "true";
    const parts = await this.parts;
    if (!parts || json !== this.shown) return;
    this.loads++;
    this.frame.dataset.loads = String(this.loads);
    this.frame.srcdoc = previewDocument(parts);
    if (this.status) this.status.textContent = "The preview shows the tree as it is now.";
  }

  stale(reason: string): void {
    if (this.status) this.status.textContent = `The preview shows the last valid tree: ${reason}`;
  }
}

function startWorkflowPage(root: HTMLElement): void {
  const endpoints = readJson<Endpoints>("builder-endpoints")!;
  const tree = readJson<TaskTree>("builder-tree")!;
  const editable = root.dataset.editable !== "false";
  const editorRoot = document.getElementById("tree-editor")!;
  const frame = root.querySelector<HTMLIFrameElement>("iframe.preview-frame")!;
  const urls = { css: root.dataset.classifierCss!, preview: root.dataset.previewJs!, classifier: root.dataset.classifierJs! };
  const preview = new Preview(frame, urls, readJson<string>("builder-workflow-name") ?? "Preview", readJson<unknown[]>("builder-preview-subjects") ?? []);
  const problems = el("div", { class: "form-error tree-problems", role: "alert", "data-testid": "tree-errors", hidden: true });
  const plan = el("p", { class: "muted", role: "status", "data-testid": "tree-plan" });
  const save = el("button", { type: "button", class: "primary", "data-testid": "save-tree" }, "Save the tasks");
  save.disabled = true;
  let timer = 0;
  let checked = 0;
  let lastPlan: TreePlan | null = null;

  const check = async () => {
    const mine = ++checked;
    const reply = await post(endpoints.check_tree, { tasks: editor.tree });
    if (mine !== checked) return; // a later edit is being checked
    root.dataset.treeChecked = String(mine);
    if (reply.status === 200) {
      problems.hidden = true;
      const result = reply.body as TreePlan;
      lastPlan = result;
      plan.textContent = describePlan(result);
      save.disabled = !editable || result.change === "none";
      void preview.show(editor.tree);
    } else {
      save.disabled = true;
      plan.textContent = "";
      listInto(problems, errorLines(reply.body));
      preview.stale("fix the problems above to see the new one.");
    }
  };
  const editor = new TreeEditor(editorRoot, cloneTree(tree), () => {
    save.disabled = true;
    window.clearTimeout(timer);
    timer = window.setTimeout(() => void check(), 350);
  }, editable);
  editorRoot.after(problems, el("div", { class: "tree-save" }, editable ? save : null, plan));

  save.addEventListener("click", async () => {
    if (lastPlan?.new_workflow && !window.confirm(`${describePlan(lastPlan)} Save?`)) return;
    save.disabled = true;
    const reply = await post(endpoints.save_tree, { tasks: editor.tree });
    if (reply.status === 200) {
      const saved = reply.body as { version: string; new_workflow: boolean; url: string; change: string };
      flashNext(saved.new_workflow
        ? `Saved as version ${saved.version}, a new workflow with the same settings and subjects; the earlier version is paused and keeps its classifications.`
        : `Saved as version ${saved.version}.`);
      window.location.assign(saved.url);
    } else {
      listInto(problems, errorLines(reply.body));
    }
  });
  if (editable) void check();
  else void preview.show(editor.tree); // a replaced version: its own tree, not editable

  const upload = root.querySelector<HTMLFormElement>("#upload-form");
  if (upload) {
    const limits: UploadLimits = {
      maxFileBytes: Number(root.dataset.maxFileBytes),
      maxTotalBytes: Number(root.dataset.maxTotalBytes),
      maxFiles: Number(root.dataset.maxFiles),
    };
    wireUpload(upload, endpoints.upload, limits);
  }
  for (const button of root.querySelectorAll<HTMLButtonElement>("button[data-action]")) {
    button.addEventListener("click", async () => {
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      button.disabled = true;
      const action = button.dataset.action as "launch" | "pause";
      const reply = await post(endpoints[action], {});
      button.disabled = false;
      if (reply.status === 200) {
        flashNext(action === "launch" ? "Launched: volunteers are served its subjects." : "Paused: no subjects are served.");
        window.location.reload();
      } else showErrors(document.getElementById("action-errors") ?? root, reply.body);
    });
  }
}

function listInto(box: HTMLElement, lines: string[]): void {
  clear(box);
  box.append(el("p", {}, "Not saved:"), el("ul", {}, ...lines.map((line) => el("li", {}, line))));
  box.hidden = false;
}

function wireUpload(form: HTMLFormElement, url: string, limits: UploadLimits): void {
  const progress = form.querySelector<HTMLProgressElement>("progress")!;
  const status = form.querySelector<HTMLElement>("[data-testid=upload-status]")!;
  const errors = form.querySelector<HTMLElement>("[data-testid=upload-errors]")!;
  const imagesInput = form.querySelector<HTMLInputElement>("#images")!;
  const manifestInput = form.querySelector<HTMLInputElement>("#manifest")!;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    hideErrors(form);
    errors.hidden = true;
    const images = [...(imagesInput.files ?? [])];
    const manifest = manifestInput.files?.[0] ?? null;
    const before = uploadProblems(images, manifest, limits);
    if (before.length) {
      listInto(errors, before);
      status.textContent = "Nothing was sent.";
      return;
    }
    const button = form.querySelector<HTMLButtonElement>("button[type=submit]")!;
    button.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    const total = images.reduce((sum, file) => sum + file.size, 0);
    status.textContent = `Sending ${images.length} image(s), ${formatBytes(total)}…`;
    const reply = await sendUpload(url, new FormData(form), csrfToken(), (sent, size) => {
      progress.value = Math.round((100 * sent) / Math.max(size, 1));
      status.textContent = sent >= size ? "Sent; checking every line and image…" : `Sending: ${formatBytes(sent)} of ${formatBytes(size)}`;
    });
    button.disabled = false;
    if (reply.status === 201) {
      const body = reply.body as { created: number; gold: number; subject_set: { name: string } };
      flashNext(`${body.created} subject(s) added to “${body.subject_set.name}” (${body.gold} with gold answers).`);
      window.location.reload();
      return;
    }
    progress.hidden = true;
    status.textContent = "Nothing was stored.";
    showErrors(form, reply.body);
    listInto(errors, errorLines(reply.body));
  });
}

function start(): void {
  const flash = takeFlash();
  const statusLine = document.querySelector<HTMLElement>("[data-testid=action-status]");
  if (flash && statusLine) statusLine.textContent = flash;
  wireForms();
  const page = document.getElementById("workflow-builder");
  if (page) startWorkflowPage(page);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start, { once: true });
else start();
