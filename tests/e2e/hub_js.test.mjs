// The official JavaScript client (@huggingface/hub) against a real `hearth serve`
// (issue 3, acceptance item 2, JS half). Run: node --test --test-reporter=tap tests/e2e/hub_js.test.mjs
// Flat top-level tests that run in order and share one server and one model repo.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

import {
	whoAmI,
	createRepo,
	uploadFiles,
	listFiles,
	downloadFile,
	fileExists,
	parseSafetensorsMetadata,
	modelInfo,
	listModels,
	pathsInfo,
	createBranch,
	deleteFile,
	listCommits,
	countCommits,
	snapshotDownload,
	deleteRepo,
	repoExists,
	datasetInfo,
	uploadFile,
	deleteFiles,
	deleteBranch,
	downloadFileToCacheDir,
	listDatasets,
	spaceInfo,
} from "@huggingface/hub";

import { HearthServer } from "./hub_server.mjs";
import { buildSafetensors } from "./hub_safetensors.mjs";

const srv = new HearthServer("js");
let hubUrl, accessToken, user;
const suffix = randomBytes(4).toString("hex");
let repoName; // "alice/js-model-<suffix>"
let repo; // { type: "model", name }
const files = {}; // path -> Buffer, what the main upload committed
let uploadCommit; // oid of the main upload
const cacheDirs = [];

const sha256 = (b) => createHash("sha256").update(b).digest("hex");
const gitBlobSha1 = (b) => createHash("sha1").update(Buffer.concat([Buffer.from(`blob ${b.length}\0`), b])).digest("hex");
const blobOf = (buf) => new Blob([buf]);
const creds = () => ({ hubUrl, accessToken });

async function collect(gen) {
	const out = [];
	for await (const x of gen) out.push(x);
	return out;
}

function tmpCache() {
	const d = mkdtempSync(join(tmpdir(), "hearth-js-cache-"));
	cacheDirs.push(d);
	return d;
}

// A test whose failure also shows the server's log tail (as TAP diagnostics).
function t(name, fn) {
	test(name, async (ctx) => {
		try {
			await fn(ctx);
		} catch (err) {
			for (const line of srv.tail(30).split("\n")) ctx.diagnostic(line);
			throw err;
		}
	});
}

async function expectStatus(promise, status) {
	await assert.rejects(promise, (err) => {
		assert.equal(err.statusCode, status, `expected HTTP ${status}, got ${err.statusCode}: ${err.message}`);
		return true;
	});
}

before(async () => {
	await srv.start();
	hubUrl = srv.base;
	accessToken = srv.token;
	user = srv.user;
	repoName = `${user}/js-model-${suffix}`;
	repo = { type: "model", name: repoName };
});

after(async () => {
	const code = await srv.stop();
	const errors = srv.sanitizerErrors();
	for (const d of cacheDirs) rmSync(d, { recursive: true, force: true });
	srv.cleanup();
	if (errors.length) throw new Error(`hearth serve reported sanitizer errors:\n${errors.join("\n")}\n${srv.tail(60)}`);
	if (code !== 0 && code !== null && !/LeakSanitizer/.test(srv.log())) {
		throw new Error(`hearth serve exited ${code} after SIGTERM\n${srv.tail(30)}`);
	}
});

t("whoAmI", async () => {
	const me = await whoAmI(creds());
	assert.equal(me.name, user);
	assert.equal(me.type, "user");
	assert.equal(me.auth.accessToken.role, "write");
	assert.ok(me.auth.accessToken.createdAt instanceof Date);
	const ro = await whoAmI({ hubUrl, accessToken: srv.readToken });
	assert.equal(ro.auth.accessToken.role, "read");
	await expectStatus(whoAmI({ hubUrl, accessToken: "hf_notARealToken0000000000000000" }), 401);
});

t("createRepo (model, dataset, space) and 409 on a second create", async () => {
	const m = await createRepo({ repo, ...creds() });
	assert.equal(m.repoUrl, `${hubUrl}/${repoName}`);
	assert.ok(m.id);
	const ds = await createRepo({ repo: { type: "dataset", name: `${user}/js-ds-${suffix}` }, ...creds() });
	assert.equal(ds.repoUrl, `${hubUrl}/datasets/${user}/js-ds-${suffix}`);
	const sp = await createRepo({ repo: { type: "space", name: `${user}/js-space-${suffix}` }, ...creds() });
	assert.equal(sp.repoUrl, `${hubUrl}/spaces/${user}/js-space-${suffix}`);
	await expectStatus(createRepo({ repo, ...creds() }), 409);
	assert.equal(await repoExists({ repo, hubUrl, accessToken }), true);
	assert.equal(await repoExists({ repo: { type: "dataset", name: `${user}/js-ds-${suffix}` }, hubUrl, accessToken }), true);
	assert.equal(await repoExists({ repo: { type: "model", name: `${user}/js-nope-${suffix}` }, hubUrl, accessToken }), false);
});

