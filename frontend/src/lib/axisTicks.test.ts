import { describe, expect, it } from "vitest";
import { formatTicks } from "./axisTicks";

describe("formatTicks", () => {
  it("writes a learning rate's ticks in the short exponent form", () => {
    expect(formatTicks([4.8e-5, 4.85e-5, 4.9e-5, 4.95e-5, 5e-5])).toEqual(["4.8e-5", "4.85e-5", "4.9e-5", "4.95e-5", "5e-5"]);
    expect(formatTicks([1e-5, 2e-5, 3e-5])).toEqual(["1e-5", "2e-5", "3e-5"]);
  });

  it("copes with the float noise in computed splits", () => {
    expect(formatTicks([0.000049000000000000004, 0.0000495, 0.000050000000000000004])).toEqual(["4.9e-5", "4.95e-5", "5e-5"]);
    expect(formatTicks([0.1 + 0.2, 0.4, 0.5])).toEqual(["0.3", "0.4", "0.5"]);
  });

  it("keeps ordinary values in fixed notation with the fewest digits that tell ticks apart", () => {
    expect(formatTicks([0, 0.25, 0.5, 0.75, 1])).toEqual(["0", "0.25", "0.5", "0.75", "1"]);
    expect(formatTicks([2, 2.5, 3])).toEqual(["2", "2.5", "3"]);
    expect(formatTicks([-1, 0, 1])).toEqual(["-1", "0", "1"]);
    expect(formatTicks([0, 200000, 400000])).toEqual(["0", "200000", "400000"]);
  });

  it("uses one notation per axis: zero stays 0 and large values go short too", () => {
    expect(formatTicks([0, 2e-5, 4e-5])).toEqual(["0", "2e-5", "4e-5"]);
    expect(formatTicks([1e6, 1.5e6, 2e6])).toEqual(["1e6", "1.5e6", "2e6"]);
  });

  it("leaves no label longer than a short exponent for a learning-rate range", () => {
    const splits = Array.from({ length: 9 }, (_, i) => 3e-5 + i * 2.5e-6);
    expect(Math.max(...formatTicks(splits).map((l) => l.length))).toBeLessThanOrEqual(7);
  });

  it("labels nothing for missing values", () => {
    expect(formatTicks([])).toEqual([]);
    expect(formatTicks([Number.NaN, 1])).toEqual(["", "1"]);
  });
});
