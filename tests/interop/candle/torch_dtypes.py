"""The PyTorch side of the candle dtype interop test.

    torch_dtypes.py read FILE    prints {name: [dtype, values as floats]} of FILE's "model"
    torch_dtypes.py write FILE   saves {"model": {dtype name: 3x5 tensor}} for every dtype candle has
"""

import json
import sys

import torch

DTYPES = ["uint8", "uint32", "int16", "int32", "int64", "bfloat16", "float16", "float32",
          "float64", "float8_e4m3fn"]


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "read":
        model = torch.load(path)["model"]
        print(json.dumps({k: [str(v.dtype).removeprefix("torch."),
                              v.to(torch.float64).flatten().tolist()] for k, v in model.items()}))
    else:
        values = torch.arange(15, dtype=torch.float64).reshape(3, 5)
        torch.save({"model": {name: values.to(getattr(torch, name)) for name in DTYPES}}, path)


if __name__ == "__main__":
    main()
