// Loads sessionkeeper.v1 with @grpc/proto-loader from the proto shipped in this package, typed by
// the code proto-loader-gen-types generated from the same file (src/generated, see
// scripts/generate.mjs: the options below must match the generator's).
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { join } from "node:path";

import type { ProtoGrpcType } from "./generated/session";

export const PROTO_DIR = join(__dirname, "..", "..", "proto");
export const PROTO_FILE = "sessionkeeper/v1/session.proto";

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

let loaded: ProtoGrpcType | undefined;

/** The loaded package definition (cached). */
export function sessionkeeperProto(): ProtoGrpcType {
  if (!loaded) {
    const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
    loaded = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return loaded;
}

export type { SessionServiceClient } from "./generated/sessionkeeper/v1/SessionService";
export type { GetResponse__Output } from "./generated/sessionkeeper/v1/GetResponse";
export type { ReportResultResponse__Output } from "./generated/sessionkeeper/v1/ReportResultResponse";
export type { AgentResult as AgentResultMessage } from "./generated/sessionkeeper/v1/AgentResult";
export type { Decision__Output as Decision } from "./generated/sessionkeeper/v1/Decision";
export type { FreshReason__Output as FreshReason } from "./generated/sessionkeeper/v1/FreshReason";
export type { ResultClass__Output as ResultClass } from "./generated/sessionkeeper/v1/ResultClass";
export type { Action__Output as Action } from "./generated/sessionkeeper/v1/Action";
