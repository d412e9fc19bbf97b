// Setup shared by the scripts that drive the real @fal-ai/client against the mock
// (run_scenario.mjs, standalone.mjs): arguments, the network guard, fal.config() and the
// WebSocket shim for fal.realtime.
import { fal, withMiddleware, withProxy } from "@fal-ai/client";
import WebSocket from "ws";

// Every HTTP request the process made (method + URL), in order.
export const fetches = [];
// Every WebSocket the process opened (the URL the client asked for), in order.
export const sockets = [];

// The positional arguments; prints `usage` and exits 2 when one of the first `required` is missing.
export function parseArgs(usage, required) {
  const args = process.argv.slice(2);
  if ([...Array(required).keys()].some((i) => !args[i])) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return args;
}

// Installs the network guard, then points fal at `proxy` with the `middleware` flavour.
export function configure(proxy, middleware = "proxy") {
  // -- network guard: installed before fal.config(), which captures globalThis.fetch ---------
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (input, init = {}) => {
    const url = typeof input === "string" ? input : input.url;
    const method = (init.method ?? "GET").toUpperCase();
    fetches.push({ method, url });
    if (new URL(url).hostname !== "127.0.0.1") {
      throw new Error(`network guard: refused ${method} ${url} (only 127.0.0.1 is allowed)`);
    }
    return realFetch(input, init);
  };

  // -- WebSockets: Node 20 has no global WebSocket, and fal.realtime.connect() opens
  // wss://fal.run/... directly (no middleware): the `ws` package, pointed at the mock
  // (the README's recipe, plus the guard).
  const mockRun = proxy.replace(/^http/, "ws") + "/run/";
  globalThis.WebSocket = class extends WebSocket {
    constructor(url, protocols) {
      const target = String(url).replace(/^wss:\/\/fal\.run\//, mockRun);
      sockets.push(String(url));
      if (new URL(target).hostname !== "127.0.0.1") {
        throw new Error(`network guard: refused WebSocket ${url} (only 127.0.0.1 is allowed)`);
      }
      super(target, protocols);
    }
  };

  // -- the configuration under test (copied into the README) ---------------------------------
  if (middleware === "proxy") {
    // @fal-ai/client >= 1.10
    fal.config({
      credentials: "x",
      requestMiddleware: withMiddleware(withProxy({ targetUrl: proxy, when: "always" })),
    });
  } else if (middleware === "manual") {
    // @fal-ai/client < 1.10: withProxy does nothing outside a browser, so write the middleware
    fal.config({
      credentials: "x",
      requestMiddleware: async (req) => ({
        ...req,
        url: proxy,
        headers: { ...req.headers, "x-fal-target-url": req.url },
      }),
    });
  } else {
    console.error(`unknown middleware ${middleware}`);
    process.exit(2);
  }
}
