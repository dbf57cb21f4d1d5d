// The openai npm package's `client.videos`, unchanged, against
// aimlvid-server: create, poll as the proxy asks, download. Run by
// crates/server/tests/it/sdk.rs with AIMLVID_BASE_URL, AIMLVID_KEY,
// AIMLVID_OUT and AIMLVID_OPENAI_NODE_MODULES (where `openai` is installed)
// set; prints one line of JSON on success, throws on the first difference.

import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, statSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(join(process.env.AIMLVID_OPENAI_NODE_MODULES, "noop.js"));
const { default: OpenAI, NotFoundError } = require("openai");

const check = (condition, what) => {
  if (!condition) throw new Error(what);
};

const client = new OpenAI({ baseURL: process.env.AIMLVID_BASE_URL, apiKey: process.env.AIMLVID_KEY, maxRetries: 0 });

let video = await client.videos.create({ model: "google/veo-3.1-t2v-fast", prompt: "a lighthouse at night", seconds: "4" });
check(video.object === "video" && video.status === "queued", `created: ${JSON.stringify(video)}`);

// The npm package has no createAndPoll: wait as its README suggests, at the
// pace the proxy's `openai-poll-after-ms` asks.
let retrieves = 0;
while (video.status === "queued" || video.status === "in_progress") {
  const { data, response } = await client.videos.retrieve(video.id).withResponse();
  retrieves += 1;
  video = data;
  if (video.status === "queued" || video.status === "in_progress") {
    const after = Number(response.headers.get("openai-poll-after-ms") ?? 1000);
    check(after >= 1000, `openai-poll-after-ms ${after}`);
    await new Promise((resolve) => setTimeout(resolve, after));
  }
}
check(video.status === "completed" && video.progress === 100, `finished: ${JSON.stringify(video)}`);
check(video.seconds === "4", `seconds ${video.seconds}`);

const content = await client.videos.downloadContent(video.id);
check(content.headers.get("content-type") === "video/mp4", `content-type ${content.headers.get("content-type")}`);
const path = join(process.env.AIMLVID_OUT, "node.mp4");
writeFileSync(path, Buffer.from(await content.arrayBuffer()));
const probe = JSON.parse(
  execFileSync("ffprobe", ["-v", "error", "-show_entries", "stream=codec_type", "-of", "json", path]).toString(),
);
const kinds = probe.streams.map((s) => s.codec_type);
check(kinds.includes("video"), `ffprobe found ${kinds}`);

try {
  await client.videos.retrieve("no-such-video");
  throw new Error("an unknown id was answered");
} catch (e) {
  check(e instanceof NotFoundError, `an unknown id: ${e}`);
}

const { version } = JSON.parse(readFileSync(join(process.env.AIMLVID_OPENAI_NODE_MODULES, "openai/package.json")));
console.log(JSON.stringify({ openai: version, id: video.id, retrieves, bytes: statSync(path).size }));
