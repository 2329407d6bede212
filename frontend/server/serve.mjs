#!/usr/bin/env node
// Serves the built console (frontend/dist) and proxies /api (SSE included, streamed unbuffered) to the gateway.
// No dependencies: Node's http module only.
//
//   BUGAGARIC_FRONTEND_PORT  port to listen on              (default 3000)
//   BUGAGARIC_FRONTEND_HOST  address to bind                (default 127.0.0.1; 0.0.0.0 for every interface)
//   BUGAGARIC_GATEWAY_URL    the REST gateway to proxy to   (default http://127.0.0.1:18080)
//   BUGAGARIC_FRONTEND_DIST  the built files                (default ../dist next to this file)

import { createReadStream, existsSync, statSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const port = Number(process.env.BUGAGARIC_FRONTEND_PORT || 3000);
const host = process.env.BUGAGARIC_FRONTEND_HOST || "127.0.0.1";
const gateway = new URL(process.env.BUGAGARIC_GATEWAY_URL || "http://127.0.0.1:18080");
const dist = path.resolve(process.env.BUGAGARIC_FRONTEND_DIST || path.join(here, "..", "dist"));

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
  ".map": "application/json; charset=utf-8",
};

// Paths forwarded to the gateway: the API (and its streams) plus its OpenAPI docs.
const PROXIED = [/^\/api(\/|$)/, /^\/docs(\/|$)/, /^\/openapi\.json$/];
// Hop-by-hop headers are not forwarded (RFC 9110 7.6.1).
const HOP = new Set([
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
]);

function log(...args) {
  console.log(new Date().toISOString(), ...args);
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function proxy(req, res) {
  const client = gateway.protocol === "https:" ? https : http;
  const headers = {};
  for (const [key, value] of Object.entries(req.headers)) {
    if (!HOP.has(key.toLowerCase())) headers[key] = value;
  }
  headers.host = gateway.host;
  headers["x-forwarded-for"] = req.socket.remoteAddress ?? "";
  headers["x-forwarded-host"] = req.headers.host ?? "";
  headers["x-forwarded-proto"] = "http";
  const basePath = gateway.pathname.replace(/\/$/, "");
  const upstream = client.request(
    {
      protocol: gateway.protocol,
      hostname: gateway.hostname,
      port: gateway.port || (gateway.protocol === "https:" ? 443 : 80),
      method: req.method,
      path: basePath + req.url,
      headers,
    },
    (up) => {
      const out = {};
      for (const [key, value] of Object.entries(up.headers)) {
        if (!HOP.has(key.toLowerCase()) && value !== undefined) out[key] = value;
      }
      const isStream = String(up.headers["content-type"] || "").startsWith("text/event-stream");
      if (isStream) {
        // Every event goes out the moment it arrives: no buffering here or in a proxy in front of us.
        out["cache-control"] = "no-cache, no-transform";
        out["x-accel-buffering"] = "no";
        delete out["content-length"];
        req.socket.setNoDelay(true);
        req.socket.setTimeout(0);
      }
      res.writeHead(up.statusCode || 502, out);
      if (isStream) res.flushHeaders();
      up.pipe(res);
      up.on("error", () => res.destroy());
    },
  );
  upstream.on("error", (err) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendJson(res, 502, {
      error: { code: "gateway_unavailable", message: `gateway ${gateway.origin} unreachable: ${err.message}`, field: null },
    });
  });
  // The browser went away (closed tab, an aborted fetch of a stream): drop the upstream stream too.
  res.on("close", () => {
    if (!res.writableFinished) upstream.destroy();
  });
  req.pipe(upstream);
}

function serveStatic(req, res) {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD" });
    res.end();
    return;
  }
  let pathname;
  try {
    pathname = decodeURIComponent(new URL(req.url, "http://x").pathname);
  } catch {
    res.writeHead(400);
    res.end();
    return;
  }
  const file = path.resolve(dist, "." + pathname);
  let target = null;
  if (file.startsWith(dist + path.sep) && existsSync(file) && statSync(file).isFile()) target = file;
  if (!target) {
    // A missing asset is a 404; any other path is a client-side route: the app's index.html.
    if (pathname.startsWith("/assets/") || path.extname(pathname)) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      res.end("not found");
      return;
    }
    target = path.join(dist, "index.html");
  }
  const ext = path.extname(target);
  const headers = {
    "content-type": MIME[ext] || "application/octet-stream",
    "content-length": statSync(target).size,
    "x-content-type-options": "nosniff",
    // Hashed assets never change; index.html must always be revalidated so a new build is picked up.
    "cache-control": target.includes(`${path.sep}assets${path.sep}`) ? "public, max-age=31536000, immutable" : "no-cache",
  };
  res.writeHead(200, headers);
  if (req.method === "HEAD") {
    res.end();
    return;
  }
  createReadStream(target).pipe(res);
}

if (!existsSync(path.join(dist, "index.html"))) {
  console.error(`console not built: ${path.join(dist, "index.html")} is missing; run \`npm run build\` in frontend/`);
  process.exit(1);
}

const server = http.createServer((req, res) => {
  const url = req.url || "/";
  if (url === "/healthz") {
    sendJson(res, 200, { status: "ok", gateway: gateway.origin });
    return;
  }
  if (PROXIED.some((re) => re.test(url.split("?")[0]))) proxy(req, res);
  else serveStatic(req, res);
});
server.keepAliveTimeout = 65_000;
server.requestTimeout = 0; // SSE responses are long-lived
server.headersTimeout = 66_000;
server.listen(port, host, () => {
  log(`BugAgaric console on http://${host}:${port}  (dist ${dist}; /api -> ${gateway.origin})`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
