// Drives the real @fal-ai/client against fal_mock through the proxy middleware.
//
//   node run_scenario.mjs <scenario> <proxy url> [proxy|manual]
//
// Prints exactly one JSON line on stdout: {"ok": true, "result": ..., "fetches": [...]}
// or {"ok": false, "error": ..., "fetches": [...]}. `fetches` lists every HTTP request the
// process made (method + URL); any URL that is not on 127.0.0.1 is refused before it leaves.
// Driven by tests/test_js_client.py.
import { createHash, randomBytes } from "node:crypto";

import { ApiError, fal, ValidationError } from "@fal-ai/client";

import { configure, fetches, parseArgs, sockets } from "./harness.mjs";

const [scenarioName, PROXY, middleware = "proxy"] = parseArgs(
  "node run_scenario.mjs <scenario> <proxy url> [proxy|manual]",
  2,
);
configure(PROXY, middleware);

// -- helpers -----------------------------------------------------------------------------------
function describeError(err) {
  const out = {
    name: err?.name,
    message: err?.message,
    isApiError: err instanceof ApiError,
    isValidationError: err instanceof ValidationError,
  };
  if (err instanceof ApiError) {
    out.status = err.status;
    out.body = err.body ?? null;
    out.requestId = err.requestId;
    if (err.timeoutType !== undefined) out.timeoutType = err.timeoutType;
  }
  if (err instanceof ValidationError) {
    out.fieldErrors = err.fieldErrors;
  }
  return out;
}

async function caught(promise) {
  try {
    return { resolved: await promise };
  } catch (err) {
    return { error: describeError(err) };
  }
}

function update(u) {
  const out = { status: u.status };
  if ("queue_position" in u) out.queue_position = u.queue_position;
  if (Array.isArray(u.logs)) out.logs = u.logs.map((l) => l.message);
  return out;
}

const hex = (buf) => Buffer.from(buf).toString("hex");
const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0x10, 0x80]);

