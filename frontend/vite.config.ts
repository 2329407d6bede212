/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const gateway = process.env.BUGAGARIC_GATEWAY_URL || "http://127.0.0.1:18080";

export default defineConfig({
  plugins: [react()],
  // `npm run dev` only; production serving is server/serve.mjs (npm run serve).
  server: {
    port: Number(process.env.BUGAGARIC_FRONTEND_PORT || 3000),
    proxy: { "/api": { target: gateway, changeOrigin: true } },
  },
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 1024 },
  test: {
    environment: "jsdom",
    globals: true,
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test/setup.ts"],
  },
});
