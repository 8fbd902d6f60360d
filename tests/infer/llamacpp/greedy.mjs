// node greedy.mjs MODEL.gguf IDS N THREADS → JSON array of the N greedy token ids llama.cpp picks.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [model_path, ids, n, threads] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: model_path});
const ctx = await model.createContext({contextSize: 512, batchSize: 512, threads: Number(threads || 2)});
const seq = ctx.getSequence();
const out = [];
for await (const t of seq.evaluate(ids.split(",").map(Number), {temperature: 0})) {
    out.push(t);
    if (out.length >= Number(n)) break;
}
console.log(JSON.stringify(out));
await ctx.dispose();
await model.dispose();
