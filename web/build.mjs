// Copies the npm packages the map page uses into the app's static files (api/static/vendor),
// so the page needs no CDN and no internet: bureau networks are often offline.
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "api", "static", "vendor");
const leaflet = join(here, "node_modules", "leaflet");
const { version } = JSON.parse(readFileSync(join(leaflet, "package.json"), "utf8"));

rmSync(join(vendor, "leaflet"), { recursive: true, force: true });
mkdirSync(join(vendor, "leaflet"), { recursive: true });
for (const name of ["leaflet.js", "leaflet.css", "images"]) {
  cpSync(join(leaflet, "dist", name), join(vendor, "leaflet", name), { recursive: true });
}
cpSync(join(leaflet, "LICENSE"), join(vendor, "leaflet", "LICENSE"));
writeFileSync(join(vendor, "leaflet", "VERSION"), `${version}\n`);
console.log(`leaflet ${version} -> ${join(vendor, "leaflet")}`);
