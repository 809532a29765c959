#!/usr/bin/env node
// llama.cpp on this machine, through the prebuilt CPU libraries of the npm
// package node-llama-cpp (scripts/install-deps.sh --llama-cpp puts them in
// build/llama-cpp; llama.cpp itself is not a Debian package). Two commands
// over a GGUF file written by `stlm-run export`:
//
//   llama-cpp.mjs generate -m FILE -n N [-t THREADS] PROMPT
//       greedy: writes PROMPT and the N bytes llama.cpp continues it with
//       to stdout, llama.cpp's load log to stderr (what its llama-simple
//       example does; test/stlm-run/export-llama-cpp.test).
//   llama-cpp.mjs bench -m FILE -n N [-t THREADS] [--rounds R] [--prompt P]
//       greedy generation of N tokens after P (default one byte, "\n"), R
//       times (default 3); one JSON line a round: llama.cpp's own decode
//       time (its llama_perf counters: the time inside llama_decode, the
//       binding's JavaScript between tokens left out) and the wall clock
//       of the whole loop (bench/decode.sh).
//
// The libraries pick their kernels for the CPU at load (libggml-cpu-zen4,
// -sapphirerapids, ...). The binding builds a throwaway thread pool for
// every graph whose threads spin at barriers, which on a 2-core machine
// leaves a thread spinning through scheduler quanta; bench runs therefore
// name their thread count, and bench/decode.sh compares at 1 thread.
// STLM_LLAMA_CPP_DIR overrides where the package is looked for.
import {closeSync, existsSync, openSync, readFileSync, readSync} from "node:fs";
import {dirname, join, resolve} from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const usage =
  "usage: llama-cpp.mjs generate -m FILE -n N [-t THREADS] PROMPT\n" +
  "       llama-cpp.mjs bench -m FILE -n N [-t THREADS] [--rounds R] [--prompt P]";

function fail(message) {
  process.stderr.write(`llama-cpp.mjs: error: ${message}\n`);
  process.exit(1);
}

function positiveInt(flag, text) {
  const v = Number(text);
  if (!Number.isInteger(v) || v < 1) fail(`${flag} wants a positive integer, not '${text}'`);
  return v;
}

function parse(argv) {
  const [command, ...rest] = argv;
  if (command !== "generate" && command !== "bench") {
    process.stderr.write(usage + "\n");
    process.exit(2);
  }
  const o = {command, model: null, tokens: null, threads: 1, rounds: 3, prompt: null};
  for (let i = 0; i < rest.length; ++i) {
    const a = rest[i];
    const value = () => {
      if (i + 1 >= rest.length) fail(`${a} needs a value`);
      return rest[++i];
    };
    if (a === "-m") o.model = value();
    else if (a === "-n") o.tokens = positiveInt(a, value());
    else if (a === "-t") o.threads = positiveInt(a, value());
    else if (a === "--rounds" && command === "bench") o.rounds = positiveInt(a, value());
    else if (a === "--prompt" && command === "bench") o.prompt = value();
    else if (a.startsWith("-") && a !== "-") fail(`unknown option '${a}'\n${usage}`);
    else if (command === "generate" && o.prompt === null) o.prompt = a;
    else fail(`unexpected argument '${a}'\n${usage}`);
  }
  if (!o.model) fail(`-m FILE is required\n${usage}`);
  if (!o.tokens) fail(`-n N is required\n${usage}`);
  if (o.prompt === null) {
    if (command === "generate") fail(`a PROMPT is required\n${usage}`);
    o.prompt = "\n";
  }
  if (o.prompt.length === 0) fail("the prompt is empty");
  if (!existsSync(o.model)) fail(`no such file '${o.model}'`);
  const head = Buffer.alloc(4);
  const fd = openSync(o.model, "r");
  readSync(fd, head, 0, 4, 0);
  closeSync(fd);
  if (head.toString("latin1") !== "GGUF") fail(`'${o.model}' is not a GGUF file (stlm-run export --format gguf writes one)`);
  return o;
}

