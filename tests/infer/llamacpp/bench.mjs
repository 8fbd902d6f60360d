// node bench.mjs MODEL.gguf PROMPT_TOKENS GEN_TOKENS THREADS
// → JSON {prompt_tps, decode_tps, peak_rss_mib}: llama.cpp's prompt and decode speed on the same
// token ids Hearth's benchmark uses (ids 100.. cycling, greedy decoding).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import {performance} from "node:perf_hooks";

const [model_path, np, ng, threads] = process.argv.slice(2).map((x, i) => i ? Number(x) : x);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: model_path, useMmap: true});
const ctx = await model.createContext({contextSize: np + ng + 8, batchSize: Math.max(np, 32), threads});
const prompt = Array.from({length: np}, (_, i) => 100 + (i * 7) % 1000);

// warm-up: one short evaluation so that lazy initialisation is not timed
{
    const s = ctx.getSequence();
    await s.evaluateWithoutGeneratingNewTokens(prompt.slice(0, 8));
    s.dispose();
}
const seq = ctx.getSequence();
let t0 = performance.now();
await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, np - 1));
const prompt_s = (performance.now() - t0) / 1000;
let count = 0;
t0 = performance.now();
let first = 0;
for await (const t of seq.evaluate([prompt[np - 1]], {temperature: 0})) {
    if (count === 0) first = performance.now();
    if (++count >= ng) break;
}
const decode_s = (performance.now() - first) / 1000;
console.log(JSON.stringify({prompt_tps: (np - 1) / prompt_s, decode_tps: (ng - 1) / decode_s,
                           peak_rss_mib: process.resourceUsage().maxRSS / 1024}));
await ctx.dispose();
await model.dispose();
