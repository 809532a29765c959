"""Prints the largest absolute difference between the tensors of two
safetensors checkpoints (which must hold the same names and shapes), and
exits 1 when it exceeds the bound given as the third argument."""
import json
import struct
import sys

import numpy as np


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    body = data[8 + length:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", (name, t["dtype"])
        begin, end = t["data_offsets"]
        out[name] = np.frombuffer(body[begin:end], dtype=np.float32)
    return out


a, b = load(sys.argv[1]), load(sys.argv[2])
bound = float(sys.argv[3])
if sorted(a) != sorted(b):
    sys.exit("the checkpoints hold different tensors")
worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
print("tensors: %d, max abs difference: %g" % (len(a), worst))
sys.exit(0 if worst <= bound else 1)
