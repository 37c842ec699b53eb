/**
 * The builder's subject upload: images and their manifest in one multipart request, sent with
 * XMLHttpRequest for its upload progress (fetch has none). The limits are checked here before a byte
 * is sent (the server checks them again, from the declared size, before reading the body); the
 * server judges the manifest and the images and stores all of them or nothing.
 */

export interface UploadLimits {
  maxFileBytes: number;
  maxTotalBytes: number;
  maxFiles: number;
}

export interface PickedFile {
  name: string;
  size: number;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} bytes`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** What stops an upload before it is sent (empty when nothing), in the server's words where it has them. */
export function uploadProblems(images: PickedFile[], manifest: PickedFile | null, limits: UploadLimits): string[] {
  const problems: string[] = [];
  if (!images.length) problems.push("images: choose at least one image");
  if (!manifest) problems.push("manifest: choose the manifest (CSV) that names each image");
  if (images.length > limits.maxFiles) problems.push(`images: ${images.length} files; at most ${limits.maxFiles} at once`);
  const seen = new Set<string>();
  for (const file of images) {
    if (seen.has(file.name)) problems.push(`images: ${file.name} is there twice`);
    seen.add(file.name);
    if (file.size > limits.maxFileBytes) problems.push(`images: ${file.name} is ${formatBytes(file.size)}; at most ${formatBytes(limits.maxFileBytes)} per file`);
  }
  const total = images.reduce((sum, file) => sum + file.size, 0) + (manifest?.size ?? 0);
  if (total > limits.maxTotalBytes) {
    problems.push(`images: the upload is ${formatBytes(total)}; at most ${formatBytes(limits.maxTotalBytes)} at once: send it in parts`);
  }
  return problems;
}

export interface UploadReply {
  status: number;
  body: unknown;
}

/** Sends the form; `onProgress(sent, total)` as the browser sends it. A network failure is status 0. */
export function sendUpload(url: string, data: FormData, csrfToken: string, onProgress: (sent: number, total: number) => void): Promise<UploadReply> {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.setRequestHeader("X-CSRFToken", csrfToken);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    request.addEventListener("load", () => {
      let body: unknown = null;
      try {
        body = request.responseText ? JSON.parse(request.responseText) : null;
      } catch {
        body = { detail: [`the server answered ${request.status}`] };
      }
      resolve({ status: request.status, body });
    });
    request.addEventListener("error", () => resolve({ status: 0, body: { detail: ["the upload was cut off (no connection, or refused by the server)"] } }));
    request.send(data);
  });
}
