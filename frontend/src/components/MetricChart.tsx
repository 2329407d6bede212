import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Series } from "../lib/metrics";
import { formatTicks } from "../lib/axisTicks";
import { formatNumber } from "../lib/format";

const COLORS = ["#4f46e5", "#059669", "#d97706", "#db2777", "#0891b2", "#7c3aed", "#65a30d", "#dc2626"];

export function colorFor(key: string): string {
  let h = 0;
  for (const ch of key) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return key === "loss" ? COLORS[0] : key === "learning_rate" ? COLORS[1] : COLORS[h % COLORS.length];
}

const AXIS_MARGIN = 6; // px left of the longest label, so its first digit never touches the chart's edge

/** The y axis as wide as its longest label (uPlot's default is fixed, and a label too long for it loses its first
 * digits at the chart's left edge). uPlot asks again (cycleNum > 1) only while its layout settles. */
function yAxisWidth(self: uPlot, values: string[] | null, axisIdx: number, cycleNum: number): number {
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

/** One live line chart (uPlot on a canvas: cheap to redraw as points stream in). */
export function MetricChart({ series, xLabel, height = 200 }: { series: Series; xLabel: string; height?: number }) {
  const boxRef = useRef<HTMLDivElement>(null);
  const plotRef = useRef<uPlot | null>(null);

  useEffect(() => {
    const box = boxRef.current;
    if (!box) return;
    const width = Math.max(240, box.clientWidth || 480);
    const opts: uPlot.Options = {
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
      series: [
        { label: xLabel },
        {
          label: series.key,
          stroke: colorFor(series.key),
          width: 2,
          fill: `${colorFor(series.key)}14`,
          points: { show: series.xs.length < 60, size: 4 },
          value: (_u, v) => (v === null || v === undefined ? "—" : formatNumber(v)),
        },
      ],
    };
    const plot = new uPlot(opts, [series.xs, series.ys], box);
    plotRef.current = plot;
    let ro: ResizeObserver | null = null;
    if (typeof ResizeObserver !== "undefined") {
      ro = new ResizeObserver(() => {
        const w = box.clientWidth;
        if (w > 0) plot.setSize({ width: w, height });
      });
      ro.observe(box);
    }
    return () => {
      ro?.disconnect();
      plot.destroy();
      plotRef.current = null;
    };
    // Re-created only when the chart's identity changes; data updates go through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [series.key, xLabel, height]);

  useEffect(() => {
    plotRef.current?.setData([series.xs, series.ys]);
  }, [series]);

  return (
    <div
      className="metric-chart"
      ref={boxRef}
      data-metric={series.key}
      data-points={series.xs.length}
      aria-label={`${series.key}: ${series.xs.length} points`}
    />
  );
}
