// A multi-stage trainer's stage names (KBAlign's metric `stage` events) as the i18n key and parameters that label
// them on the monitor: "annotate_short" → "Annotating short Q&A", "train_round_2" → "Training round 2". A stage
// this table does not know is shown by its own name.
import type { Progress } from "../api/types";
import type { MessageKey } from "../i18n";

export interface StageLabel {
  key: MessageKey | null; // null: show `name` as it is
  params: Record<string, string | number>;
  name: string;
}

const FIXED: Record<string, MessageKey> = {
  chunking: "stage.chunking",
  embedding: "stage.embedding",
  clustering: "stage.clustering",
  annotate_short: "stage.annotateShort",
  annotate_long: "stage.annotateLong",
  split: "stage.split",
  retrieval: "stage.retrieval",
};

const NUMBERED: [RegExp, MessageKey][] = [
  [/^train_round_(\d+)$/, "stage.trainRound"],
  [/^verify_round_(\d+)$/, "stage.verifyRound"],
];

export function stageLabel(name: string): StageLabel {
  if (FIXED[name]) return { key: FIXED[name], params: {}, name };
  for (const [pattern, key] of NUMBERED) {
    const m = pattern.exec(name);
    if (m) return { key, params: { n: Number(m[1]) }, name };
  }
  const evalPhase = /^eval_(.+)$/.exec(name);
  if (evalPhase) return { key: "stage.eval", params: { phase: evalPhase[1] }, name };
  return { key: null, params: {}, name };
}

/** The percent a stage has done (0 when its total is unknown), for the progress bar while no step runs. */
export function stagePercent(p: Progress): number {
  return p.stage && p.stage_total ? (100 * (p.stage_done ?? 0)) / p.stage_total : 0;
}
