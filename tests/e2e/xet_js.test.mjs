// The npm client (@huggingface/hub) through Hearth's Xet CAS (issue 7): it lists "xet" in the
// LFS batch call, Hearth answers transfer "xet", and the client uploads xorbs and shards
// (chunked with xetchunk-wasm's boundary rule, not hf_xet's). The file must then read back
// byte for byte over plain HTTP (npm client) and through the CAS (Python hf_xet), and bytes the
// Python client uploaded first must mostly be found by the npm client's dedup query.
// Run: node --test --test-reporter=tap tests/e2e/xet_js.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createCipheriv, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { createRepo, uploadFile, downloadFile } from "@huggingface/hub";

import { HearthServer, REPO_ROOT } from "./hub_server.mjs";

const srv = new HearthServer("xet-js");
const venvPython = join(REPO_ROOT, "tests", ".venv", "bin", "python");
const hasHfXet = existsSync(venvPython) &&
	(() => { try { execFileSync(venvPython, ["-c", "import hf_xet"]); return true; } catch { return false; } })();
const MiB = 1 << 20;
const suffix = randomBytes(4).toString("hex");
const tmp = mkdtempSync(join(tmpdir(), "hearth-xet-js-"));
let xetReady = false;

const creds = () => ({ hubUrl: srv.base, accessToken: srv.token });

/** Log lines written while fn runs. */
async function logged(fn) {
	const start = srv.log().split("\n").length;
	await fn();
	await new Promise((r) => setTimeout(r, 200));
	return srv.log().split("\n").slice(start - 1);
}

const xorbBytes = (lines) =>
	lines.map((l) => /xet: xorb \w+ \((\d+) bytes\) stored/.exec(l)).filter(Boolean).reduce((n, m) => n + Number(m[1]), 0);

function pyXet(code) {
	const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HF_")));
	Object.assign(env, {
		HF_ENDPOINT: srv.base, HF_TOKEN: srv.token, HF_HOME: join(tmp, "py", "home"),
		HF_XET_CACHE: join(tmp, "py", "xet"), HF_HUB_CACHE: join(tmp, "py", "hub"),
		HF_HUB_DISABLE_PROGRESS_BARS: "1", NO_PROXY: "127.0.0.1,localhost",
	});
	const out = execFileSync(venvPython, ["-c", code], { env, encoding: "utf8", maxBuffer: 1 << 26 });
	return JSON.parse(out.trim().split("\n").pop());
}

before(async () => {
	await srv.start();
	const r = await fetch(`${srv.base}/api/models/${srv.user}/none/xet-read-token/main`);
	await createRepo({ ...creds(), repo: { type: "model", name: `${srv.user}/probe-${suffix}` } });
	const w = await fetch(`${srv.base}/api/models/${srv.user}/probe-${suffix}/xet-write-token/main`, {
		headers: { Authorization: `Bearer ${srv.token}` },
	});
	xetReady = w.status === 200 && r.status === 404;
});

after(async () => {
	await srv.stop();
	const errors = srv.sanitizerErrors();
	srv.cleanup();
	rmSync(tmp, { recursive: true, force: true });
	if (errors.length) throw new Error(`hearth serve reported sanitizer errors:\n${errors.join("\n")}`);
});

test("the npm client uploads through the CAS; every client reads the file back", async (t) => {
	if (!xetReady) return t.skip("the store has no Xet support");
	const name = `${srv.user}/xet-js-${suffix}`;
	await createRepo({ ...creds(), repo: { type: "model", name } });
	const data = randomBytes(12 * MiB + 321);
	const lines = await logged(() =>
		uploadFile({ ...creds(), repo: { type: "model", name }, file: { path: "w.bin", content: new Blob([data]) } }),
	);
	assert.ok(lines.some((l) => / POST \S*\/cas\/v1\/xorbs\//.test(l)), "xorbs went to the CAS");
	assert.ok(lines.some((l) => / POST \S*\/cas\/v1\/shards /.test(l)), "a shard went to the CAS");
	assert.ok(!lines.some((l) => / PUT \S*\/info\/lfs\/objects\/upload\//.test(l)), "no LFS PUT");
	assert.ok(xorbBytes(lines) >= data.length, "all bytes travelled once");

	const blob = await downloadFile({ ...creds(), repo: { type: "model", name }, path: "w.bin" });
	assert.ok(Buffer.from(await blob.arrayBuffer()).equals(data), "npm client download");

	if (!hasHfXet) return;
	const got = pyXet(`
import json, huggingface_hub as h
print(json.dumps({"path": h.hf_hub_download(${JSON.stringify(name)}, "w.bin")}))`);
	assert.ok(readFileSync(got.path).equals(data), "hf_xet download through the CAS");
});

test("bytes uploaded by hf_xet are mostly found by the npm client's dedup query", async (t) => {
	if (!xetReady || !hasHfXet) return t.skip(!xetReady ? "the store has no Xet support" : "no hf_xet in tests/.venv");
	// Fixed pseudo-random bytes (AES-CTR of zeros): whether the npm client's dedup query finds
	// the pack depends on where the two chunkers' boundaries fall, so the content must not
	// change from run to run.
	const data = createCipheriv("aes-128-ctr", Buffer.alloc(16, 7), Buffer.alloc(16, 0)).update(Buffer.alloc(16 * MiB));
	const file = join(tmp, "shared.bin");
	writeFileSync(file, data);
	const first = `${srv.user}/xet-py-${suffix}`, second = `${srv.user}/xet-js2-${suffix}`;
	for (const name of [first, second]) await createRepo({ ...creds(), repo: { type: "model", name } });
	pyXet(`
import json, huggingface_hub as h
h.HfApi().upload_file(path_or_fileobj=${JSON.stringify(file)}, path_in_repo="s.bin", repo_id=${JSON.stringify(first)})
print("{}")`);
	const lines = await logged(() =>
		uploadFile({ ...creds(), repo: { type: "model", name: second }, file: { path: "s.bin", content: new Blob([data]) } }),
	);
	const sent = xorbBytes(lines);
	// The two chunkers differ at ~8% of boundaries (docs/xet-format.md): those chunks travel.
	assert.ok(sent < data.length / 4, `the npm client sent ${sent} of ${data.length} bytes`);
	const blob = await downloadFile({ ...creds(), repo: { type: "model", name: second }, path: "s.bin" });
	assert.ok(Buffer.from(await blob.arrayBuffer()).equals(data));
});
