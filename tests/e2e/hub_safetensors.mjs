// Builds a small, valid safetensors file by hand: 8-byte little-endian header length, a JSON
// header (padded with spaces to 8-byte alignment, as the format allows), then the tensor bytes.
//   weight: F32 [2, 3]  (24 bytes)      bias: F16 [3]  (6 bytes)

export function buildSafetensors() {
	const header = {
		__metadata__: { format: "pt", source: "hearth-e2e", total_parameters: "9" },
		weight: { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] },
		bias: { dtype: "F16", shape: [3], data_offsets: [24, 30] },
	};
	let json = JSON.stringify(header);
	while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += " ";
	const headerBytes = Buffer.from(json, "utf8");
	const len = Buffer.alloc(8);
	len.writeBigUInt64LE(BigInt(headerBytes.length));
	const weight = Buffer.alloc(24);
	[0.5, -1, 2, 3.25, 0, 1e-3].forEach((v, i) => weight.writeFloatLE(v, i * 4));
	const bias = Buffer.from([0x00, 0x3c, 0x00, 0x40, 0x00, 0xc0]); // 1.0, 2.0, -2.0 in float16
	return Buffer.concat([len, headerBytes, weight, bias]);
}