async function loadBinding() {
  const here = dirname(fileURLToPath(import.meta.url));
  const dir = resolve(process.env.STLM_LLAMA_CPP_DIR || join(here, "..", "build", "llama-cpp"));
  const entry = join(dir, "node_modules", "node-llama-cpp", "dist", "index.js");
  if (!existsSync(entry))
    fail(`llama.cpp is not installed in ${dir}: run scripts/install-deps.sh --llama-cpp ` +
         `(or set STLM_LLAMA_CPP_DIR)`);
  return import(pathToFileURL(entry).href);
}

// Greedy generation of n tokens after the prompt's; returns the tokens and
// the wall time of the loop after the first token (the prefill's).
async function greedy(model, context, prompt, n) {
  const sequence = context.getSequence();
  const input = model.tokenize(prompt, false, "trimLeadingSpace");
  const out = [];
  let start = 0n;
  const t0 = process.hrtime.bigint();
  for await (const token of sequence.evaluate(input, {temperature: 0})) {
    if (out.length === 0) start = process.hrtime.bigint();
    out.push(token);
    if (out.length >= n) break;
  }
  const end = process.hrtime.bigint();
  sequence.dispose();
  return {input, out, prefill_s: Number(start - t0) / 1e9, decode_s: Number(end - start) / 1e9};
}

// The decode line of llama_perf_context_print, "eval time = 80.20 ms /
// 199 runs" (not its "prompt eval time" line).
function decodeCounters(text) {
  const m = text.match(/[^t] eval time\s*=\s*([0-9.]+) ms \/\s*([0-9]+)/);
  return m ? {ms: Number(m[1]), count: Number(m[2])} : null;
}

const o = parse(process.argv.slice(2));
const {getLlama, LlamaLogLevel} = await loadBinding();
const logs = [];
const llama = await getLlama({
  gpu: false, build: "never", maxThreads: o.threads, logLevel: LlamaLogLevel.info,
  logger: (level, message) => logs.push(message),
});
let model;
try {
  model = await llama.loadModel({modelPath: o.model});
} catch (e) {
  process.stderr.write(logs.join("\n") + "\n");
  fail(`llama.cpp could not load '${o.model}': ${e.message}`);
}
// Token i is byte i in stlm's GGUF vocabulary (docs/export.md): the
// prompt's UTF-8 bytes are its tokens.
const needed = Buffer.byteLength(o.prompt, "utf8") + o.tokens;
if (needed > model.trainContextSize)
  fail(`the prompt and ${o.tokens} tokens need ${needed} positions, more than the ` +
       `model's context of ${model.trainContextSize} (llama.cpp does not move a ` +
       `window as stlm-run generate does)`);
const context = await model.createContext({
  contextSize: Math.max(needed + 1, 32),
  threads: {ideal: o.threads, min: o.threads},
  performanceTracking: true,
  // Dispatch each token at once rather than on the next event-loop turn.
  batching: {dispatchSchedule: (dispatch) => dispatch()},
});

if (o.command === "generate") {
  const {out} = await greedy(model, context, o.prompt, o.tokens);
  process.stderr.write(logs.join("\n") + "\n");
  process.stdout.write(Buffer.concat([Buffer.from(o.prompt, "utf8"), Buffer.from(out)]));
} else {
  // The CPU kernels ggml chose for this machine: the library it mapped.
  const maps = readFileSync("/proc/self/maps", "utf8").match(/libggml-cpu-[\w-]+\.so/);
  for (let r = 0; r < o.rounds; ++r) {
    const {input, out, prefill_s, decode_s} = await greedy(model, context, o.prompt, o.tokens);
    const mark = logs.length;
    await context.printTimings();  // prints llama.cpp's counters, then resets them
    const decoded = decodeCounters(logs.slice(mark).join("\n"));
    if (!decoded) fail("llama.cpp printed no decode timings");
    process.stdout.write(JSON.stringify({
      model: o.model, threads: o.threads, prompt_tokens: input.length,
      tokens: out.length, prefill_ms: 1000 * prefill_s,
      decode_tokens_per_s: decoded.count / (decoded.ms / 1000),
      wall_decode_tokens_per_s: (out.length - 1) / decode_s,
      ggml_cpu_library: maps ? maps[0] : null,
    }) + "\n");
  }
}
await context.dispose();
await model.dispose();
