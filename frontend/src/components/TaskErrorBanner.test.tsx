// A failed task's banner: the message once, the traceback only inside a closed <details>.
import { screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { renderWithI18n } from "../test/render";
import { TaskErrorBanner } from "./TaskErrorBanner";

const failed = {
  error: "ValueError: Target modules {'no_such_proj'} not found in the base model",
  error_reason: "trainer_error",
  error_details: '  File "peft/tuners/tuners_utils.py", line 520, in inject_adapter\n    raise ValueError(msg)',
};

describe("TaskErrorBanner", () => {
  it("shows the message with its reason and folds the traceback behind 详情", () => {
    const { container } = renderWithI18n(<TaskErrorBanner task={failed} />);
    expect(screen.getByTestId("task-error-message").textContent).toBe(failed.error);
    expect(screen.getByTestId("task-error").textContent).toContain("trainer_error: ");
    const details = screen.getByTestId("task-error-details") as HTMLDetailsElement;
    expect(details.tagName).toBe("DETAILS");
    expect(details.open).toBe(false);
    expect(details.querySelector("summary")?.textContent).toBe("详情");
    expect(details.querySelector("pre")?.textContent).toBe(failed.error_details);
    expect(container.textContent?.split("no_such_proj").length).toBe(2); // said once
  });

  it("has no details element without a traceback, and nothing at all without an error", () => {
    renderWithI18n(<TaskErrorBanner task={{ ...failed, error_details: null }} />, "en");
    expect(screen.queryByTestId("task-error-details")).toBeNull();
    const { container } = renderWithI18n(<TaskErrorBanner task={{ error: null, error_reason: null, error_details: null }} />);
    expect(container.innerHTML).toBe("");
  });
});