t("uploadFiles: regular, nested and a >= 12 MiB LFS blob in one commit", async () => {
	files["README.md"] = Buffer.from("---\nlicense: mit\ntags:\n- hearth-js\npipeline_tag: text-generation\n---\n# JS model\n");
	files["config.json"] = Buffer.from(JSON.stringify({ model_type: "gpt2", n_embd: 8 }));
	files["nested/deeper/notes.txt"] = Buffer.from("nested text file\n");
	files["big.bin"] = randomBytes(12 * 1024 * 1024 + 333);
	files["model.safetensors"] = buildSafetensors();
	// a fresh repo may or may not start with an initial commit (.gitattributes)
	const before = await countCommits({ repo, ...creds() }).catch(() => 0);
	const out = await uploadFiles({
		repo,
		...creds(),
		files: Object.entries(files).map(([path, buf]) => ({ path, content: blobOf(buf) })),
		commitTitle: "JS upload",
	});
	assert.match(out.commit.oid, /^[0-9a-f]{40}$/);
	assert.ok(out.commit.url.includes("/commit/"));
	uploadCommit = out.commit.oid;
	assert.equal(await countCommits({ repo, ...creds() }), before + 1);
});

t("listFiles (recursive and not)", async () => {
	const all = await collect(listFiles({ repo, recursive: true, ...creds() }));
	const byPath = Object.fromEntries(all.map((e) => [e.path, e]));
	for (const [path, buf] of Object.entries(files)) {
		assert.ok(byPath[path], `missing ${path}`);
		assert.equal(byPath[path].type, "file");
		assert.equal(byPath[path].size, buf.length, path);
	}
	assert.equal(byPath["nested"].type, "directory");
	assert.equal(byPath["nested/deeper"].type, "directory");
	assert.equal(byPath["big.bin"].lfs?.oid, sha256(files["big.bin"]));
	assert.equal(byPath["big.bin"].lfs?.size, files["big.bin"].length);
	assert.equal(byPath["config.json"].oid, gitBlobSha1(files["config.json"]));
	assert.equal(byPath["config.json"].lfs, undefined);
	const extra = all.filter((e) => e.type === "file" && !(e.path in files)).map((e) => e.path);
	assert.deepEqual(extra.filter((p) => p !== ".gitattributes"), []);
	const top = (await collect(listFiles({ repo, ...creds() }))).map((e) => e.path);
	assert.ok(top.includes("nested") && top.includes("big.bin"));
	assert.ok(!top.includes("nested/deeper/notes.txt"));
	const sub = (await collect(listFiles({ repo, path: "nested", recursive: true, ...creds() }))).map((e) => e.path).sort();
	assert.deepEqual(sub, ["nested/deeper", "nested/deeper/notes.txt"]);
});

t("downloadFile: regular, nested, LFS, raw pointer, missing", async () => {
	for (const path of ["config.json", "nested/deeper/notes.txt", "big.bin", "model.safetensors"]) {
		const blob = await downloadFile({ repo, path, ...creds() });
		assert.ok(blob, path);
		assert.equal(blob.size, files[path].length, path);
		assert.ok(Buffer.from(await blob.arrayBuffer()).equals(files[path]), `${path} differs`);
	}
	// a slice of the LFS file (Range)
	const big = await downloadFile({ repo, path: "big.bin", ...creds() });
	const part = Buffer.from(await big.slice(7_000_001, 7_000_101).arrayBuffer());
	assert.ok(part.equals(files["big.bin"].subarray(7_000_001, 7_000_101)));
	const raw = await downloadFile({ repo, path: "big.bin", raw: true, ...creds() });
	const pointer = Buffer.from(await raw.arrayBuffer()).toString();
	assert.equal(pointer, `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(files["big.bin"])}\nsize ${files["big.bin"].length}\n`);
	assert.equal(await downloadFile({ repo, path: "does/not/exist.txt", ...creds() }), null);
	const atCommit = await downloadFile({ repo, path: "config.json", revision: uploadCommit, ...creds() });
	assert.ok(Buffer.from(await atCommit.arrayBuffer()).equals(files["config.json"]));
});

