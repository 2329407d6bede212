import { useVirtualizer } from "@tanstack/react-virtual";
import { memo, useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, type ReactNode } from "react";
import type { LogLine } from "../api/types";
import { useI18n } from "../i18n";
import { formatClock } from "../lib/format";

export const LOG_ROW_HEIGHT = 20;

/** Splits `text` around case-insensitive matches of `query`, wrapping them in <mark>. */
export function highlight(text: string, query: string): ReactNode {
  if (!query) return text;
  const lower = text.toLowerCase();
  const q = query.toLowerCase();
  const parts: ReactNode[] = [];
  let from = 0;
  let idx = lower.indexOf(q, from);
  if (idx < 0) return text;
  while (idx >= 0) {
    if (idx > from) parts.push(text.slice(from, idx));
    parts.push(<mark key={idx}>{text.slice(idx, idx + q.length)}</mark>);
    from = idx + q.length;
    idx = lower.indexOf(q, from);
  }
  if (from < text.length) parts.push(text.slice(from));
  return parts;
}

const LogRow = memo(function LogRow({
  line,
  query,
  start,
}: {
  line: LogLine;
  query: string;
  start: number;
}) {
  return (
    <div
      className={`log-row${line.stream === "stderr" ? " stderr" : ""}`}
      data-seq={line.seq}
      style={{ transform: `translateY(${start}px)`, height: LOG_ROW_HEIGHT }}
    >
      <span className="log-seq">{line.seq}</span>
      <span className="log-time">{formatClock(line.time)}</span>
      <span className="log-text">{highlight(line.text, query)}</span>
    </div>
  );
});

export interface LogViewProps {
  lines: LogLine[];
  /** Shown in the footer: "streaming" / "ended" / "polling" ... */
  status?: ReactNode;
  height?: number | string;
}

/**
 * A virtualized log: only the rows in (and just around) the viewport are in the DOM, so 100k lines stay smooth.
 * Follow keeps the newest line in view; scrolling up (or "暂停") pauses it. Search filters and/or highlights.
 */
export function LogView({ lines, status, height = 420 }: LogViewProps) {
  const { t } = useI18n();
  const [query, setQuery] = useState("");
  const [filterOnly, setFilterOnly] = useState(true);
  const [follow, setFollow] = useState(true);
  const scrollRef = useRef<HTMLDivElement>(null);
  const lastScrollTop = useRef(0);
  const seenWhenPaused = useRef(lines.length);

  const q = query.trim();
  const matches = useMemo(() => {
    if (!q) return null;
    const needle = q.toLowerCase();
    const out: LogLine[] = [];
    for (const line of lines) if (line.text.toLowerCase().includes(needle)) out.push(line);
    return out;
  }, [lines, q]);
  const visible = matches && filterOnly ? matches : lines;

  const virtualizer = useVirtualizer({
    count: visible.length,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => LOG_ROW_HEIGHT,
    overscan: 12,
    getItemKey: (index) => visible[index]?.seq ?? index,
  });

  const scrollToBottom = useCallback(() => {
    const el = scrollRef.current;
    if (!el) return;
    el.scrollTop = el.scrollHeight;
    lastScrollTop.current = el.scrollTop;
  }, []);

  useLayoutEffect(() => {
    if (follow) scrollToBottom();
  }, [follow, visible.length, scrollToBottom]);

  useEffect(() => {
    if (!follow) return;
    seenWhenPaused.current = lines.length;
  }, [follow, lines.length]);

  const onScroll = () => {
    const el = scrollRef.current;
    if (!el) return;
    const top = el.scrollTop;
    const atBottom = top + el.clientHeight >= el.scrollHeight - LOG_ROW_HEIGHT * 2;
    // Only a move up by the user pauses; our own jumps to the bottom never do.
    if (follow && top < lastScrollTop.current - 1 && !atBottom) setFollow(false);
    lastScrollTop.current = top;
  };

  const newWhilePaused = follow ? 0 : Math.max(0, lines.length - seenWhenPaused.current);
  const items = virtualizer.getVirtualItems();

  return (
    <div className="log-view">
      <div className="log-toolbar">
        <input
          type="search"
          className="log-search"
          placeholder={t("logs.search")}
          aria-label={t("logs.search")}
          value={query}
          onChange={(e) => setQuery(e.target.value)}
        />
        <label className="check">
          <input type="checkbox" checked={filterOnly} onChange={(e) => setFilterOnly(e.target.checked)} />
          {t("logs.filterOnly")}
        </label>
        {matches ? (
          <span className="muted log-matches" data-testid="log-matches">
            {t("logs.matches", { n: matches.length })}
          </span>
        ) : null}
        <span className="spacer" />
        <button
          type="button"
          className={`btn btn-small${follow ? " btn-primary" : ""}`}
          aria-pressed={follow}
          data-testid="log-follow"
          onClick={() => {
            if (follow) {
              seenWhenPaused.current = lines.length;
              setFollow(false);
            } else {
              setFollow(true);
            }
          }}
        >
          {follow ? t("logs.following") : t("logs.paused")}
        </button>
      </div>
      <div
        ref={scrollRef}
        className="log-scroll"
        style={{ height }}
        onScroll={onScroll}
        role="log"
        aria-live="off"
        data-testid="log-scroll"
      >
        {visible.length === 0 ? (
          <div className="log-empty muted">{q ? t("logs.noMatch") : t("logs.empty")}</div>
        ) : null}
        <div className="log-inner" style={{ height: virtualizer.getTotalSize() }}>
          {items.map((item) => {
            const line = visible[item.index];
            if (!line) return null;
            return <LogRow key={item.key} line={line} query={q} start={item.start} />;
          })}
        </div>
      </div>
      <div className="log-footer muted">
        <span data-testid="log-count">{t("logs.count", { n: lines.length })}</span>
        {newWhilePaused > 0 ? (
          <button type="button" className="link" onClick={() => setFollow(true)}>
            {t("logs.newLines", { n: newWhilePaused })}
          </button>
        ) : null}
        <span className="spacer" />
        {status}
      </div>
    </div>
  );
}
