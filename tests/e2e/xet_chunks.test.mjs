// Xet chunking and hashing: Hearth's C implementation (src/xet, via `hearth xet chunks`)
// against Hugging Face's own chunker, the npm package @huggingface/xetchunk-wasm, on varied
// inputs (random, zeros, repeated blocks, safetensors-like, text, low entropy, edge sizes;
// >= 256 MiB in all). Boundaries, chunk hashes, xorb hash, file hash and the verification hash
// must be identical.
//
// xetchunk-wasm 0.2.0 accepts a boundary in the first 64 hashed bytes of a chunk (chunks of
// 8128..8191 bytes); hf_xet >= 1.1.10 does not. Hearth does both: `--legacy` is compared with
// xetchunk-wasm here, and the default rule with hf_xet's own `hash_files` (when the test venv
// has hf_xet). A last test parses the xorb and shard that hf_xet writes to a local:// CAS.
//
// Run: node --test --test-reporter=tap tests/e2e/xet_chunks.test.mjs
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getChunks, hashToHex, xorbHash, fileHash, verificationHash } from '@huggingface/xetchunk-wasm';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-xet-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

// ---- the C side ---------------------------------------------------------------------------

// build/hearth (release, `make build/hearth`) when it is newer than src/xet and the command's
// src/cli/xet.c; otherwise (a stale or missing build) a tiny driver around cli_xet_main,
// compiled here with the release flags.
function findHearth() {
  const hearth = path.join(root, 'build/hearth');
  const sources = fs.readdirSync(path.join(root, 'src/xet')).map((f) => path.join(root, 'src/xet', f));
  const command = path.join(root, 'src/cli/xet.c');
  const newest = Math.max(...[...sources, command].map((f) => fs.statSync(f).mtimeMs));
  if (fs.existsSync(hearth) && fs.statSync(hearth).mtimeMs >= newest) {
    const r = spawnSync(hearth, ['xet', '--help'], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.includes('xet chunks')) return { cmd: hearth, args: ['xet'] };
  }
  const driver = path.join(tmp, 'driver.c');
  fs.writeFileSync(driver, '#include "cli/cli.h"\nint main(int argc, char **argv) { return cli_xet_main(argc, argv); }\n');
  const pkg = execFileSync('pkg-config', ['--cflags', '--libs', 'liblz4', 'libcrypto'], { encoding: 'utf8' }).trim().split(/\s+/);
  const srcs = [...sources.filter((f) => f.endsWith('.c')), command,
    ...fs.readdirSync(path.join(root, 'src/base')).filter((f) => f.endsWith('.c')).map((f) => path.join(root, 'src/base', f))];
  const out = path.join(tmp, 'xet-driver');
  execFileSync('cc', ['-std=c17', '-D_GNU_SOURCE', '-O2', '-march=x86-64-v2', '-I', path.join(root, 'src'),
    '-o', out, driver, ...srcs, ...pkg, '-lm', '-pthread'], { stdio: 'inherit' });
  return { cmd: out, args: [] };
}
const hearth = findHearth();

function hearthChunks(file, legacy) {
  const args = [...hearth.args, 'chunks', ...(legacy ? ['--legacy'] : []), file];
  const out = execFileSync(hearth.cmd, args, { encoding: 'utf8', maxBuffer: 1 << 28 });
  const lines = out.trim().split('\n').map((l) => JSON.parse(l));
  return { chunks: lines.slice(0, -1), summary: lines[lines.length - 1] };
}

// ---- inputs ---------------------------------------------------------------------------------