t("fileExists", async () => {
	assert.equal(await fileExists({ repo, path: "config.json", ...creds() }), true);
	assert.equal(await fileExists({ repo, path: "big.bin", ...creds() }), true);
	assert.equal(await fileExists({ repo, path: "nested/deeper/notes.txt", ...creds() }), true);
	assert.equal(await fileExists({ repo, path: "nope.txt", ...creds() }), false);
});

t("parseSafetensorsMetadata on a hand-built safetensors file", async () => {
	const parsed = await parseSafetensorsMetadata({ repo, computeParametersCount: true, ...creds() });
	assert.equal(parsed.sharded, false);
	assert.deepEqual(parsed.header.__metadata__, { format: "pt", source: "hearth-e2e", total_parameters: "9" });
	assert.deepEqual(parsed.header.weight, { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] });
	assert.deepEqual(parsed.header.bias, { dtype: "F16", shape: [3], data_offsets: [24, 30] });
	assert.deepEqual(parsed.parameterCount, { F32: 6, F16: 3 });
	assert.equal(parsed.parameterTotal, 9);
	const byPath = await parseSafetensorsMetadata({ repo, path: "model.safetensors", ...creds() });
	assert.deepEqual(byPath.header.weight.shape, [2, 3]);
});

t("modelInfo", async () => {
	const info = await modelInfo({ name: repoName, additionalFields: ["sha", "cardData", "tags", "author"], ...creds() });
	assert.equal(info.name, repoName);
	assert.ok(info.id);
	assert.equal(info.private, false);
	assert.equal(info.sha, uploadCommit);
	assert.equal(info.task, "text-generation");
	assert.equal(info.cardData?.license, "mit");
	assert.ok(info.tags.includes("hearth-js"));
	assert.equal(info.author, user);
	assert.ok(info.updatedAt instanceof Date && !Number.isNaN(info.updatedAt.getTime()));
	const withFiles = await modelInfo({ name: repoName, additionalFields: ["filePaths"], ...creds() });
	for (const p of Object.keys(files)) assert.ok(withFiles.filePaths.includes(p), p);
	const atMain = await modelInfo({ name: repoName, revision: "main", additionalFields: ["sha"], ...creds() });
	assert.equal(atMain.sha, uploadCommit);
	await assert.rejects(modelInfo({ name: `${user}/js-missing-${suffix}`, ...creds() }), (e) => e.statusCode === 404);
});

t("listModels (search, owner)", async () => {
	const found = await collect(listModels({ search: { query: `js-model-${suffix}` }, ...creds() }));
	assert.deepEqual(found.map((m) => m.name), [repoName]);
	assert.ok(found[0].id);
	assert.equal(found[0].task, "text-generation");
	const mine = await collect(listModels({ search: { owner: user }, ...creds() }));
	assert.ok(mine.some((m) => m.name === repoName));
	assert.ok(mine.every((m) => m.name.startsWith(`${user}/`)));
	const none = await collect(listModels({ search: { query: "nothing-matches-xyzzy" }, ...creds() }));
	assert.deepEqual(none, []);
	const limited = await collect(listModels({ search: { owner: user }, limit: 1, ...creds() }));
	assert.equal(limited.length, 1);
});

t("pathsInfo", async () => {
	const infos = await pathsInfo({ repo, paths: ["config.json", "big.bin", "nested", "missing.txt"], ...creds() });
	const byPath = Object.fromEntries(infos.map((i) => [i.path, i]));
	assert.deepEqual(Object.keys(byPath).sort(), ["big.bin", "config.json", "nested"]);
	assert.equal(byPath["config.json"].type, "file");
	assert.equal(byPath["config.json"].size, files["config.json"].length);
	assert.equal(byPath["big.bin"].lfs.oid, sha256(files["big.bin"]));
	assert.equal(byPath["nested"].type, "directory");
	const expanded = await pathsInfo({ repo, paths: ["config.json"], expand: true, ...creds() });
	assert.equal(expanded[0].lastCommit.id, uploadCommit);
	assert.equal(expanded[0].lastCommit.title, "JS upload");
	assert.ok(expanded[0].lastCommit.date instanceof Date && !Number.isNaN(expanded[0].lastCommit.date.getTime()));
});

