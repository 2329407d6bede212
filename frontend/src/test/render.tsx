import { render, waitFor, type RenderOptions } from "@testing-library/react";
import type { ReactElement, ReactNode } from "react";
import { I18nProvider, type Lang } from "../i18n";

export function renderWithI18n(ui: ReactElement, lang: Lang = "zh", options?: RenderOptions) {
  const Wrapper = ({ children }: { children: ReactNode }) => <I18nProvider initial={lang}>{children}</I18nProvider>;
  return render(ui, { wrapper: Wrapper, ...options });
}

/**
 * jsdom has no layout: give elements a viewport size and a scroll position so the virtualizer and the follow logic
 * behave as in a browser (clientHeight 400 px, scrollHeight = what the content says, a settable scrollTop).
 */
export function installFakeLayout(viewport = { width: 800, height: 400 }) {
  const scrollTops = new WeakMap<Element, number>();
  const originals = {
    offsetHeight: Object.getOwnPropertyDescriptor(HTMLElement.prototype, "offsetHeight"),
    offsetWidth: Object.getOwnPropertyDescriptor(HTMLElement.prototype, "offsetWidth"),
    clientHeight: Object.getOwnPropertyDescriptor(Element.prototype, "clientHeight"),
    scrollHeight: Object.getOwnPropertyDescriptor(Element.prototype, "scrollHeight"),
    scrollTop: Object.getOwnPropertyDescriptor(Element.prototype, "scrollTop"),
  };
  const contentHeight = (el: Element): number => {
    const inner = el.firstElementChild?.nextElementSibling ?? el.firstElementChild;
    const h = inner instanceof HTMLElement ? parseFloat(inner.style.height || "0") : 0;
    return Math.max(h, viewport.height);
  };
  Object.defineProperty(HTMLElement.prototype, "offsetHeight", { configurable: true, get: () => viewport.height });
  Object.defineProperty(HTMLElement.prototype, "offsetWidth", { configurable: true, get: () => viewport.width });
  Object.defineProperty(Element.prototype, "clientHeight", { configurable: true, get: () => viewport.height });
  Object.defineProperty(Element.prototype, "scrollHeight", {
    configurable: true,
    get(this: Element) {
      return contentHeight(this);
    },
  });
  Object.defineProperty(Element.prototype, "scrollTop", {
    configurable: true,
    get(this: Element) {
      return scrollTops.get(this) ?? 0;
    },
    set(this: Element, value: number) {
      const max = Math.max(0, contentHeight(this) - viewport.height);
      scrollTops.set(this, Math.min(Math.max(0, value), max));
    },
  });
  return () => {
    for (const [key, desc] of Object.entries(originals)) {
      const proto = key === "offsetHeight" || key === "offsetWidth" ? HTMLElement.prototype : Element.prototype;
      if (desc) Object.defineProperty(proto, key, desc);
      else delete (proto as unknown as Record<string, unknown>)[key];
    }
  };
}

/** Waits until `selector` matches an element in the document, and returns it. */
export async function findBySelector<E extends Element = HTMLElement>(selector: string): Promise<E> {
  return waitFor(() => {
    const el = document.querySelector<E>(selector);
    if (!el) throw new Error(`nothing matches ${selector}`);
    return el;
  });
}