// -- scenarios ---------------------------------------------------------------------------------
const scenarios = {
  // fal.subscribe, polling (the default mode), with logs and queue updates
  async subscribe() {
    const updates = [];
    let enqueued = null;
    const result = await fal.subscribe("fal-ai/flux/dev", {
      input: { prompt: "a cat" },
      logs: true,
      pollInterval: 10,
      onEnqueue: (requestId) => {
        enqueued = requestId;
      },
      onQueueUpdate: (u) => updates.push(update(u)),
    });
    return { data: result.data, requestId: result.requestId, enqueued, updates };
  },

  // fal.subscribe in streaming mode: GET .../requests/{id}/status/stream (SSE)
  async subscribe_streaming() {
    const updates = [];
    let enqueued = null;
    const result = await fal.subscribe("fal-ai/flux/dev", {
      input: { prompt: "a dog" },
      mode: "streaming",
      logs: true,
      onEnqueue: (requestId) => {
        enqueued = requestId;
      },
      onQueueUpdate: (u) => updates.push(update(u)),
    });
    return { data: result.data, requestId: result.requestId, enqueued, updates };
  },

  // fal.queue.submit / status / result, step by step
  async queue() {
    const submitted = await fal.queue.submit("fal-ai/flux/dev", {
      input: { prompt: "a fox" },
      priority: "low",
      hint: "gpu-a",
      headers: { "X-Custom-Thing": "1" },
    });
    const requestId = submitted.request_id;
    const first = await fal.queue.status("fal-ai/flux/dev", { requestId, logs: true });
    const early = await fal.queue.result("fal-ai/flux/dev", { requestId });
    const second = await fal.queue.status("fal-ai/flux/dev", { requestId, logs: false });
    const result = await fal.queue.result("fal-ai/flux/dev", { requestId });
    return {
      submitted,
      first,
      early: { data: early.data, requestId: early.requestId },
      second,
      result,
    };
  },

  // fal.queue.cancel before completion, then again after
  async cancel() {
    const { request_id: requestId } = await fal.queue.submit("fal-ai/flux/dev", {
      input: { prompt: "a slow cat" },
    });
    const cancelled = await fal.queue.cancel("fal-ai/flux/dev", { requestId });
    const status = await fal.queue.status("fal-ai/flux/dev", { requestId, logs: true });
    const result = await caught(fal.queue.result("fal-ai/flux/dev", { requestId }));
    const again = await caught(fal.queue.cancel("fal-ai/flux/dev", { requestId }));
    return { requestId, cancelled: cancelled ?? null, status: update(status), rawStatus: status, result, again };
  },

  // fal.subscribe with a client timeout: rejects, and cancels the request
  async subscribe_timeout() {
    let enqueued = null;
    const outcome = await caught(
      fal.subscribe("fal-ai/flux/dev", {
        input: { prompt: "too slow" },
        pollInterval: 10,
        timeout: 300,
        onEnqueue: (requestId) => {
          enqueued = requestId;
        },
      }),
    );
    // the client fires the cancel without awaiting it: give it a moment to land
    await new Promise((resolve) => setTimeout(resolve, 200));
    return { enqueued, ...outcome };
  },

  // fal.run (POST) and fal.run with method "get" and a path
  async run() {
    const post = await fal.run("fal-ai/fast-sdxl", { input: { prompt: "a tree" } });
    const get = await fal.run("fal-ai/fast-sdxl", { method: "get", path: "/info", input: { a: "1" } });
    return { post, get };
  },

  // fal.stream: POST https://fal.run/{id}/stream, text/event-stream
  async stream() {
    const stream = await fal.stream("fal-ai/any-llm", { input: { prompt: "hi" } });
    const events = [];
    for await (const event of stream) {
      events.push(event);
    }
    const done = await stream.done();
    return { events, done, requestId: stream.requestId };
  },

  // fal.storage.upload: initiate through the proxy, PUT directly to upload_url, then GET file_url
  async upload() {
    const file = new File([PNG], "pixel.png", { type: "image/png" });
    const url = await fal.storage.upload(file);
    const response = await fetch(url);
    const bytes = new Uint8Array(await response.arrayBuffer());
    return {
      url,
      status: response.status,
      contentType: response.headers.get("content-type"),
      sent: hex(PNG),
      received: hex(bytes),
    };
  },

  // fal.storage.upload over 90 MiB: initiate-multipart through the proxy, 10 MiB parts PUT
  // directly one after the other (the ETag is read from the JSON answer), then complete
  async upload_multipart() {
    const size = 91 * 1024 * 1024 + 5;
    const data = Buffer.alloc(size, randomBytes(1024 * 1024 + 13)); // every 10 MiB part differs
    const file = new File([data], "take.mov", { type: "video/quicktime" });
    const url = await fal.storage.upload(file);
    const response = await fetch(url);
    const received = Buffer.from(await response.arrayBuffer());
    const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");
    return {
      url,
      status: response.status,
      contentType: response.headers.get("content-type"),
      size,
      receivedSize: received.length,
      sent: sha256(data),
      received: sha256(received),
    };
  },

  // a Blob inside the input is uploaded first and replaced by its file_url
  async upload_in_input() {
    const blob = new Blob([new TextEncoder().encode("RIFF-audio")], { type: "audio/wav" });
    const result = await fal.run("fal-ai/whisper", { input: { audio_url: blob, task: "transcribe" } });
    return result;
  },

  // a 422 fixture: ValidationError, through subscribe (queue result) and run
  async error_validation() {
    const viaSubscribe = await caught(
      fal.subscribe("fal-ai/flux/dev", { input: { prompt: "" }, pollInterval: 10 }),
    );
    const viaRun = await caught(fal.run("fal-ai/flux/dev", { input: { prompt: "" } }));
    const withStringDetail = await caught(fal.run("fal-ai/fast-sdxl", { input: { prompt: "" } }));
    return { viaSubscribe, viaRun, withStringDetail };
  },

  // non-422 fixtures: ApiError with status and body
  async error_api() {
    const viaSubscribe = await caught(
      fal.subscribe("fal-ai/flux/dev", { input: { prompt: "boom" }, pollInterval: 10 }),
    );
    const viaRun = await caught(fal.run("fal-ai/fast-sdxl", { input: { prompt: "nope" } }));
    const viaStream = await caught(
      fal.stream("fal-ai/any-llm", { input: { prompt: "nope" } }).then((s) => s.done()),
    );
    return { viaSubscribe, viaRun, viaStream };
  },

  // on_error(..., times=1) in front of on_run(): fails once, then succeeds (JS does not retry 4xx)
  async fail_then_succeed() {
    const first = await caught(fal.run("fal-ai/fast-sdxl", { input: { prompt: "again" } }));
    const second = await caught(fal.run("fal-ai/fast-sdxl", { input: { prompt: "again" } }));
    return { first, second };
  },

  // startTimeout: a fixture slower than it ends in fal's 504 (run at once, subscribe via its
  // result), and an on_error 504 with X-Fal-Request-Timeout-Type; none is retried
  async start_timeout() {
    const [run, subscribe, injected] = await Promise.all([
      caught(fal.run("fal-ai/fast-sdxl", { input: { prompt: "slow" }, startTimeout: 1.01 })),
      caught(
        fal.subscribe("fal-ai/flux/dev", { input: { prompt: "slow" }, startTimeout: 1.01, pollInterval: 10 }),
      ),
      caught(fal.run("fal-ai/whisper", { input: { audio_url: "https://example.com/a.mp3" } })),
    ]);
    return { run, subscribe, injected };
  },

  // a model without a fixture: 404 ApiError naming the model
  async unmatched() {
    return await caught(fal.run("fal-ai/unknown-model", { input: { prompt: "?" } }));
  },

  // fal.realtime.connect: token through the proxy, then the WebSocket (through the shim), one
  // message at a time (the client keeps only the last message sent while connecting)
  async realtime() {
    return await realtimeSession("fal-ai/fast-lcm-diffusion", ["a cat", "a dog", "a fox"]);
  },

  // an x-fal-error answer (on_realtime_error): onError with an ApiError
  async realtime_error() {
    return await realtimeSession("fal-ai/broken", ["a cat"]);
  },

  // a model without a realtime fixture: x-fal-error, then the mock closes the connection (1008)
  async realtime_unmatched() {
    return await realtimeSession("fal-ai/unknown-model", ["a cat"], 2);
  },
};