// xorshift32: reproducible pseudo-random bytes, fast enough for hundreds of MiB.
function randomBytes(n, seed) {
  const words = new Uint32Array(Math.ceil(n / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    words[i] = x;
  }
  return new Uint8Array(words.buffer, 0, n);
}

// A safetensors file: 8-byte header length, JSON header, then bf16 and f32 tensors whose
// values cluster around zero (so high bytes repeat and low bytes look random).
function safetensorsLike(n, seed) {
  const noise = randomBytes(n, seed);
  const header = {};
  let offset = 0;
  const tensors = [];
  for (let i = 0; offset < n - 4096; i++) {
    const bytes = Math.min(((noise[i] % 16) + 1) * 1024 * 1024, n - 4096 - offset);
    const dtype = i % 3 === 2 ? 'F32' : 'BF16';
    const width = dtype === 'F32' ? 4 : 2;
    const count = Math.floor(bytes / width);
    header[`model.layers.${i}.weight`] = { dtype, shape: [count], data_offsets: [offset, offset + count * width] };
    tensors.push({ offset, count, width });
    offset += count * width;
  }
  let json = Buffer.from(JSON.stringify(header));
  const pad = (8 - (json.length % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  const base = 8 + json.length;
  const f32 = new Float32Array(1);
  const f32b = new Uint8Array(f32.buffer);
  for (const t of tensors) {
    for (let k = 0; k < t.count; k++) {
      const r = noise[(t.offset + k) % n];
      f32[0] = ((r - 128) / 128) * 0.05 * (1 + (noise[(k * 7) % n] & 3));
      const p = base + t.offset + k * t.width;
      if (t.width === 2) { out[p] = f32b[2]; out[p + 1] = f32b[3]; } else out.set(f32b, p);
    }
  }
  return out;
}

// Pure bf16 weights, roughly normal around zero: what byte grouping (BG4) is for.
function bf16Weights(n, seed) {
  const r = randomBytes(4 * n, seed);
  const out = new Uint8Array(n);
  const f32 = new Float32Array(1);
  const f32b = new Uint8Array(f32.buffer);
  for (let i = 0; i + 1 < n; i += 2) {
    f32[0] = ((r[2 * i] + r[2 * i + 1] + r[2 * i + 2] + r[2 * i + 3]) / 255 - 2) * 0.02;
    out[i] = f32b[2];
    out[i + 1] = f32b[3];
  }
  return out;
}

function repeatedBlocks(n, seed) {
  const block = randomBytes(1 << 20, seed);
  const out = new Uint8Array(n);
  for (let off = 0, i = 0; off < n; off += block.length, i++) {
    out.set(block.subarray(0, Math.min(block.length, n - off)), off);
    if (off + 1000 < n) out[off + 1000 + (i % 97)] ^= 0xff; // a small edit per copy
  }
  return out;
}

function textLike(n) {
  const lines = [];
  let size = 0;
  for (let i = 0; size < n; i++) {
    const l = `${i},VIN${(i * 2654435761) % 1e9},${['Tesla', 'Nissan', 'BMW', 'Kia'][i % 4]},${2010 + (i % 14)},${(i * 31) % 500} km,WA,${98000 + (i % 999)}\n`;
    lines.push(l);
    size += l.length;
  }
  return new Uint8Array(Buffer.from(lines.join('')).subarray(0, n));
}

function lowEntropy(n, seed) {
  const r = randomBytes(n, seed);
  for (let i = 0; i < n; i++) r[i] &= 3;
  return r;
}

const MiB = 1 << 20;
const cases = [
  ['random', () => randomBytes(96 * MiB, 1)],
  ['zeros', () => new Uint8Array(32 * MiB)],
  ['repeated 1 MiB blocks with edits', () => repeatedBlocks(32 * MiB, 2)],
  ['safetensors-like bf16/f32', () => safetensorsLike(64 * MiB, 3)],
  ['csv text', () => textLike(16 * MiB)],
  ['low entropy (2-bit symbols)', () => lowEntropy(16 * MiB, 4)],
];
const edgeSizes = [0, 1, 8127, 8128, 8191, 8192, 8193, 65536, 131071, 131072, 131073, 262145, 1000000];

// ---- comparison --------------------------------------------------------------------------------

function compare(name, data) {
  const file = path.join(tmp, name.replace(/[^a-z0-9]+/gi, '_') + '.bin');
  fs.writeFileSync(file, data);
  const ours = hearthChunks(file, true);
  const theirs = getChunks(data);
  assert.equal(ours.chunks.length, theirs.length, `${name}: chunk count`);
  let offset = 0;
  for (let i = 0; i < theirs.length; i++) {
    const o = ours.chunks[i];
    assert.equal(o.offset, offset, `${name}: chunk ${i} offset`);
    assert.equal(o.length, theirs[i].length, `${name}: chunk ${i} length`);
    assert.equal(o.hash, hashToHex(theirs[i].hash), `${name}: chunk ${i} hash`);
    offset += theirs[i].length;
  }
  assert.equal(ours.summary.size, data.length);
  assert.equal(ours.summary.file_hash, hashToHex(fileHash(theirs)), `${name}: file hash`);
  assert.equal(ours.summary.xorb_hash, hashToHex(xorbHash(theirs)), `${name}: xorb hash`);
  assert.equal(ours.summary.verification_hash, hashToHex(verificationHash(theirs.map((c) => c.hash))),
    `${name}: verification hash`);
  return file;
}

const hfXetFiles = []; // files whose default-rule hashes hf_xet checks below
let totalBytes = 0;

for (const [name, make] of cases) {
  test(`xet chunks match xetchunk-wasm: ${name}`, () => {
    const data = make();
    totalBytes += data.length;
    hfXetFiles.push(compare(name, data));
  });
}

test('xet chunks match xetchunk-wasm: edge sizes around the chunk limits', () => {
  const data = randomBytes(1000000, 5);
  for (const n of edgeSizes) {
    const file = compare(`edge ${n}`, data.subarray(0, n));
    totalBytes += n;
    hfXetFiles.push(file);
  }
});

test('at least 256 MiB were compared', () => {
  assert.ok(totalBytes >= 256 * MiB, `${totalBytes} bytes`);
});

// Where the two boundary rules differ: the default rule never cuts below 8 KiB, the legacy
// one does, and they agree otherwise in chunk count to within the early cuts.
test('default rule never cuts a chunk below 8 KiB; legacy does on random data', () => {
  const file = hfXetFiles[0];
  const def = hearthChunks(file, false).chunks;
  const legacy = hearthChunks(file, true).chunks;
  assert.ok(def.slice(0, -1).every((c) => c.length >= 8192));
  assert.ok(legacy.slice(0, -1).some((c) => c.length < 8192));
  assert.ok(def.every((c) => c.length <= 131072));
});

const venvPython = path.join(root, 'tests/.venv/bin/python');
const hasHfXet = fs.existsSync(venvPython) &&
  spawnSync(venvPython, ['-c', 'import hf_xet'], { stdio: 'ignore' }).status === 0;

test('default rule matches hf_xet.hash_files (the Python client)', { skip: !hasHfXet && 'no hf_xet in tests/.venv' }, () => {
  const script = 'import hf_xet, json, sys\nprint(json.dumps([r.hash for r in hf_xet.hash_files(sys.argv[1:])]))';
  const theirs = JSON.parse(execFileSync(venvPython, ['-c', script, ...hfXetFiles], { encoding: 'utf8', maxBuffer: 1 << 24 }));
  assert.equal(theirs.length, hfXetFiles.length);
  hfXetFiles.forEach((file, i) => {
    const ours = hearthChunks(file, false).summary;
    assert.equal(ours.file_hash, theirs[i], `file hash of ${path.basename(file)}`);
  });
});

test('xorbs and shards written by hf_xet parse and verify', { skip: !hasHfXet && 'no hf_xet in tests/.venv' }, () => {
  const cas = path.join(tmp, 'cas');
  const inputs = [
    ['st.bin', safetensorsLike(3 * MiB, 7)],
    ['bf16.bin', bf16Weights(2 * MiB, 9)],
    ['text.csv', textLike(2 * MiB)],
    ['random.bin', randomBytes(2 * MiB, 8)],
  ].map(([n, d]) => { const f = path.join(tmp, n); fs.writeFileSync(f, d); return f; });
  const script = 'import hf_xet, sys\nhf_xet.upload_files(sys.argv[2:], "local://" + sys.argv[1], None, None, None, "model")';
  execFileSync(venvPython, ['-c', script, cas, ...inputs], { stdio: 'inherit' });
  const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]);
  const all = walk(cas);
  const xorbs = all.filter((f) => /xorbs\/default\.[0-9a-f]{64}$/.test(f));
  const shards = all.filter((f) => /shards\/[0-9a-f]{64}\.mdb$/.test(f));
  assert.ok(xorbs.length >= 1 && shards.length >= 1, `found ${xorbs.length} xorbs, ${shards.length} shards`);
  const schemes = new Set();
  const xorbChunkHashes = new Map();
  for (const x of xorbs) {
    const lines = execFileSync(hearth.cmd, [...hearth.args, 'xorb', x], { encoding: 'utf8', maxBuffer: 1 << 26 })
      .trim().split('\n').map((l) => JSON.parse(l));
    const summary = lines.pop();
    assert.equal(summary.xorb_hash, x.slice(-64), 'recomputed xorb hash = its name');
    lines.forEach((c) => schemes.add(c.compression));
    xorbChunkHashes.set(summary.xorb_hash, lines.map((c) => c.hash));
  }
  assert.ok(schemes.has(0) && schemes.has(1) && schemes.has(2), `schemes seen: ${[...schemes]}`);

  const sha256 = (f) => execFileSync('sha256sum', [f], { encoding: 'utf8' }).split(' ')[0];
  const wantFiles = new Map(inputs.map((f) => [hearthChunks(f, false).summary.file_hash, sha256(f)]));
  let filesSeen = 0;
  for (const s of shards) {
    // Given the xorbs, `hearth xet shard` also verifies every file as a CAS would.
    const lines = execFileSync(hearth.cmd, [...hearth.args, 'shard', s, ...xorbs], { encoding: 'utf8', maxBuffer: 1 << 26 })
      .trim().split('\n').map((l) => JSON.parse(l));
    for (const entry of lines.filter((l) => l.file_hash)) {
      assert.ok(wantFiles.has(entry.file_hash), `shard names a file we hashed: ${entry.file_hash}`);
      assert.equal(entry.verified, true, entry.error);
      assert.equal(entry.sha256, wantFiles.get(entry.file_hash), 'sha256 metadata extension');
      for (const term of entry.terms) {
        const hashes = xorbChunkHashes.get(term.xorb);
        if (!hashes) continue; // a xorb from an earlier session
        const range = hashes.slice(term.chunks[0], term.chunks[1]).map((h) => {
          const b = Buffer.alloc(32);
          for (let g = 0; g < 4; g++) b.writeBigUInt64LE(BigInt('0x' + h.slice(16 * g, 16 * g + 16)), 8 * g);
          return new Uint8Array(b);
        });
        assert.equal(term.verification, hashToHex(verificationHash(range)), 'term verification hash');
      }
      filesSeen++;
    }
  }
  assert.equal(filesSeen, inputs.length);

  // The upload body is the stored shard cut before its lookup tables, with footer_size 0
  // (xet-core read_shard_to_bytes_remove_footer): it must parse and verify the same way.
  for (const s of shards) {
    const stored = fs.readFileSync(s);
    const fileLookupOffset = Number(stored.readBigUInt64LE(stored.length - 200 + 24));
    const body = Buffer.from(stored.subarray(0, fileLookupOffset));
    body.writeBigUInt64LE(0n, 40);
    const upload = path.join(tmp, 'upload.shard');
    fs.writeFileSync(upload, body);
    const lines = execFileSync(hearth.cmd, [...hearth.args, 'shard', upload, ...xorbs], { encoding: 'utf8', maxBuffer: 1 << 26 })
      .trim().split('\n').map((l) => JSON.parse(l));
    const summary = lines.pop();
    assert.equal(summary.footer, false);
    assert.ok(lines.filter((l) => l.file_hash).every((l) => l.verified), 'upload-form shard verifies');
  }
});
