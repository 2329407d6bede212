#!/usr/bin/env node
// Builds the console when frontend/dist is missing or older than its sources (used by `npm run start`).
// Installs the locked dependencies first (`npm ci`) when node_modules is missing.

import { execSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const built = path.join(root, "dist", "index.html");
const sources = ["src", "public", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json"];

function newest(p) {
  if (!existsSync(p)) return 0;
  const st = statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let max = st.mtimeMs;
  for (const name of readdirSync(p)) max = Math.max(max, newest(path.join(p, name)));
  return max;
}

const builtAt = existsSync(built) ? statSync(built).mtimeMs : 0;
const sourcesAt = Math.max(...sources.map((s) => newest(path.join(root, s))));
if (builtAt && builtAt >= sourcesAt) {
  console.log("console build is up to date");
  process.exit(0);
}
const run = (cmd) => execSync(cmd, { cwd: root, stdio: "inherit" });
if (!existsSync(path.join(root, "node_modules", ".package-lock.json"))) {
  console.log("installing console dependencies (npm ci)…");
  run("npm ci --no-audit --no-fund");
}
console.log(builtAt ? "console sources changed: rebuilding…" : "building the console…");
run("npm run build");
