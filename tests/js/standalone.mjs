// Drives the standalone `fal-mock` server with the real @fal-ai/client (tests/test_cli.py).
//
//   node standalone.mjs <proxy url>
//
// Prints one JSON line: {"subscribe": ..., "run": ..., "stream": ..., "fetches": [...]}. Any URL
// that is not on 127.0.0.1 is refused before it leaves the process.
import { fal } from "@fal-ai/client";

import { configure, fetches, parseArgs } from "./harness.mjs";

const [PROXY] = parseArgs("node standalone.mjs <proxy url>", 1);
configure(PROXY);

const updates = [];
const subscribed = await fal.subscribe("fal-ai/flux/dev", {
  input: { prompt: "a cat" },
  pollInterval: 10,
  onQueueUpdate: (update) => updates.push(update.status),
});
const ran = await fal.run("fal-ai/whisper", { input: { audio_url: "https://example.com/a.mp3" } });
const stream = await fal.stream("fal-ai/any-llm", { input: { prompt: "hi" } });
const events = [];
for await (const event of stream) {
  events.push(event);
}

console.log(
  JSON.stringify({
    subscribe: { data: subscribed.data, requestId: subscribed.requestId, updates },
    run: ran.data,
    stream: { events, done: await stream.done() },
    fetches,
  }),
);