// Sends each prompt once the previous one got an answer (a result or an error), then closes
// after `settle` answers. Answers after that (the client reports its own close as an error)
// are listed apart, as `late`.
function realtimeSession(app, prompts, settle = prompts.length) {
  const results = [];
  const errors = [];
  const late = [];
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      connection.close();
      reject(new Error(`realtime: no answer in 10 s after ${JSON.stringify({ results, errors })}`));
    }, 10000);
    const answered = () => {
      const next = results.length + errors.length;
      if (next < prompts.length) {
        connection.send({ prompt: prompts[next], seed: 1 });
      } else if (next >= settle) {
        done = true;
        clearTimeout(timer);
        connection.close();
        setTimeout(() => resolve({ results, errors, late, sockets }), 100); // let the close land
      }
    };
    const connection = fal.realtime.connect(app, {
      throttleInterval: 0,
      onResult: (result) => {
        (done ? late : results).push(result);
        if (!done) answered();
      },
      onError: (error) => {
        (done ? late : errors).push(describeError(error));
        if (!done) answered();
      },
    });
    connection.send({ prompt: prompts[0], seed: 1 });
  });
}

const scenario = scenarios[scenarioName];
if (!scenario) {
  console.error(`unknown scenario ${scenarioName}; known: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}

try {
  const result = await scenario();
  process.stdout.write(JSON.stringify({ ok: true, result, fetches, sockets }) + "\n");
} catch (err) {
  process.stdout.write(
    JSON.stringify({ ok: false, error: describeError(err), stack: err?.stack, fetches, sockets }) + "\n",
  );
  process.exitCode = 1;
}
