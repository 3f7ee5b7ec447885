// A CommonJS project: `require` takes the package's CommonJS entry.
"use strict";

const check = require("./check.cjs");

const entry = require.resolve("@sessionkeeper/client");
if (!entry.endsWith("dist/src/index.js")) throw new Error(`require resolved ${entry}, not the CommonJS entry`);
check(require("@sessionkeeper/client"), "require").catch((err) => {
  console.error(err);
  process.exit(1);
});
