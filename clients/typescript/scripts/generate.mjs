// Generate the package's protobuf inputs from the repository's contract (run by `npm run build`):
//   proto/sessionkeeper/v1/*.proto        copies of ../../proto/... (session.proto, transcript.proto),
//                                         loaded at run time by @grpc/proto-loader and shipped in the
//                                         npm package;
//   src/generated/                        TypeScript types of every message, enum and the service
//                                         client, by proto-loader-gen-types (same options as
//                                         LOADER_OPTIONS in src/proto.ts).
// Neither is checked in. Outside the repository (an unpacked npm package) the shipped copy is used.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const files = ["sessionkeeper/v1/session.proto", "sessionkeeper/v1/transcript.proto"];
const sourceDir = join(here, "..", "..", "proto");
const inRepository = existsSync(join(sourceDir, files[0]));

for (const file of files) {
  const source = join(sourceDir, file);
  const copy = join(here, "proto", file);
  if (inRepository) {
    mkdirSync(dirname(copy), { recursive: true });
    copyFileSync(source, copy);
  } else if (!existsSync(copy)) {
    throw new Error(`${file} not found at ${source} or ${copy}`);
  }
}

const out = join(here, "src", "generated");
rmSync(out, { recursive: true, force: true });
const bin = join(here, "node_modules", ".bin", "proto-loader-gen-types");
execFileSync(
  bin,
  [
    "--grpcLib=@grpc/grpc-js",
    `--outDir=${out}`,
    `--includeDirs=${join(here, "proto")}`,
    "--longs=String",
    "--enums=String",
    "--defaults",
    "--oneofs",
    "--includeComments",
    ...files,
  ],
  { stdio: "inherit" },
);
console.log(`generated ${out} from ${inRepository ? sourceDir : join(here, "proto")} (${files.join(", ")})`);
