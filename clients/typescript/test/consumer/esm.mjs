// An ES module project: `import` takes the package's ESM entry.
import { fileURLToPath } from "node:url";

import * as client from "@sessionkeeper/client";
import check from "./check.cjs";

const entry = fileURLToPath(import.meta.resolve("@sessionkeeper/client"));
if (!entry.endsWith("dist/esm/index.mjs")) throw new Error(`import resolved ${entry}, not the ESM entry`);
await check(client, "import");
