// Drives the standalone `fal-mock` server with the real @fal-ai/client (tests/test_cli.py).
//
//   node standalone.mjs <proxy url>
//
// Prints one JSON line: {"subscribe": ..., "run": ..., "fetches": [...]}. Any URL that is not
// on 127.0.0.1 is refused before it leaves the process.
import { fal, withMiddleware, withProxy } from "@fal-ai/client";

const [PROXY] = process.argv.slice(2);
if (!PROXY) {
  console.error("usage: node standalone.mjs <proxy url>");
  process.exit(2);
}

const fetches = [];
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

fal.config({
  credentials: "x",
  requestMiddleware: withMiddleware(withProxy({ targetUrl: PROXY, when: "always" })),
});

const updates = [];
const subscribed = await fal.subscribe("fal-ai/flux/dev", {
  input: { prompt: "a cat" },
  pollInterval: 10,
  onQueueUpdate: (update) => updates.push(update.status),
});
const ran = await fal.run("fal-ai/whisper", { input: { audio_url: "https://example.com/a.mp3" } });

console.log(
  JSON.stringify({
    subscribe: { data: subscribed.data, requestId: subscribed.requestId, updates },
    run: ran.data,
    fetches,
  }),
);
