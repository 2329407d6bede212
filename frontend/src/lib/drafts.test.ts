import { describe, expect, it } from "vitest";
import type { JsonSchema } from "../api/types";
import { fieldsFromSchema, initialValues } from "../schema/form";
import { clearDraft, draftKey, isEdited, loadDraft, saveDraft, withDraft } from "./drafts";

const schema: JsonSchema = {
  type: "object",
  required: ["model_name_or_path"],
  properties: {
    model_name_or_path: { type: "string", minLength: 1 },
    learning_rate: { type: "number", default: 5e-5 },
    use_lora: { type: "boolean", default: true },
  },
};
const fields = fieldsFromSchema(schema);
const defaults = initialValues(fields, { model_name_or_path: "gpt2" });

describe("drafts", () => {
  it("keeps one draft per user and type", () => {
    saveDraft("alice", "sft", { ...defaults, learning_rate: "1e-4" });
    saveDraft("bob", "sft", { ...defaults, learning_rate: "2e-4" });
    saveDraft("alice", "dpo", { ...defaults, learning_rate: "3e-6" });
    expect(loadDraft("alice", "sft")?.learning_rate).toBe("1e-4");
    expect(loadDraft("bob", "sft")?.learning_rate).toBe("2e-4");
    expect(loadDraft("alice", "dpo")?.learning_rate).toBe("3e-6");
    expect(loadDraft("alice", "kbalign")).toBeNull();
    clearDraft("alice", "sft");
    expect(loadDraft("alice", "sft")).toBeNull();
    expect(loadDraft("bob", "sft")).not.toBeNull();
  });

  it("a user name cannot reach another user's key", () => {
    expect(draftKey("a.b", "sft")).not.toBe(draftKey("a", "b.sft"));
    expect(draftKey(null, "sft")).toBe('bugagaric.draft:["","sft"]');
  });

  it("ignores what is not a draft in storage", () => {
    localStorage.setItem(draftKey("alice", "sft"), "{not json");
    expect(loadDraft("alice", "sft")).toBeNull();
    localStorage.setItem(draftKey("alice", "sft"), JSON.stringify({ learning_rate: { nested: 1 } }));
    expect(loadDraft("alice", "sft")).toBeNull();
    localStorage.setItem(draftKey("alice", "sft"), JSON.stringify(["a"]));
    expect(loadDraft("alice", "sft")).toBeNull();
  });

  it("lays a draft over the defaults for the fields the type has now", () => {
    const draft = { learning_rate: "1e-3", removed_field: "x", use_lora: "yes" };
    const values = withDraft(fields, defaults, draft);
    expect(values).toEqual({ model_name_or_path: "gpt2", learning_rate: "1e-3", use_lora: true });
    expect(withDraft(fields, defaults, null)).toBe(defaults);
  });

  it("tells an edited form from the defaults", () => {
    expect(isEdited(defaults, defaults)).toBe(false);
    expect(isEdited({ ...defaults }, initialValues(fields, { model_name_or_path: "gpt2" }))).toBe(false);
    expect(isEdited({ ...defaults, learning_rate: "1" }, defaults)).toBe(true);
    expect(isEdited({ ...defaults, use_lora: false }, defaults)).toBe(true);
  });
});
