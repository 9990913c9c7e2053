#!/usr/bin/env python3
"""Independent reference embeddings with Python onnxruntime, for zooaudit's tests.

Usage: embed_reference.py MODEL.onnx OUT.npy CHANNELS MEAN STD IMAGE...
  CHANNELS is RGB or BGR; MEAN and STD are one number each (0..255 units);
  value = (pixel - MEAN) / STD, NCHW, batch of 1 per run.

It does NOT edit the model: graph inputs that no node reads (SFace as shipped
has 29) are fed zeros of their declared shape, which is what onnxruntime asks
for. zooaudit instead drops them from the graph; the two must agree.
"""
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image


def main():
    model, out, channels, mean, std, *images = sys.argv[1:]
    mean, std = float(mean), float(std)
    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    image_input = inputs[0].name
    extra = {}
    for i in inputs[1:]:
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        extra[i.name] = np.zeros(shape, dtype=np.float32)
    rows = []
    for path in images:
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        if channels == "BGR":
            img = img[:, :, ::-1]
        x = ((img - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        feed = {image_input: np.ascontiguousarray(x), **extra}
        rows.append(sess.run(None, feed)[0].reshape(-1))
    np.save(out, np.stack(rows).astype(np.float32))


if __name__ == "__main__":
    main()
