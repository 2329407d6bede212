import { act, fireEvent, screen } from "@testing-library/react";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LogLine } from "../api/types";
import { installFakeLayout, renderWithI18n } from "../test/render";
import { LogView, LOG_ROW_HEIGHT } from "./LogView";

function makeLines(n: number, from = 1): LogLine[] {
  const out: LogLine[] = [];
  for (let seq = from; seq < from + n; seq += 1) {
    out.push({
      seq,
      time: "2026-11-02T10:00:00Z",
      stream: seq % 1000 === 0 ? "stderr" : "stdout",
      text: seq % 10000 === 0 ? `checkpoint saved at step ${seq}` : `step ${seq} loss=${(1 / seq).toFixed(6)}`,
    });
  }
  return out;
}

const rows = () => document.querySelectorAll(".log-row");
const scroller = () => screen.getByTestId("log-scroll");

describe("<LogView>", () => {
  let restore: () => void;
  beforeAll(() => {
    restore = installFakeLayout({ width: 800, height: 400 });
  });
  afterAll(() => restore());

  it("renders only a window of 100k lines, not all of them", () => {
    const lines = makeLines(100_000);
    renderWithI18n(<LogView lines={lines} />);
    const count = rows().length;
    expect(count).toBeGreaterThan(0);
    expect(count).toBeLessThan(100); // ~20 visible + overscan
    // The scroll area is as tall as all the lines.
    const inner = document.querySelector(".log-inner") as HTMLElement;
    expect(parseFloat(inner.style.height)).toBe(100_000 * LOG_ROW_HEIGHT);
    expect(screen.getByTestId("log-count").textContent).toBe("共 100000 行");
  });

  it("follows the newest line and keeps following as lines arrive", () => {
    const lines = makeLines(5_000);
    const { rerender } = renderWithI18n(<LogView lines={lines} />);
    act(() => {
      fireEvent.scroll(scroller());
    });
    const seqs = () => [...rows()].map((r) => Number(r.getAttribute("data-seq")));
    expect(Math.max(...seqs())).toBe(5_000);
    expect(scroller().scrollTop).toBe(5_000 * LOG_ROW_HEIGHT - 400);

    rerender(<LogView lines={lines.concat(makeLines(500, 5_001))} />);
    act(() => {
      fireEvent.scroll(scroller());
    });
    expect(scroller().scrollTop).toBe(5_500 * LOG_ROW_HEIGHT - 400);
    expect(Math.max(...seqs())).toBe(5_500);
    expect(screen.getByTestId("log-follow").getAttribute("aria-pressed")).toBe("true");
  });

  it("pauses when the user scrolls up or presses pause, and resumes on demand", () => {
    const lines = makeLines(3_000);
    const { rerender } = renderWithI18n(<LogView lines={lines} />);
    const el = scroller();
    const bottom = el.scrollTop;
    // The user scrolls up: following stops.
    act(() => {
      el.scrollTop = bottom - 2_000;
      fireEvent.scroll(el);
    });
    const follow = screen.getByTestId("log-follow");
    expect(follow.getAttribute("aria-pressed")).toBe("false");
    expect(follow.textContent).toBe("已暂停");
    // New lines do not move the view while paused, and are counted.
    rerender(<LogView lines={lines.concat(makeLines(40, 3_001))} />);
    expect(el.scrollTop).toBe(bottom - 2_000);
    expect(screen.getByText("有 40 行新日志，点击跟随")).toBeTruthy();
    // Resume: jumps to the newest line.
    fireEvent.click(follow);
    expect(follow.getAttribute("aria-pressed")).toBe("true");
    expect(el.scrollTop).toBe(3_040 * LOG_ROW_HEIGHT - 400);
    // The explicit pause button works too.
    fireEvent.click(follow);
    expect(follow.getAttribute("aria-pressed")).toBe("false");
    rerender(<LogView lines={lines.concat(makeLines(80, 3_001))} />);
    expect(el.scrollTop).toBe(3_040 * LOG_ROW_HEIGHT - 400);
  });

  it("search filters to matching lines and highlights the match", () => {
    const lines = makeLines(100_000);
    renderWithI18n(<LogView lines={lines} />, "en");
    fireEvent.change(screen.getByLabelText("Search logs"), { target: { value: "CHECKPOINT" } });
    expect(screen.getByTestId("log-matches").textContent).toBe("10 matching");
    const shown = [...rows()];
    expect(shown.length).toBe(10);
    expect(shown.every((r) => r.textContent!.includes("checkpoint saved"))).toBe(true);
    const marks = document.querySelectorAll(".log-row mark");
    expect(marks.length).toBe(10);
    expect(marks[0].textContent).toBe("checkpoint");
    // Highlight only: all lines stay, matches still marked.
    fireEvent.click(screen.getByLabelText("Matching lines only"));
    const inner = document.querySelector(".log-inner") as HTMLElement;
    expect(parseFloat(inner.style.height)).toBe(100_000 * LOG_ROW_HEIGHT);
    // No match at all.
    fireEvent.click(screen.getByLabelText("Matching lines only"));
    fireEvent.change(screen.getByLabelText("Search logs"), { target: { value: "no-such-text" } });
    expect(rows().length).toBe(0);
    expect(screen.getByText("No matching lines")).toBeTruthy();
  });
});
