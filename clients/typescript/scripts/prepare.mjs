// `prepare`: runs after `npm ci` here, before `npm pack`, and when a project installs this directory
// by path (`npm install <repo>/clients/typescript`). npm links such a directory and installs none of
// its dependencies, so on a fresh clone this installs them first (from package-lock.json, with the
// build tools), then builds: the linked package then runs from its own node_modules and dist/.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const needed = ["@grpc/grpc-js", "@grpc/proto-loader", "@types/node", "typescript"];
// The npm that runs this script (npm sets npm_execpath), else the one on PATH.
const npm = (...args) =>
  process.env.npm_execpath
    ? execFileSync(process.execPath, [process.env.npm_execpath, ...args], { cwd: here, stdio: "inherit" })
    : execFileSync("npm", args, { cwd: here, stdio: "inherit" });

if (needed.some((name) => !existsSync(join(here, "node_modules", name, "package.json")))) {
  console.error("@sessionkeeper/client: installing its own dependencies (npm ci) to build it");
  npm("ci", "--ignore-scripts", "--include=dev", "--omit=optional", "--no-audit", "--no-fund", "--loglevel=error");
}
npm("run", "build");
