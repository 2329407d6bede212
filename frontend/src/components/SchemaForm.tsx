import { useEffect, useState, type ReactNode } from "react";
import { useI18n, type Translate } from "../i18n";
import { fieldHelp, fieldTitle } from "../lib/fieldTexts";
import { splitAdvanced, type FieldError, type FieldSpec, type FormValue, type FormValues } from "../schema/form";

export function fieldErrorText(t: Translate, error: FieldError): string {
  if (error.message) return error.message;
  const limit = error.limit === undefined ? "" : String(error.limit);
  switch (error.code) {
    case "required":
      return t("form.err.required");
    case "notNumber":
      return t("form.err.notNumber");
    case "notInteger":
      return t("form.err.notInteger");
    case "min":
      return t("form.err.min", { limit });
    case "max":
      return t("form.err.max", { limit });
    case "exclusiveMin":
      return t("form.err.exclusiveMin", { limit });
    case "exclusiveMax":
      return t("form.err.exclusiveMax", { limit });
    case "minLength":
      return t("form.err.minLength", { limit });
    case "maxLength":
      return t("form.err.maxLength", { limit });
    case "pattern":
      return t("form.err.pattern", { limit });
    case "enum":
      return t("form.err.enum");
    case "json":
      return t("form.err.json");
  }
}

function rangeHint(field: FieldSpec): string {
  const parts: string[] = [];
  if (field.minimum !== undefined) parts.push(`≥ ${field.minimum}`);
  if (field.exclusiveMinimum !== undefined) parts.push(`> ${field.exclusiveMinimum}`);
  if (field.maximum !== undefined) parts.push(`≤ ${field.maximum}`);
  if (field.exclusiveMaximum !== undefined) parts.push(`< ${field.exclusiveMaximum}`);
  return parts.join(", ");
}

interface FieldProps {
  field: FieldSpec;
  value: FormValue | undefined;
  error?: FieldError;
  onChange: (name: string, value: FormValue) => void;
  onBlur: (name: string) => void;
  /** Shown next to the input (e.g. a dataset picker). */
  addon?: ReactNode;
}

function FieldInput({ field, value, error, onChange, onBlur, addon }: FieldProps) {
  const { t, lang } = useI18n();
  const id = `field-${field.name}`;
  const describedBy = `${id}-help`;
  const text = typeof value === "string" ? value : "";
  const common = {
    id,
    name: field.name,
    "aria-invalid": error ? true : undefined,
    "aria-describedby": describedBy,
    onBlur: () => onBlur(field.name),
  };
  const placeholder = field.nullable || (!field.required && !field.hasDefault) ? t("form.emptyMeansDefault") : "";
  let input;
  switch (field.kind) {
    case "boolean":
      input = (
        <label className="switch">
          <input
            {...common}
            type="checkbox"
            checked={value === true}
            onChange={(e) => onChange(field.name, e.target.checked)}
          />
          <span>{value === true ? t("form.on") : t("form.off")}</span>
        </label>
      );
      break;
    case "enum":
      input = (
        <select {...common} value={text} onChange={(e) => onChange(field.name, e.target.value)}>
          {field.nullable || (!field.required && !field.hasDefault) ? <option value="">{t("form.unset")}</option> : null}
          {field.enumValues.map((option) => {
            const shown = typeof option === "string" ? option : JSON.stringify(option);
            return (
              <option key={shown} value={shown}>
                {shown}
              </option>
            );
          })}
        </select>
      );
      break;
    case "json":
      input = (
        <textarea
          {...common}
          rows={3}
          spellCheck={false}
          value={text}
          placeholder={placeholder}
          onChange={(e) => onChange(field.name, e.target.value)}
        />
      );
      break;
    default:
      input = (
        <input
          {...common}
          type="text"
          inputMode={field.kind === "number" ? "decimal" : field.kind === "integer" ? "numeric" : undefined}
          autoComplete="off"
          spellCheck={false}
          value={text}
          placeholder={field.kind === "string-array" ? t("form.listPlaceholder") : placeholder}
          onChange={(e) => onChange(field.name, e.target.value)}
        />
      );
  }
  const hint = rangeHint(field);
  return (
    <div className={`form-field${error ? " has-error" : ""}`} data-field={field.name}>
      <label htmlFor={id} className="field-label">
        <span className="field-title">{fieldTitle(field, lang)}</span>
        {field.required ? (
          <span className="required" title={t("form.required")}>
            *
          </span>
        ) : null}
        <code className="field-key">{field.name}</code>
      </label>
      {addon ? (
        <div className="field-with-addon">
          {input}
          {addon}
        </div>
      ) : (
        input
      )}
      {error ? (
        <div className="field-error" role="alert" data-error-for={field.name}>
          {fieldErrorText(t, error)}
        </div>
      ) : null}
      <div className="field-help" id={describedBy}>
        {fieldHelp(field, lang)}
        {hint ? <span className="field-range"> ({hint})</span> : null}
      </div>
    </div>
  );
}

export interface SchemaFormProps {
  fields: FieldSpec[];
  values: FormValues;
  errors: Record<string, FieldError>;
  onChange: (name: string, value: FormValue) => void;
  onBlur?: (name: string) => void;
  /** Extra controls per field name, shown next to that field's input. */
  addons?: Record<string, ReactNode>;
}

/** The config form generated from a JSON schema; advanced fields fold under "高级参数". */
export function SchemaForm({ fields, values, errors, onChange, onBlur, addons }: SchemaFormProps) {
  const { t } = useI18n();
  const { basic, advanced } = splitAdvanced(fields);
  const [open, setOpen] = useState(false);
  const advancedHasError = advanced.some((f) => errors[f.name]);
  useEffect(() => {
    if (advancedHasError) setOpen(true);
  }, [advancedHasError]);
  const blur = onBlur ?? (() => undefined);
  const grid = (fields: typeof basic, id?: string) => (
    <div className="form-grid" id={id}>
      {fields.map((field) => (
        <FieldInput
          key={field.name}
          field={field}
          value={values[field.name]}
          error={errors[field.name]}
          onChange={onChange}
          onBlur={blur}
          addon={addons?.[field.name]}
        />
      ))}
    </div>
  );
  return (
    <div className="schema-form">
      {grid(basic)}
      {advanced.length ? (
        <section className={`advanced${open ? " open" : ""}`}>
          <button
            type="button"
            className="advanced-toggle"
            aria-expanded={open}
            aria-controls="advanced-fields"
            onClick={() => setOpen((v) => !v)}
          >
            <span className="chevron" aria-hidden>
              ▸
            </span>
            {t("form.advanced")} <span className="muted">({advanced.length})</span>
            {advancedHasError ? <span className="dot-error" aria-hidden /> : null}
          </button>
          {open ? grid(advanced, "advanced-fields") : null}
        </section>
      ) : null}
    </div>
  );
}
