// node tokenize.mjs MODEL.gguf STRINGS.jsonl → one JSON array of ids a line: llama.cpp's
// tokenization of each JSON string (BOS added as the vocabulary says, special tokens parsed).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import {readFileSync} from "node:fs";

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: process.argv[2], vocabOnly: true});
const out = [];
for (const line of readFileSync(process.argv[3], "utf8").split("\n")) {
    if (!line) continue;
    const ids = Array.from(model.tokenize(JSON.parse(line), true));
    if (model.tokens.bos != null && model.tokens.shouldPrependBosToken) ids.unshift(model.tokens.bos);
    out.push(JSON.stringify(ids));
}
console.log(out.join("\n"));
await model.dispose();
