/**
 * The document of the builder's live preview, written into a sandboxed frame's srcdoc: the
 * volunteers' classifier bundle (classifier.js and its CSS, as built, unchanged) preceded by
 * builder_preview.js, which answers its API calls. Inline, because a frame sandboxed without
 * allow-same-origin has an origin of its own, and module scripts fetched from there would need CORS
 * headers from whatever serves the static files. Pure.
 */

export interface PreviewParts {
  css: string;
  preview: string;
  classifier: string;
}

/** Text safe inside an inline <script> or <style>: it cannot close the element early. */
export function inlineSafe(text: string, tag: "script" | "style"): string {
  return text.replace(new RegExp(`</(${tag})`, "gi"), "<\\/$1").replace(/<!--/g, "<\\!--");
}

export function previewDocument(parts: PreviewParts): string {
  return [
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"color-scheme\" content=\"dark\">",
    `<title>Preview</title><style>${inlineSafe(parts.css, "style")}</style>`,
    // Module scripts, inline ones too, run in order once the document is parsed: the stand-in first.
    `<script type="module">${inlineSafe(parts.preview, "script")}</script>`,
    `<script type="module">${inlineSafe(parts.classifier, "script")}</script>`,
    "</head><body>",
    "<div id=\"chorus-classifier\" data-workflow-id=\"1\" data-api-root=\"/preview-api/\" data-csrf-cookie=\"csrftoken\" data-home-url=\"#\"><p>Loading the preview…</p></div>",
    "</body></html>",
  ].join("");
}
