// HTTP/2 client helpers for node:http2 sessions.

import type { ClientHttp2Session } from "node:http2";

/** Waits until the server's SETTINGS allow extended CONNECT (RFC 8441). */
export async function extendedConnectAllowed(session: ClientHttp2Session): Promise<void> {
  await new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("no SETTINGS_ENABLE_CONNECT_PROTOCOL from the server")), 5_000);
    const check = (settings: { enableConnectProtocol?: boolean }) => {
      if (settings.enableConnectProtocol) {
        clearTimeout(timer);
        ok();
      }
    };
    if (session.remoteSettings) check(session.remoteSettings);
    session.on("remoteSettings", check);
  });
}
