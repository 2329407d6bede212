// The upload form: the progress bar follows the bytes sent; a refused file shows the line and field.
import { act, fireEvent, screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { installFakeXhr } from "../test/fakeXhr";
import { renderWithI18n } from "../test/render";
import { DatasetUpload } from "./DatasetUpload";

afterEach(() => vi.unstubAllGlobals());

function chooseFile(name = "train.jsonl", text = '{"a": 1}\n') {
  const file = new File([text], name, { type: "application/jsonl" });
  fireEvent.change(screen.getByTestId("upload-file"), { target: { files: [file] } });
  return file;
}

describe("DatasetUpload", () => {
  it("sends the chosen type and file, shows the bytes sent, then the stored dataset", async () => {
    const sent = installFakeXhr();
    const onUploaded = vi.fn();
    renderWithI18n(<DatasetUpload onUploaded={onUploaded} />, "en");
    fireEvent.change(screen.getByTestId("upload-type"), { target: { value: "dpo" } });
    chooseFile();
    fireEvent.click(screen.getByTestId("upload-submit"));

    const form = sent[0].body as FormData;
    expect([...form.keys()]).toEqual(["type", "file"]);
    expect(form.get("type")).toBe("dpo");

    act(() => sent[0].progress(512, 2048));
    const bar = within(screen.getByTestId("upload-progress")).getByRole("progressbar");
    expect(bar.getAttribute("aria-valuenow")).toBe("25");
    expect(screen.getByTestId("upload-progress").textContent).toContain("512 B of 2.0 KB sent");
    act(() => sent[0].progress(2048, 2048));
    expect(bar.getAttribute("aria-valuenow")).toBe("100");
    expect(screen.getByTestId("upload-progress").textContent).toContain("the server is finishing the check");

    const dataset = { id: "ds1", name: "train.jsonl", type: "dpo", sha256: "f".repeat(64), size: 9, rows: 1 };
    await act(async () => sent[0].respond(201, dataset));
    expect(onUploaded).toHaveBeenCalledWith(dataset);
    expect(screen.getByTestId("upload-done").textContent).toBe("Uploaded “train.jsonl”: 1 rows");
    expect(screen.queryByTestId("upload-progress")).toBeNull();
  });

  it("shows a refused file's line number and field, and the message as sent", async () => {
    const sent = installFakeXhr();
    renderWithI18n(<DatasetUpload onUploaded={vi.fn()} />, "en");
    chooseFile();
    fireEvent.click(screen.getByTestId("upload-submit"));
    const message = "train.jsonl line 7: chosen.text: Field required";
    await act(async () =>
      sent[0].respond(400, { error: { code: "invalid_argument", field: "file", message } }),
    );
    const report = screen.getByTestId("upload-error");
    expect(report.textContent).toContain("nothing was stored");
    const row = report.querySelector("tr[data-line='7']")!;
    expect(row).not.toBeNull();
    expect([...row.querySelectorAll("td")].map((td) => td.textContent)).toEqual(["7", "chosen.text", "Field required"]);
    expect(screen.getByTestId("upload-error-text").tagName).toBe("PRE");
    expect(screen.getByTestId("upload-error-text").textContent).toBe(message);
  });

  it("says when the file is over the size limit", async () => {
    const sent = installFakeXhr();
    renderWithI18n(<DatasetUpload onUploaded={vi.fn()} />, "zh");
    chooseFile();
    fireEvent.click(screen.getByTestId("upload-submit"));
    await act(async () =>
      sent[0].respond(413, { error: { code: "payload_too_large", message: "larger than 2147483648 bytes" } }),
    );
    const report = screen.getByTestId("upload-error");
    expect(report.getAttribute("data-status")).toBe("413");
    expect(report.textContent).toContain("文件超过了服务器的大小限制");
    expect(report.textContent).toContain("larger than 2147483648 bytes");
  });

  it("asks for a file before sending anything", () => {
    const sent = installFakeXhr();
    renderWithI18n(<DatasetUpload onUploaded={vi.fn()} />, "en");
    fireEvent.click(screen.getByTestId("upload-submit"));
    expect(sent).toHaveLength(0);
    expect(screen.getByRole("alert").textContent).toBe("Choose a file first");
  });
});
