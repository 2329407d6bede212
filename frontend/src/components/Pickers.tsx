// Pickers next to the task form's inputs: a dataset for a data field (fills `dataset:<id>`), a model an agent holds
// for the model field (fills its name). They only fill the text input: typing a path there stays allowed.

import type { Dataset, ModelEntry } from "../api/types";
import { useI18n } from "../i18n";
import { datasetIdOf, datasetRef } from "../lib/datasets";

interface PickerOption {
  value: string;
  label: string;
  title?: string;
}

interface PickerSelectProps {
  field: string;
  kind: "dataset" | "model";
  label: string;
  /** The option shown first: a prompt, or why there is nothing to pick. */
  placeholder: string;
  selected: string;
  options: PickerOption[];
  onPick: (value: string) => void;
}

/** The select both pickers show: disabled while there is nothing to offer; choosing the placeholder does nothing. */
function PickerSelect({ field, kind, label, placeholder, selected, options, onPick }: PickerSelectProps) {
  return (
    <select
      className="picker"
      value={selected}
      aria-label={label}
      data-picker-for={field}
      data-picker={kind}
      disabled={options.length === 0}
      onChange={(e) => {
        if (e.target.value) onPick(e.target.value);
      }}
    >
      <option value="">{placeholder}</option>
      {options.map((o) => (
        <option key={o.value} value={o.value} title={o.title}>
          {o.label}
        </option>
      ))}
    </select>
  );
}

interface DatasetPickerProps {
  field: string;
  /** The form's task type: only datasets uploaded for it are offered. */
  type: string;
  value: unknown;
  datasets: Dataset[];
  onPick: (value: string) => void;
}

export function DatasetPicker({ field, type, value, datasets, onPick }: DatasetPickerProps) {
  const { t } = useI18n();
  const usable = datasets.filter((d) => d.type === type);
  const current = datasetIdOf(value);
  const selected = usable.some((d) => d.id === current) ? current! : "";
  return (
    <PickerSelect
      field={field}
      kind="dataset"
      label={t("picker.datasetLabel", { field })}
      placeholder={usable.length ? t("picker.dataset") : t("picker.noDatasets", { type })}
      selected={selected}
      options={usable.map((d) => ({ value: d.id, label: `${d.name || d.id} · ${t("picker.rows", { n: d.rows })}` }))}
      onPick={(id) => onPick(datasetRef(id))}
    />
  );
}

interface ModelPickerProps {
  field: string;
  value: unknown;
  models: ModelEntry[];
  onPick: (value: string) => void;
}

export function ModelPicker({ field, value, models, onPick }: ModelPickerProps) {
  const { t } = useI18n();
  const text = typeof value === "string" ? value.trim() : "";
  const selected = models.some((m) => m.name === text) ? text : "";
  return (
    <PickerSelect
      field={field}
      kind="model"
      label={t("picker.modelLabel", { field })}
      placeholder={models.length ? t("picker.model") : t("picker.noModels")}
      selected={selected}
      options={models.map((m) => ({
        value: m.name,
        label: `${m.name} · ${m.kind} · ${t("picker.agents", { n: m.agents.length })} (${m.agents.join(", ")})`,
        title: m.agents.join(", "),
      }))}
      onPick={onPick}
    />
  );
}
