import uPlot from "uplot";
import { formatTicks } from "./axisTicks";

export const COLORS = ["#4f46e5", "#059669", "#d97706", "#db2777", "#0891b2", "#7c3aed", "#65a30d", "#dc2626"];

export function colorFor(key: string): string {
  let h = 0;
  for (const ch of key) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return key === "loss" ? COLORS[0] : key === "learning_rate" ? COLORS[1] : COLORS[h % COLORS.length];
}

const AXIS_MARGIN = 6; // px left of the longest label, so its first digit never touches the chart's edge

/** The y axis as wide as its longest label (uPlot's default is fixed, and a label too long for it loses its first
 * digits at the chart's left edge). uPlot asks again (cycleNum > 1) only while its layout settles. */
export function yAxisWidth(self: uPlot, values: string[] | null, axisIdx: number, cycleNum: number): number {
  const axis = self.axes[axisIdx] as uPlot.Axis & { _size?: number; font?: unknown };
  if (cycleNum > 1 && axis._size) return axis._size;
  const longest = (values ?? []).reduce((a, b) => (b.length > a.length ? b : a), "");
  const font = Array.isArray(axis.font) ? String(axis.font[0]) : String(axis.font ?? "");
  self.ctx.save();
  self.ctx.font = font;
  const text = longest ? self.ctx.measureText(longest).width / (uPlot.pxRatio || 1) : 0;
  self.ctx.restore();
  return Math.ceil(text + (axis.ticks?.size ?? 10) + (axis.gap ?? 5) + AXIS_MARGIN);
}

/** What every chart of the console shares: its size, a live legend, x-drag zoom, and axes whose y labels fit. */
export function chartFrame(xLabel: string, width: number, height: number): Omit<uPlot.Options, "series"> {
  return {
    width,
    height,
    legend: { show: true, live: true },
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false } },
    axes: [
      { label: xLabel, stroke: "#64748b", grid: { stroke: "#eef2f7" }, ticks: { stroke: "#e2e8f0" } },
      {
        stroke: "#64748b",
        grid: { stroke: "#eef2f7" },
        ticks: { stroke: "#e2e8f0" },
        size: yAxisWidth,
        values: (_u, splits) => formatTicks(splits),
      },
    ],
  };
}

/** A uPlot in `box` (at least 240 px wide) that follows the box's width; returns the plot and its teardown. */
export function mountChart(
  box: HTMLElement,
  xLabel: string,
  height: number,
  series: uPlot.Series[],
  data: uPlot.AlignedData,
): { plot: uPlot; destroy: () => void } {
  const width = Math.max(240, box.clientWidth || 480);
  const plot = new uPlot({ ...chartFrame(xLabel, width, height), series }, data, box);
  let ro: ResizeObserver | null = null;
  if (typeof ResizeObserver !== "undefined") {
    ro = new ResizeObserver(() => {
      const w = box.clientWidth;
      if (w > 0) plot.setSize({ width: w, height });
    });
    ro.observe(box);
  }
  return {
    plot,
    destroy: () => {
      ro?.disconnect();
      plot.destroy();
    },
  };
}
