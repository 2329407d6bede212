import { describe, expect, it } from "vitest";
import { datasetIdOf, datasetRef, parseUploadProblems } from "./datasets";

describe("dataset references", () => {
  it("round-trips dataset:<id> and leaves paths alone", () => {
    expect(datasetRef("abc")).toBe("dataset:abc");
    expect(datasetIdOf("dataset:abc")).toBe("abc");
    expect(datasetIdOf(" dataset:abc ")).toBe("abc");
    expect(datasetIdOf("data/train.jsonl")).toBeNull();
    expect(datasetIdOf("dataset:")).toBeNull();
    expect(datasetIdOf(true)).toBeNull();
  });
});

describe("parseUploadProblems", () => {
  it("splits the file, line, field and message of each line", () => {
    const text = "train.jsonl line 7: chosen.text: Field required\nline 9: messages[0].role: Input should be 'user'";
    expect(parseUploadProblems(text)).toEqual([
      { file: "train.jsonl", line: 7, field: "chosen.text", message: "Field required" },
      { file: null, line: 9, field: "messages[0].role", message: "Input should be 'user'" },
    ]);
  });

  it("shows the same problem once, and drops the form field's name before the file", () => {
    const text = "file: bad.jsonl line 3: query: Field required\nline 3: query: Field required\nline 3: chosen: Field required";
    expect(parseUploadProblems(text)).toEqual([
      { file: "bad.jsonl", line: 3, field: "query", message: "Field required" },
      { file: null, line: 3, field: "chosen", message: "Field required" },
    ]);
  });

  it("keeps a line without a field, and text without a line", () => {
    expect(parseUploadProblems("a b.jsonl line 3: not valid JSON (Expecting value)")).toEqual([
      { file: "a b.jsonl", line: 3, field: null, message: "not valid JSON (Expecting value)" },
    ]);
    expect(parseUploadProblems("the file is empty")).toEqual([
      { file: null, line: null, field: null, message: "the file is empty" },
    ]);
  });
});