t("createBranch and upload to the branch", async () => {
	await createBranch({ repo, branch: "dev", ...creds() });
	await assert.rejects(createBranch({ repo, branch: "dev", ...creds() }), (e) => e.statusCode === 409);
	const out = await uploadFiles({
		repo,
		...creds(),
		branch: "dev",
		files: [{ path: "dev.txt", content: blobOf(Buffer.from("on dev\n")) }],
	});
	assert.match(out.commit.oid, /^[0-9a-f]{40}$/);
	assert.equal(await fileExists({ repo, path: "dev.txt", revision: "dev", ...creds() }), true);
	assert.equal(await fileExists({ repo, path: "dev.txt", ...creds() }), false);
	const blob = await downloadFile({ repo, path: "dev.txt", revision: "dev", ...creds() });
	assert.equal(await blob.text(), "on dev\n");
	const devCommits = await collect(listCommits({ repo, revision: "dev", ...creds() }));
	assert.equal(devCommits[0].oid, out.commit.oid);
	assert.equal(devCommits[1].oid, uploadCommit);
	await createBranch({ repo, branch: "from-commit", revision: uploadCommit, ...creds() });
	const fc = await modelInfo({ name: repoName, revision: "from-commit", additionalFields: ["sha"], ...creds() });
	assert.equal(fc.sha, uploadCommit);
});

t("deleteFile: gone from main, old revision still serves it", async () => {
	const out = await deleteFile({ repo, path: "nested/deeper/notes.txt", ...creds() });
	assert.match(out.commit.oid, /^[0-9a-f]{40}$/);
	assert.equal(await fileExists({ repo, path: "nested/deeper/notes.txt", ...creds() }), false);
	assert.equal(await downloadFile({ repo, path: "nested/deeper/notes.txt", ...creds() }), null);
	const old = await downloadFile({ repo, path: "nested/deeper/notes.txt", revision: uploadCommit, ...creds() });
	assert.ok(Buffer.from(await old.arrayBuffer()).equals(files["nested/deeper/notes.txt"]));
	const paths = (await collect(listFiles({ repo, recursive: true, ...creds() }))).map((e) => e.path);
	assert.ok(!paths.includes("nested/deeper/notes.txt"));
	delete files["nested/deeper/notes.txt"];
	uploadCommit = out.commit.oid;
});

t("listCommits / countCommits", async () => {
	const commits = await collect(listCommits({ repo, ...creds() }));
	assert.equal(commits[0].oid, uploadCommit);
	assert.equal(commits[0].title, "Delete nested/deeper/notes.txt");
	assert.equal(commits[1].title, "JS upload");
	for (const c of commits) {
		assert.match(c.oid, /^[0-9a-f]{40}$/);
		assert.ok(c.date instanceof Date && !Number.isNaN(c.date.getTime()));
		assert.ok(Array.isArray(c.authors));
	}
	assert.equal(await countCommits({ repo, ...creds() }), commits.length);
	// pagination through Link headers
	const paged = await collect(listCommits({ repo, batchSize: 1, ...creds() }));
	assert.deepEqual(paged.map((c) => c.oid), commits.map((c) => c.oid));
	assert.equal(await countCommits({ repo, revision: "dev", ...creds() }), commits.length);
});

t("odd file names and an empty file", async () => {
	const names = { "empty.txt": Buffer.alloc(0), "dir with space/ünïcødé ✓.txt": Buffer.from("unicode\n"), "plus+sign.txt": Buffer.from("+\n") };
	const out = await uploadFiles({
		repo,
		...creds(),
		files: Object.entries(names).map(([path, buf]) => ({ path, content: blobOf(buf) })),
		commitTitle: "odd names",
	});
	assert.match(out.commit.oid, /^[0-9a-f]{40}$/);
	const listed = (await collect(listFiles({ repo, recursive: true, ...creds() }))).map((e) => e.path);
	for (const [path, buf] of Object.entries(names)) {
		assert.ok(listed.includes(path), path);
		const blob = await downloadFile({ repo, path, ...creds() });
		assert.ok(blob, path);
		assert.equal(blob.size, buf.length, path);
		assert.ok(Buffer.from(await blob.arrayBuffer()).equals(buf), path);
		assert.equal(await fileExists({ repo, path, ...creds() }), true, path);
	}
	const infos = await pathsInfo({ repo, paths: Object.keys(names), ...creds() });
	assert.deepEqual(Object.fromEntries(infos.map((i) => [i.path, i.size])), Object.fromEntries(Object.entries(names).map(([p, b]) => [p, b.length])));
	Object.assign(files, names);
	uploadCommit = out.commit.oid;
});

t("snapshotDownload into a fresh cache dir", async () => {
	const cacheDir = tmpCache();
	const snap = await snapshotDownload({ repo, cacheDir, ...creds() });
	assert.ok(snap.endsWith(uploadCommit), snap);
	const got = {};
	const walk = (d) => {
		for (const ent of readdirSync(d, { withFileTypes: true })) {
			const p = join(d, ent.name);
			if (statSync(p).isDirectory()) walk(p);
			else got[relative(snap, p)] = readFileSync(p);
		}
	};
	walk(snap);
	for (const [path, buf] of Object.entries(files)) {
		assert.ok(got[path], `snapshot lacks ${path}`);
		assert.ok(got[path].equals(buf), `${path} differs`);
	}
	assert.deepEqual(Object.keys(got).filter((p) => !(p in files) && p !== ".gitattributes"), []);
});

