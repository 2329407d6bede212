import { describe, expect, it } from "vitest";
import { grantedScopes, keyFormProblem, toggleScope } from "./apiKeys";

describe("keyFormProblem", () => {
  it("asks for a name of 1..100 characters and at least one known scope", () => {
    expect(keyFormProblem("  ", ["read"])).toEqual({ field: "name", message: "settings.keys.nameRequired" });
    expect(keyFormProblem("x".repeat(101), ["read"])).toEqual({ field: "name", message: "settings.keys.nameTooLong" });
    expect(keyFormProblem(` ${"x".repeat(100)} `, ["read"])).toBeNull();
    expect(keyFormProblem("ci", [])).toEqual({ field: "scopes", message: "settings.keys.scopeRequired" });
    expect(keyFormProblem("ci", ["write"])).toEqual({ field: "scopes", message: "settings.keys.scopeRequired" });
    expect(keyFormProblem("ci", ["submit"])).toBeNull();
  });
});

describe("scopes", () => {
  it("nest: submit grants read, admin grants all", () => {
    expect(grantedScopes(["read"])).toEqual(["read"]);
    expect(grantedScopes(["submit"])).toEqual(["read", "submit"]);
    expect(grantedScopes(["admin"])).toEqual(["read", "submit", "admin"]);
    expect(grantedScopes(["bogus"])).toEqual([]);
  });

  it("toggle keeps the canonical order and drops unknown ones and those the checked one includes", () => {
    expect(toggleScope(["read"], "submit", true)).toEqual(["submit"]);
    expect(toggleScope(["read", "submit"], "admin", true)).toEqual(["admin"]);
    expect(toggleScope(["admin"], "admin", false)).toEqual([]);
    expect(toggleScope(["read", "submit", "x"], "read", false)).toEqual(["submit"]);
  });
});
