import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Overlay } from "../lib/compare";
import { formatNumber } from "../lib/format";
import { COLORS, mountChart } from "../lib/chartFrame";

/** The colour of the i-th run, the same on every chart and in the tables' headers. */
export function runColor(index: number): string {
  return COLORS[index % COLORS.length];
}

/** One metric of several runs: one line per run, the legend naming each (uPlot, like the monitor's charts). */
export function OverlayChart({
  overlay,
  labels,
  xLabel,
  height = 220,
}: {
  overlay: Overlay;
  labels: string[];
  xLabel: string;
  height?: number;
}) {
  const boxRef = useRef<HTMLDivElement>(null);
  const plotRef = useRef<uPlot | null>(null);
  const data = [overlay.xs, ...overlay.ys] as uPlot.AlignedData;

  useEffect(() => {
    const box = boxRef.current;
    if (!box) return;
    const { plot, destroy } = mountChart(box, xLabel, height, [
      { label: xLabel },
      ...labels.map((label, i) => ({
        label,
        stroke: runColor(i),
        width: 2,
        // Runs log at different steps: each line spans the x values only the other runs have.
        spanGaps: true,
        points: { show: overlay.xs.length < 60, size: 4 },
        value: (_u: uPlot, v: number | null) => (v === null || v === undefined ? "—" : formatNumber(v)),
      })),
    ], data);
    plotRef.current = plot;
    return () => {
      destroy();
      plotRef.current = null;
    };
    // Re-created when the runs or the metric change; new points of the same runs go through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [overlay.key, labels.join("\u0000"), xLabel, height]);

  useEffect(() => {
    plotRef.current?.setData(data);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [overlay]);

  const drawn = overlay.counts.filter((n) => n > 0).length;
  return (
    <div
      className="metric-chart overlay-chart"
      ref={boxRef}
      data-metric={overlay.key}
      data-series={overlay.ys.length}
      data-drawn={drawn}
      data-counts={overlay.counts.join(",")}
      aria-label={`${overlay.key}: ${labels.map((l, i) => `${l} ${overlay.counts[i]}`).join(", ")}`}
    />
  );
}
