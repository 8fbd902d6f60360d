// Start and stop a real `hearth serve` for the node end-to-end tests (the JS twin of
// hearth_server.py): fresh data dir, free loopback port, a user with write and read tokens,
// stderr logged to build/test-logs/hearth-<name>.log.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, openSync, closeSync, readFileSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(here, "..", "..");
export const LOG_DIR = join(REPO_ROOT, "build", "test-logs");

export function hearthBin() {
	return process.env.HEARTH_BIN || join(REPO_ROOT, "build", "debug", "hearth");
}

export function freePort() {
	return new Promise((ok, fail) => {
		const srv = createServer();
		srv.unref();
		srv.on("error", fail);
		srv.listen(0, "127.0.0.1", () => {
			const { port } = srv.address();
			srv.close(() => ok(port));
		});
	});
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class HearthServer {
	constructor(name, { user = "alice" } = {}) {
		this.name = name;
		this.user = user;
		this.bin = hearthBin();
		this.tmp = mkdtempSync(join(tmpdir(), `hearth-e2e-${name}-`));
		this.dataDir = join(this.tmp, "data");
		mkdirSync(LOG_DIR, { recursive: true });
		this.logPath = join(LOG_DIR, `hearth-${name}.log`);
		this.proc = null;
		this.exitCode = null;
	}

	admin(...args) {
		try {
			return execFileSync(this.bin, ["admin", "--data", this.dataDir, ...args], {
				encoding: "utf8",
				stdio: ["ignore", "pipe", "pipe"],
				timeout: 60_000,
			});
		} catch (err) {
			throw new Error(`hearth admin ${args.join(" ")} failed: ${err.message}\n${err.stderr ?? ""}`);
		}
	}

	createToken(user, write = true) {
		const out = this.admin("create-token", user, write ? "--write" : "--read").trim();
		if (!out.startsWith("hf_") || /\s/.test(out)) {
			throw new Error(`create-token printed ${JSON.stringify(out)}, expected a token alone starting with hf_`);
		}
		return out;
	}

	async start() {
		if (!existsSync(this.bin)) throw new Error(`${this.bin} does not exist: run \`make debug\` first`);
		mkdirSync(this.dataDir, { recursive: true });
		this.admin("create-user", this.user);
		this.token = this.createToken(this.user, true);
		this.readToken = this.createToken(this.user, false);
		this.port = await freePort();
		this.base = `http://127.0.0.1:${this.port}`;
		const fd = openSync(this.logPath, "w");
		const env = { ...process.env };
		env.ASAN_OPTIONS ??= "detect_leaks=1:abort_on_error=0";
		env.UBSAN_OPTIONS ??= "print_stacktrace=1:halt_on_error=1";
		const supp = join(REPO_ROOT, "tests", "lsan.supp");
		if (existsSync(supp)) env.LSAN_OPTIONS ??= `suppressions=${supp}`;
		this.proc = spawn(this.bin, ["serve", "--data", this.dataDir, "--listen", `127.0.0.1:${this.port}`], {
			stdio: ["ignore", fd, fd],
			env,
		});
		closeSync(fd);
		this.exited = new Promise((ok) => this.proc.on("exit", (code, signal) => ok(code ?? signal)));
		let last;
		for (let i = 0; i < 200; i++) {
			if (this.proc.exitCode !== null) {
				throw new Error(`hearth serve exited ${this.proc.exitCode} before answering /health\n${this.tail()}`);
			}
			try {
				const r = await fetch(`${this.base}/health`);
				await r.arrayBuffer();
				if (r.status === 200) return this;
				last = r.status;
			} catch (err) {
				last = err.cause?.code ?? err.message;
			}
			await sleep(50);
		}
		await this.stop();
		throw new Error(`GET ${this.base}/health never answered 200 (last: ${last})\n${this.tail()}`);
	}

	async stop() {
		if (!this.proc) return this.exitCode;
		if (this.proc.exitCode === null && this.proc.signalCode === null) {
			this.proc.kill("SIGTERM");
			const t = setTimeout(() => this.proc?.kill("SIGKILL"), 15_000);
			this.exitCode = await this.exited;
			clearTimeout(t);
		} else {
			this.exitCode = this.proc.exitCode ?? this.proc.signalCode;
		}
		this.proc = null;
		return this.exitCode;
	}

	cleanup() {
		rmSync(this.tmp, { recursive: true, force: true });
	}

	log() {
		try {
			return readFileSync(this.logPath, "utf8");
		} catch {
			return "";
		}
	}

	tail(n = 40) {
		const lines = this.log().split("\n");
		return `--- last ${n} lines of ${this.logPath} ---\n` + lines.slice(-n - 1).join("\n");
	}

	sanitizerErrors() {
		return this.log()
			.split("\n")
			.filter((l) => /ERROR: AddressSanitizer|runtime error:|ERROR: UndefinedBehaviorSanitizer/.test(l));
	}
}
