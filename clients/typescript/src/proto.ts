// Loads sessionkeeper.v1 (SessionService and TranscriptService) with @grpc/proto-loader from the
// protos shipped in this package, typed by the code proto-loader-gen-types generated from the same
// files (src/generated, see scripts/generate.mjs: the options below must match the generator's).
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { join } from "node:path";

import type { ProtoGrpcType as SessionProto } from "./generated/session";
import type { ProtoGrpcType as TranscriptProto } from "./generated/transcript";

export const PROTO_DIR = join(__dirname, "..", "..", "proto");
export const PROTO_FILE = "sessionkeeper/v1/session.proto";
export const TRANSCRIPT_PROTO_FILE = "sessionkeeper/v1/transcript.proto";

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

export type ProtoGrpcType = SessionProto & TranscriptProto;

let loaded: ProtoGrpcType | undefined;

/** The loaded package definition (cached): both services of sessionkeeper.v1. */
export function sessionkeeperProto(): ProtoGrpcType {
  if (!loaded) {
    const definition = protoLoader.loadSync([PROTO_FILE, TRANSCRIPT_PROTO_FILE], LOADER_OPTIONS);
    loaded = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return loaded;
}

export type { SessionServiceClient } from "./generated/sessionkeeper/v1/SessionService";
export type { TranscriptServiceClient } from "./generated/sessionkeeper/v1/TranscriptService";
export type { GetResponse__Output } from "./generated/sessionkeeper/v1/GetResponse";
export type { ReportResultResponse__Output } from "./generated/sessionkeeper/v1/ReportResultResponse";
export type { AgentResult as AgentResultMessage } from "./generated/sessionkeeper/v1/AgentResult";
export type { Decision__Output as Decision } from "./generated/sessionkeeper/v1/Decision";
export type { FreshReason__Output as FreshReason } from "./generated/sessionkeeper/v1/FreshReason";
export type { ResultClass__Output as ResultClass } from "./generated/sessionkeeper/v1/ResultClass";
export type { Action__Output as Action } from "./generated/sessionkeeper/v1/Action";
export type { AppendEntriesRequest } from "./generated/sessionkeeper/v1/AppendEntriesRequest";
export type { AppendEntriesResponse__Output } from "./generated/sessionkeeper/v1/AppendEntriesResponse";
export type { LoadTranscriptResponse__Output } from "./generated/sessionkeeper/v1/LoadTranscriptResponse";
export type { ListTranscriptSessionsResponse__Output } from "./generated/sessionkeeper/v1/ListTranscriptSessionsResponse";
export type { ListSubkeysResponse__Output } from "./generated/sessionkeeper/v1/ListSubkeysResponse";
export type { DeleteTranscriptResponse__Output } from "./generated/sessionkeeper/v1/DeleteTranscriptResponse";
export type { Summary__Output } from "./generated/sessionkeeper/v1/Summary";
