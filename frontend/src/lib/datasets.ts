// Datasets as task inputs: which config fields take one, the `dataset:<id>` reference, and the upload error's
// "<file> line <n>: <field>: <message>" lines split up for display.

/** The config fields of each type that name a data file (and so accept `dataset:<id>`). */
export const DATASET_FIELDS: Record<string, readonly string[]> = {
  sft: ["train_data_path", "eval_data_path"],
  dpo: ["train_data_path", "eval_data_path"],
  embedding: ["train_data", "train_data_path", "eval_data_path"],
  kbalign: ["input_path", "eval_data_path"],
};

/** The field whose value names the base model (the model picker sits next to it). */
export const MODEL_FIELD = "model_name_or_path";

const DATASET_PREFIX = "dataset:";

export function datasetRef(id: string): string {
  return `${DATASET_PREFIX}${id}`;
}

/** "dataset:abc" -> "abc"; anything else (a path) -> null. */
export function datasetIdOf(value: unknown): string | null {
  if (typeof value !== "string") return null;
  const text = value.trim();
  return text.startsWith(DATASET_PREFIX) && text.length > DATASET_PREFIX.length
    ? text.slice(DATASET_PREFIX.length)
    : null;
}

export interface UploadProblem {
  file: string | null;
  line: number | null;
  field: string | null;
  message: string;
}

const LINE_RE = /^(?:(.+?)\s+)?line\s+(\d+):\s*(.*)$/i;
// A field path as the row validators write it: chosen.text, messages[0].content, messages.0.role.
const FIELD_RE = /^([A-Za-z_][\w-]*(?:\.[\w-]+|\[\d+\])*):\s+(.*)$/;

/**
 * Each line of the server's message -> file, line number, field and message (what it does not name stays null).
 * The same problem named twice (e.g. once in the summary line, once in the list) is shown once.
 */
export function parseUploadProblems(message: string): UploadProblem[] {
  const seen = new Set<string>();
  const problems: UploadProblem[] = [];
  for (const text of message.split(/\r?\n/).map((s) => s.trim())) {
    if (!text) continue;
    const problem = parseProblemLine(text);
    const key = `${problem.line}|${problem.field}|${problem.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    problems.push(problem);
  }
  return problems;
}

function parseProblemLine(text: string): UploadProblem {
  const m = LINE_RE.exec(text);
  if (!m) return { file: null, line: null, field: null, message: text };
  const f = FIELD_RE.exec(m[3]);
  return {
    // "file: train.jsonl line 3: ..." (the form field named first): the file is what follows the field.
    file: m[1] ? m[1].replace(/^\w+:\s+/, "") : null,
    line: Number(m[2]),
    field: f ? f[1] : null,
    message: f ? f[2] : m[3],
  };
}
