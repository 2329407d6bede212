// Dataset upload with progress. fetch() cannot report how much of a request body has been sent, XMLHttpRequest can
// (xhr.upload.onprogress), so the upload uses XHR; errors become the same ApiError as every other call.

import { ApiError, apiErrorFromBody, apiUrl, authHeaders, notifyUnauthorized, parseJson } from "./client";
import type { Dataset } from "./types";

export interface UploadProgress {
  /** Bytes of the request body sent so far. */
  sent: number;
  /** The whole request body (the file plus the multipart framing); 0 while the browser does not know it. */
  total: number;
}

export interface UploadOptions {
  onProgress?: (progress: UploadProgress) => void;
  signal?: AbortSignal;
}

/**
 * The multipart body: `type` first, then `file`. The order matters: the gateway streams the file while it arrives and
 * validates each row by the type's rules, so it must know the type before the first byte of the file.
 */
export function datasetForm(type: string, file: Blob, fileName?: string): FormData {
  const form = new FormData();
  form.append("type", type);
  form.append("file", file, fileName ?? (file instanceof File ? file.name : "dataset.jsonl"));
  return form;
}

/** POST /api/finetune/datasets; resolves with the stored dataset (201), rejects with an ApiError. */
export function uploadDataset(type: string, file: File, options: UploadOptions = {}): Promise<Dataset> {
  const { onProgress, signal } = options;
  return new Promise<Dataset>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new DOMException("aborted", "AbortError"));
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl("/finetune/datasets"));
    xhr.setRequestHeader("Accept", "application/json");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => onProgress?.({ sent: e.loaded, total: e.lengthComputable ? e.total : 0 });
    const onAbort = () => xhr.abort();
    signal?.addEventListener("abort", onAbort);
    const done = () => signal?.removeEventListener("abort", onAbort);
    xhr.onload = () => {
      done();
      const data = parseJson(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(data as Dataset);
        return;
      }
      if (xhr.status === 401) notifyUnauthorized();
      reject(apiErrorFromBody(xhr.status, xhr.statusText, data));
    };
    xhr.onerror = () => {
      done();
      // A server that refuses the upload early (e.g. over the size limit) may close the connection before the
      // browser has sent everything: the browser then reports a network error, not the answer.
      reject(new ApiError(0, "network_error", "network error: the upload was interrupted"));
    };
    xhr.onabort = () => {
      done();
      reject(new DOMException("aborted", "AbortError"));
    };
    xhr.send(datasetForm(type, file));
  });
}
