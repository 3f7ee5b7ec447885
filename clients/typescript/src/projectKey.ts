// The Claude Agent SDK's project key: the SessionStore key under which the SDK appends and loads a
// session's transcript (SessionKey.projectKey). The SDK does not export it, so this is a port of
// @anthropic-ai/claude-agent-sdk 0.3.332 (sdk.mjs: `function Dn(`, `function la(`, `function iR(`,
// `function cC(`), checked against the SDK itself in test/projectKey.test.ts. It must not drift
// from the SDK: a different key means a resume that finds no transcript.
import { realpathSync } from "node:fs";
import { resolve } from "node:path";

/** Longer sanitised paths are cut to this length and suffixed with a hash (the SDK's `Kr`). */
const MAX_SANITIZED_LENGTH = 200;
/** CLAUDE_CODE_PROJECT_DIR_NAME values the SDK accepts (`pQ`, `fQ`). */
const DIR_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const RESERVED_DIR_NAME = /^(?:con|prn|aux|nul|com[0-9]|lpt[0-9])$/i;

/** The SDK's 32-bit string hash (`iR`: h = h * 31 + UTF-16 code unit, wrapping). */
function hash(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = ((h << 5) - h + s.charCodeAt(i)) | 0;
  return h;
}

/** Every non-alphanumeric character becomes '-'; past 200 characters, cut and add '-<hash base36>'. */
export function sanitizePath(path: string): string {
  const sanitized = path.replace(/[^a-zA-Z0-9]/g, "-");
  if (sanitized.length <= MAX_SANITIZED_LENGTH) return sanitized;
  return `${sanitized.slice(0, MAX_SANITIZED_LENGTH)}-${Math.abs(hash(path)).toString(36)}`;
}

function validDirName(name: string | undefined): string | undefined {
  if (!name || !DIR_NAME.test(name) || RESERVED_DIR_NAME.test(name)) return undefined;
  return name;
}

/**
 * The project key the Claude Agent SDK uses for a query with `options.cwd` and `options.env`: the
 * real path of `cwd` (default: the process's working directory) sanitised, unless
 * CLAUDE_CODE_PROJECT_DIR_NAME names the project directory. The SDK honours that variable only
 * together with CLAUDE_CONFIG_DIR, read from `env` when it is given, else from process.env.
 */
export function projectKeyForDirectory(cwd?: string, env?: Record<string, string | undefined>): string {
  let path = resolve(cwd ?? ".");
  try {
    path = realpathSync(path);
  } catch {
    // a path that does not exist (yet) is used as given, as the SDK does
  }
  if (process.platform === "darwin") path = path.normalize("NFC");
  const vars = env ?? process.env;
  const named = vars.CLAUDE_CONFIG_DIR ? validDirName(vars.CLAUDE_CODE_PROJECT_DIR_NAME) : undefined;
  return named ?? sanitizePath(path);
}
