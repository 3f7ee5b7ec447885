// Must compile under tsc --strict: SessionKeeperSessionStore is the SDK's SessionStore (every
// optional method included: Required<SessionStore>), whichever way it is built, and goes into the
// SDK's Options.
import type { Options, SessionStore } from "@anthropic-ai/claude-agent-sdk";

import { SessionKeeper, SessionKeeperSessionStore } from "../../src/index";

export const built: Required<SessionStore> = new SessionKeeperSessionStore({
  address: "sessionkeeper:50051",
  namespace: "acme",
  token: "t",
  tls: { rootCerts: "ca.pem" },
});
export const fromAddress: SessionStore = new SessionKeeperSessionStore("localhost:50051");
export const fromClient: Required<SessionStore> = SessionKeeperSessionStore.fromClient(new SessionKeeper("localhost:50051"), {
  namespace: "acme",
});
export const options: Options = { cwd: "/srv/repo", sessionStore: built };
