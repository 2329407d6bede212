// Downloads that need the bearer token. A plain <a href> cannot send an Authorization header (and the token must never
// go into a URL), so the file is fetched with the header, read chunk by chunk (for a progress figure), and handed to
// the browser as a Blob behind an object URL. The page holds the bytes until the Blob is built (browsers may then page
// it to disk): fine for adapters and small models; a multi-GB model archive is better fetched with curl.

import { ApiError, apiErrorFromBody, apiUrl, authHeaders, notifyUnauthorized, parseJson } from "./client";

export interface DownloadProgress {
  received: number;
  /** From Content-Length; 0 when the server streams without one. */
  total: number;
}

/** The file name a Content-Disposition header gives (RFC 6266: `filename*=UTF-8''...` wins over `filename=`). */
export function filenameFromDisposition(header: string | null): string | null {
  if (!header) return null;
  const extended = /filename\*\s*=\s*([^']*)'[^']*'([^;]+)/i.exec(header);
  if (extended) {
    try {
      return decodeURIComponent(extended[2].trim().replace(/^"|"$/g, ""));
    } catch {
      /* a malformed escape: fall back to the plain name */
    }
  }
  const plain = /filename\s*=\s*("([^"]*)"|[^;]+)/i.exec(header);
  if (!plain) return null;
  return (plain[2] ?? plain[1]).trim() || null;
}

/** Fetches an /api path with the token; the body as a Blob, the server's file name (or `fallbackName`). */
export async function fetchBlob(
  path: string,
  fallbackName: string,
  options: { onProgress?: (p: DownloadProgress) => void; signal?: AbortSignal } = {},
): Promise<{ blob: Blob; filename: string }> {
  let response: Response;
  try {
    response = await fetch(apiUrl(path), { headers: authHeaders(), signal: options.signal });
  } catch (err) {
    if ((err as Error)?.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", `network error: ${(err as Error)?.message ?? err}`);
  }
  if (!response.ok) {
    if (response.status === 401) notifyUnauthorized();
    throw apiErrorFromBody(response.status, response.statusText, parseJson(await response.text()));
  }
  const total = Number(response.headers.get("content-length") ?? 0) || 0;
  const type = response.headers.get("content-type") ?? "application/octet-stream";
  const chunks: BlobPart[] = [];
  let received = 0;
  const reader = response.body?.getReader();
  if (reader) {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value as Uint8Array<ArrayBuffer>);
      received += value.byteLength;
      options.onProgress?.({ received, total });
    }
  } else {
    const buffer = await response.arrayBuffer();
    chunks.push(buffer);
    received = buffer.byteLength;
    options.onProgress?.({ received, total });
  }
  const filename = filenameFromDisposition(response.headers.get("content-disposition")) ?? fallbackName;
  return { blob: new Blob(chunks, { type }), filename };
}

/** Hands a Blob to the browser's download manager under `filename`. */
export function saveBlob(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.rel = "noopener";
  a.style.display = "none";
  document.body.appendChild(a);
  a.click();
  a.remove();
  // Revoked later, not now: the browser reads the URL after the click returns.
  window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** fetchBlob + saveBlob: the file lands in the user's downloads. Resolves with the name it was saved under. */
export async function downloadWithToken(
  path: string,
  fallbackName: string,
  options: { onProgress?: (p: DownloadProgress) => void; signal?: AbortSignal } = {},
): Promise<string> {
  const { blob, filename } = await fetchBlob(path, fallbackName, options);
  saveBlob(blob, filename);
  return filename;
}
