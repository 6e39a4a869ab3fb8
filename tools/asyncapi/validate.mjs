// Parse an AsyncAPI document with the official parser; exit 1 on any error-level diagnostic.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs ASYNCAPI.json");
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(await readFile(path, "utf8"));
// Spectral severities: 0 error, 1 warning, 2 info, 3 hint.
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  const level = ["error", "warning", "info", "hint"][d.severity] ?? d.severity;
  console.log(`${level}: ${d.code}: ${d.message} at /${d.path.join("/")}`);
}
if (errors.length > 0 || document === undefined) {
  console.error(`${path}: ${errors.length} errors`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()} (${diagnostics.length} diagnostics, 0 errors)`);
