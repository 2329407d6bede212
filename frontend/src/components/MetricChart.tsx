import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Series } from "../lib/metrics";
import { colorFor, mountChart } from "../lib/chartFrame";
import { formatNumber } from "../lib/format";

/** One live line chart (uPlot on a canvas: cheap to redraw as points stream in). */
export function MetricChart({ series, xLabel, height = 200 }: { series: Series; xLabel: string; height?: number }) {
  const boxRef = useRef<HTMLDivElement>(null);
  const plotRef = useRef<uPlot | null>(null);

  useEffect(() => {
    const box = boxRef.current;
    if (!box) return;
    const { plot, destroy } = mountChart(box, xLabel, height, [
      { label: xLabel },
      {
        label: series.key,
        stroke: colorFor(series.key),
        width: 2,
        fill: `${colorFor(series.key)}14`,
        points: { show: series.xs.length < 60, size: 4 },
        value: (_u, v) => (v === null || v === undefined ? "—" : formatNumber(v)),
      },
    ], [series.xs, series.ys]);
    plotRef.current = plot;
    return () => {
      destroy();
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
