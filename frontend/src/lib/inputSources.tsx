// What the task form's pickers offer: the user's datasets and the models the agents hold.

import { useEffect, useMemo, useState, type ReactNode } from "react";
import { api } from "../api/client";
import type { Dataset, ModelEntry } from "../api/types";
import { DatasetPicker, ModelPicker } from "../components/Pickers";
import type { FieldSpec, FormValue, FormValues } from "../schema/form";
import { DATASET_FIELDS, MODEL_FIELD } from "./datasets";

/**
 * Loads both lists (again when `reloadKey` changes, e.g. the form's type). A list that cannot be loaded (an older
 * gateway, no agents) is just empty: the pickers say so and the inputs still take typed paths.
 */
export function useInputSources(reloadKey: string): { datasets: Dataset[]; models: ModelEntry[] } {
  const [datasets, setDatasets] = useState<Dataset[]>([]);
  const [models, setModels] = useState<ModelEntry[]>([]);
  useEffect(() => {
    const controller = new AbortController();
    api
      .datasets(undefined, controller.signal)
      .then((r) => setDatasets(r.datasets ?? []))
      .catch(() => undefined);
    api
      .models(controller.signal)
      .then((r) => setModels(r.models ?? []))
      .catch(() => undefined);
    return () => controller.abort();
  }, [reloadKey]);
  return { datasets, models };
}

/** The picker to show next to each input field of `type`'s form. */
export function usePickerAddons(
  type: string,
  fields: FieldSpec[],
  values: FormValues,
  sources: { datasets: Dataset[]; models: ModelEntry[] },
  onChange: (name: string, value: FormValue) => void,
): Record<string, ReactNode> {
  return useMemo(() => {
    const names = new Set(fields.map((f) => f.name));
    const addons: Record<string, ReactNode> = {};
    for (const field of DATASET_FIELDS[type] ?? []) {
      if (!names.has(field)) continue;
      addons[field] = (
        <DatasetPicker
          field={field}
          type={type}
          value={values[field]}
          datasets={sources.datasets}
          onPick={(v) => onChange(field, v)}
        />
      );
    }
    if (names.has(MODEL_FIELD)) {
      addons[MODEL_FIELD] = (
        <ModelPicker
          field={MODEL_FIELD}
          value={values[MODEL_FIELD]}
          models={sources.models}
          onPick={(v) => onChange(MODEL_FIELD, v)}
        />
      );
    }
    return addons;
  }, [type, fields, values, sources.datasets, sources.models, onChange]);
}
