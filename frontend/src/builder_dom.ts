/**
 * The builder's element helper and its calls to the builder's JSON endpoints (CSRF from the cookie).
 * Its own, not dom.ts/api.ts: a module shared with the classifier would become a chunk that the
 * volunteers' page loads as one more request; the classifier bundle stays as it is.
 */

type Attrs = Record<string, string | number | boolean | null | undefined>;
type Child = Node | string | null | undefined | false;

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "value" && "value" in node) (node as HTMLInputElement).value = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

export function clear(node: Element): void {
  while (node.firstChild) node.removeChild(node.firstChild);
}

export function csrfToken(): string {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "csrftoken") return decodeURIComponent(rest.join("="));
  }
  return document.querySelector<HTMLInputElement>("input[name=csrfmiddlewaretoken]")?.value ?? "";
}

export interface Reply {
  status: number;
  body: unknown;
}

/** POSTs JSON or a form; a network failure is status 0, never an exception. */
export async function post(url: string, body: FormData | object): Promise<Reply> {
  const form = body instanceof FormData;
  const headers: Record<string, string> = { Accept: "application/json", "X-CSRFToken": csrfToken() };
  if (!form) headers["Content-Type"] = "application/json";
  try {
    const response = await fetch(url, { method: "POST", headers, credentials: "same-origin", body: form ? body : JSON.stringify(body) });
    const text = await response.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = { detail: [`the server answered ${response.status}`] };
    }
    return { status: response.status, body: parsed };
  } catch {
    return { status: 0, body: { detail: ["no connection to the server"] } };
  }
}

const FLASH = "chorus:builder-flash";

/** A message shown once on the next page (after the reload that follows a saved change). */
export function flashNext(message: string): void {
  try {
    sessionStorage.setItem(FLASH, message);
  } catch {
    // Storage refused: the page still reloads with the change, without the message.
  }
}

export function takeFlash(): string | null {
  try {
    const message = sessionStorage.getItem(FLASH);
    sessionStorage.removeItem(FLASH);
    return message;
  } catch {
    return null;
  }
}
