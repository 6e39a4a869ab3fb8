// Copies the browser files the console and the API docs serve from inside the package (no CDN)
// out of node_modules into consumer/entrypoints/console/static/vendor, with their licences.
// Run by `make web-assets` after a version change in package.json; the copies are committed.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "..", "..", "consumer", "entrypoints", "console", "static", "vendor");
const modules = join(here, "node_modules");
const files = [
  ["htmx.org/dist/htmx.min.js", "htmx.min.js"],
  ["htmx.org/LICENSE", "htmx.LICENSE.txt"],
  ["swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-bundle.js"],
  ["swagger-ui-dist/swagger-ui.css", "swagger-ui.css"],
  ["swagger-ui-dist/LICENSE", "swagger-ui.LICENSE.txt"],
  ["swagger-ui-dist/NOTICE", "swagger-ui.NOTICE.txt"],
  ["redoc/bundles/redoc.standalone.js", "redoc.standalone.js"],
  ["redoc/LICENSE", "redoc.LICENSE.txt"],
];
mkdirSync(target, { recursive: true });
for (const [source, name] of files) {
  copyFileSync(join(modules, source), join(target, name));
  console.log(`vendored ${source} -> ${name}`);
}
