// Axis tick labels short enough to fit beside a chart: a learning rate of 0.000049 reads "4.9e-5", not "4.900e-5"
// clipped to "900e-5" by a fixed-width axis.

/** Below this or from EXP_FROM up, labels switch to the compact exponent form. */
const FIXED_FROM = 1e-2;
const EXP_FROM = 1e6;
const MAX_DIGITS = 6;

function exponent(value: number, digits: number): string {
  const [mantissa, exp] = value.toExponential(digits).split("e");
  const trimmed = mantissa.includes(".") ? mantissa.replace(/\.?0+$/, "") : mantissa;
  return `${trimmed}e${Number(exp)}`; // "e-5", not "e-05" or "e+6"
}

function fixed(value: number, digits: number): string {
  return String(Number(value.toFixed(digits))); // trailing zeros and "-0" dropped
}

/** The smallest gap between two ticks (0 with fewer than two). */
function spacing(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  let gap = Infinity;
  for (let i = 1; i < sorted.length; i += 1) {
    if (sorted[i] > sorted[i - 1]) gap = Math.min(gap, sorted[i] - sorted[i - 1]);
  }
  return Number.isFinite(gap) ? gap : 0;
}

/** The labels of one axis's ticks: one notation for the whole axis (chosen by its largest value), with the fewest
 * digits that still say each tick's value (to a thousandth of the tick spacing, so 0.25 never reads 0.3). */
export function formatTicks(splits: number[]): string[] {
  const finite = splits.filter((v) => Number.isFinite(v));
  const largest = finite.reduce((max, v) => Math.max(max, Math.abs(v)), 0);
  const useExponent = largest !== 0 && (largest < FIXED_FROM || largest >= EXP_FROM);
  const label = (v: number, digits: number): string => {
    if (!Number.isFinite(v)) return "";
    if (v === 0) return "0";
    return useExponent ? exponent(v, digits) : fixed(v, digits);
  };
  const tolerance = spacing(finite) / 1000 || largest * 1e-6;
  let labels: string[] = [];
  for (let digits = 0; digits <= MAX_DIGITS; digits += 1) {
    labels = splits.map((v) => label(v, digits));
    if (splits.every((v, i) => !Number.isFinite(v) || Math.abs(Number(labels[i]) - v) <= tolerance)) break;
  }
  return labels;
}
