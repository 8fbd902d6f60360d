"""A light mutation fuzzer for the parsers' end-to-end tests: byte flips, truncations, duplicated
and deleted slices of a valid file, and the check that the ASan + UBSan build said nothing."""
import numpy as np


def mutations(data, n, seed):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        b = bytearray(data)
        kind = rng.integers(0, 4)
        if kind == 0:      # flip bytes
            for _ in range(int(rng.integers(1, 8))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        elif kind == 1:    # truncate
            b = b[:int(rng.integers(0, len(b)))]
        elif kind == 2:    # duplicate a slice
            i, j = sorted(int(x) for x in rng.integers(0, len(b), 2))
            b[j:j] = b[i:j][:4096]
        else:              # delete a slice
            i, j = sorted(int(x) for x in rng.integers(0, len(b), 2))
            del b[i:j]
        yield bytes(b)


def assert_no_sanitizer_report(p, label):
    err = p.stderr.decode(errors="replace")
    assert "AddressSanitizer" not in err and "runtime error" not in err and "LeakSanitizer" not in err, \
        label + "\n" + err[-3000:]
    assert p.returncode in (0, 1, 2), "%s: exit %d\n%s" % (label, p.returncode, err[-2000:])
