/**
 * The workflow admin page works without JavaScript (plain forms); this adds confirmation of the
 * actions that change the loop (data-confirm), checks JSON fields before they are sent, and in the
 * retirement form shows only the chosen scope's fields and turns off the bar of a task that is not
 * required (the server ignores the other scope's fields and rejects a bar for a task not required).
 */

function jsonObjectProblem(text: string): string | null {
  if (!text.trim()) return null;
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? null : "must be a JSON object";
  } catch (error) {
    return `not valid JSON (${(error as Error).message})`;
  }
}

function syncRetirementForm(form: HTMLFormElement): void {
  const scope = form.querySelector<HTMLInputElement>("input[name=scope]:checked")?.value ?? "workflow";
  for (const fieldset of form.querySelectorAll<HTMLFieldSetElement>("fieldset[data-scope]")) {
    fieldset.hidden = fieldset.dataset.scope !== scope;
  }
  for (const row of form.querySelectorAll<HTMLTableRowElement>("tr[data-task]")) {
    const required = row.querySelector<HTMLInputElement>("input[name=required]");
    const bar = row.querySelector<HTMLInputElement>(`input[name="bar.${row.dataset.task}"]`);
    if (required && bar) bar.disabled = !required.checked;
  }
}

function start(): void {
  for (const form of document.querySelectorAll<HTMLFormElement>("form[data-retirement-form]")) {
    form.addEventListener("change", () => syncRetirementForm(form));
    syncRetirementForm(form);
  }
  for (const form of document.querySelectorAll<HTMLFormElement>("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm ?? "Are you sure?")) event.preventDefault();
    });
  }
  for (const field of document.querySelectorAll<HTMLTextAreaElement>("textarea[data-json-object]")) {
    const message = document.querySelector<HTMLElement>(`.field-error[data-for="${field.name}"]`);
    const check = (): boolean => {
      const problem = jsonObjectProblem(field.value);
      field.setCustomValidity(problem ?? "");
      if (message) {
        message.textContent = problem ?? "";
        message.hidden = !problem;
      }
      return !problem;
    };
    field.addEventListener("input", check);
    field.form?.addEventListener("submit", (event) => {
      if (!check()) event.preventDefault();
    }, { capture: true });
  }
}

if (typeof document !== "undefined") start(); // not under unit tests (node)