t("dataset repo: upload and datasetInfo", async () => {
	const ds = { type: "dataset", name: `${user}/js-ds-${suffix}` };
	const csv = Buffer.from("a,b\n1,2\n");
	const out = await uploadFiles({ repo: ds, ...creds(), files: [{ path: "data/train.csv", content: blobOf(csv) }] });
	const info = await datasetInfo({ name: ds.name, additionalFields: ["sha"], ...creds() });
	assert.equal(info.sha, out.commit.oid);
	const blob = await downloadFile({ repo: ds, path: "data/train.csv", ...creds() });
	assert.ok(Buffer.from(await blob.arrayBuffer()).equals(csv));
});

t("uploadFile, deleteFiles, deleteBranch, downloadFileToCacheDir, listDatasets, spaceInfo", async () => {
	const one = await uploadFile({ repo, ...creds(), file: { path: "one/two.txt", content: blobOf(Buffer.from("two\n")) } });
	const cacheDir = tmpCache();
	const p = await downloadFileToCacheDir({ repo, path: "one/two.txt", cacheDir, ...creds() });
	assert.equal(readFileSync(p, "utf8"), "two\n");
	assert.ok(p.includes(one.commit.oid), p);
	const pb = await downloadFileToCacheDir({ repo, path: "big.bin", cacheDir, ...creds() });
	assert.ok(readFileSync(pb).equals(files["big.bin"]));
	const del = await deleteFiles({ repo, paths: ["one/two.txt", "plus+sign.txt"], ...creds() });
	assert.match(del.commit.oid, /^[0-9a-f]{40}$/);
	const left = (await collect(listFiles({ repo, recursive: true, ...creds() }))).map((e) => e.path);
	assert.ok(!left.includes("one/two.txt") && !left.includes("plus+sign.txt"));
	delete files["plus+sign.txt"];
	await deleteBranch({ repo, branch: "dev", ...creds() });
	await assert.rejects(modelInfo({ name: repoName, revision: "dev", ...creds() }), (e) => e.statusCode === 404);
	const ds = await collect(listDatasets({ search: { owner: user }, ...creds() }));
	assert.ok(ds.some((d) => d.name === `${user}/js-ds-${suffix}`), JSON.stringify(ds));
	const sp = await spaceInfo({ name: `${user}/js-space-${suffix}`, additionalFields: ["sdk"], ...creds() });
	assert.equal(sp.name, `${user}/js-space-${suffix}`);
	assert.equal(sp.sdk, "static");
});

t("anonymous writes are refused with 401", async () => {
	const before = await countCommits({ repo, ...creds() });
	await expectStatus(
		uploadFiles({ repo, hubUrl, files: [{ path: "anon.txt", content: blobOf(Buffer.from("x")) }] }),
		401,
	);
	await expectStatus(createRepo({ repo: { type: "model", name: `${user}/js-anon-${suffix}` }, hubUrl }), 401);
	await expectStatus(deleteFile({ repo, path: "config.json", hubUrl }), 401);
	await expectStatus(createBranch({ repo, branch: "anon", hubUrl }), 401);
	assert.equal(await countCommits({ repo, ...creds() }), before);
	assert.equal(await repoExists({ repo: { type: "model", name: `${user}/js-anon-${suffix}` }, hubUrl, accessToken }), false);
	// reads stay open
	assert.equal(await fileExists({ repo, path: "config.json", hubUrl }), true);
});

t("deleteRepo", async () => {
	const tmp = { type: "model", name: `${user}/js-tmp-${suffix}` };
	await createRepo({ repo: tmp, ...creds() });
	await uploadFiles({ repo: tmp, ...creds(), files: [{ path: "x.txt", content: blobOf(Buffer.from("x")) }] });
	await deleteRepo({ repo: tmp, ...creds() });
	assert.equal(await repoExists({ repo: tmp, hubUrl, accessToken }), false);
	await assert.rejects(deleteRepo({ repo: tmp, ...creds() }), (e) => e.statusCode === 404);
	await deleteRepo({ repo, ...creds() });
	assert.equal(await repoExists({ repo, hubUrl, accessToken }), false);
	assert.equal(await fileExists({ repo, path: "config.json", ...creds() }), false);
});
