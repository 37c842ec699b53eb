/**
 * Entry of the builder's live preview, run inside a sandboxed frame (no allow-same-origin: an origin
 * of its own, no access to the scientist's session, cookies, storage or the real API) just before the
 * volunteers' classifier bundle, which it does not change (builder_frame.ts writes the frame): it
 * answers the classifier's API calls in the page.
 * The builder posts it the tree being edited, the workflow's name and a few of its subjects; the
 * session, the workflow and an endless queue of those subjects come from them, and a submitted
 * classification goes back to the builder (to show) instead of the server. Nothing is stored.
 *
 * The classifier's storage (its outbox, the tutorial's "seen") is kept in memory here: a sandboxed
 * page may not use localStorage, and nothing of a preview must outlive it. Imports types only, so
 * that no module is shared with the classifier bundle.
 */

import type { TaskTree } from "./tasks";

interface PreviewSubject {
  id: number;
  images: Array<{ url: string; width?: number; height?: number }>;
  metadata: Record<string, unknown>;
  retired: boolean;
}

interface PreviewData {
  tree: TaskTree;
  name: string;
  subjects: PreviewSubject[];
}

const PLACEHOLDER: PreviewSubject = {
  id: 0,
  retired: false,
  metadata: {},
  images: [{
    url: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(
      '<svg xmlns="http://www.w3.org/2000/svg" width="480" height="360" viewBox="0 0 480 360">' +
        '<rect width="480" height="360" fill="#1c2536"/><circle cx="240" cy="180" r="70" fill="#3c4a6b"/>' +
        '<text x="240" y="330" fill="#a9b4c8" font-family="sans-serif" font-size="20" text-anchor="middle">Your subject image here</text></svg>',
    ),
    width: 480,
    height: 360,
  }],
};

function memoryStorage(initial: Record<string, string>): Storage {
  const items = new Map(Object.entries(initial));
  return {
    get length() {
      return items.size;
    },
    clear: () => items.clear(),
    getItem: (key) => items.get(key) ?? null,
    key: (index) => [...items.keys()][index] ?? null,
    removeItem: (key) => void items.delete(key),
    setItem: (key, value) => void items.set(key, String(value)),
  };
}

let resolveData: (data: PreviewData) => void = () => undefined;
const data = new Promise<PreviewData>((resolve) => {
  resolveData = resolve;
});
let served = 0;

function reply(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

async function answer(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  // The frame's own address is about:srcdoc, no base for a path: any fixed one will do.
  const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url, "https://preview.invalid/");
  const path = url.pathname.replace(/^.*\/preview-api\//, "");
  const preview = await data;
  if (path === "session/") return reply({ volunteer: { id: 1, username: null, is_anonymous: true, classification_count: 0 } });
  if (/^workflows\/\d+\/$/.test(path)) {
    return reply({ id: 1, name: preview.name, project: "preview", tasks: preview.tree, active: true, gold_feedback_rate: 0, field_guide: [], tutorial: [] });
  }
  if (/^workflows\/\d+\/next-subjects\/$/.test(path)) {
    const count = Math.max(1, Math.min(20, Number(url.searchParams.get("count")) || 5));
    const pool = preview.subjects.length ? preview.subjects : [PLACEHOLDER];
    const subjects = Array.from({ length: count }, () => {
      const subject = pool[served % pool.length];
      served++;
      return { ...subject, id: served };
    });
    return reply({ subjects, finished: false });
  }
  if (path === "classifications/" && init?.method === "POST") {
    const payload = JSON.parse(String(init.body ?? "{}")) as { annotations?: unknown; idempotency_key?: string; subject?: number };
    window.parent.postMessage({ source: "chorus-preview", type: "classification", annotations: payload.annotations, subject: payload.subject }, "*");
    return reply({ id: served, idempotency_key: payload.idempotency_key ?? "preview", counts: true, already_seen: false, subject_retired: false, gold: null }, 201);
  }
  return reply({ detail: "not in the preview" }, 404);
}

Object.defineProperty(window, "localStorage", { value: memoryStorage({ "chorus:tutorial-seen:1": "1" }), configurable: true });
Object.defineProperty(document, "cookie", { get: () => "", set: () => undefined, configurable: true });
window.fetch = answer as typeof window.fetch;
window.addEventListener("message", (event) => {
  const message = event.data as { source?: string; type?: string } & Partial<PreviewData>;
  if (event.source !== window.parent || message?.source !== "chorus-builder" || message.type !== "tree" || !message.tree) return;
  resolveData({ tree: message.tree, name: message.name ?? "Preview", subjects: message.subjects ?? [] });
});
window.parent.postMessage({ source: "chorus-preview", type: "ready" }, "*");
