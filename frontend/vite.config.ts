/**
 * Builds the classifier and the scientists' pages (dashboard, subject, admin, project builder) into frontend/dist/ with
 * stable names (classifier.js, classifier.css, dashboard.js, dashboard.css, ...) that Django serves as
 * static files under app/; no Node at run time.
 */
import { defineConfig } from "vitest/config";

export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2020",
    sourcemap: false,
    modulePreload: false,
    rollupOptions: {
      // Separate entries: the volunteers' classifier stays small; the scientists' pages share charts.js.
      // The builder's two entries (its pages; the preview frame's stand-in for the API) import no
      // module of the classifier's but types, so classifier.js stays one file.
      input: {
        classifier: "src/classifier.ts", dashboard: "src/dashboard.ts", subject: "src/subject.ts", admin: "src/admin.ts",
        builder: "src/builder.ts", builder_preview: "src/builder_preview.ts", similarity: "src/similarity.ts",
      },
      output: {
        entryFileNames: "[name].js",
        chunkFileNames: "[name].js",
        assetFileNames: "[name][extname]",
      },
    },
  },
  test: {
    include: ["tests/**/*.test.ts"],
    environment: "node",
  },
});
