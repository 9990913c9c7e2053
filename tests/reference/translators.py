#!/usr/bin/env python3
"""Independent closed-form translators with numpy, for zooaudit's tests.

  translators.py ridge PROBE.npy REF.npy LAMBDA OUT_W.npy   -> (in+1)×out: W then the bias row
  translators.py procrustes PROBE.npy REF.npy OUT_W.npy      -> (in+1)×out: W then the bias row

Ridge is solved as an ordinary least-squares problem on the augmented system
[X 1; sqrt(λ)·I 0] W = [Y; 0] with numpy.linalg.lstsq (not via the normal
equations zooaudit uses). Procrustes uses numpy's SVD with the reflection fix.
"""
import sys

import numpy as np


def unit(a):
    a = a.astype(np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def main():
    kind = sys.argv[1]
    x, y = unit(np.load(sys.argv[2])), unit(np.load(sys.argv[3]))
    n, d = x.shape
    if kind == "ridge":
        lam, out = float(sys.argv[4]), sys.argv[5]
        xa = np.hstack([x, np.ones((n, 1))])
        pen = np.hstack([np.sqrt(lam) * np.eye(d), np.zeros((d, 1))])
        a = np.vstack([xa, pen])
        b = np.vstack([y, np.zeros((d, y.shape[1]))])
        w = np.linalg.lstsq(a, b, rcond=None)[0]
    else:
        out = sys.argv[4]
        mx, my = x.mean(0), y.mean(0)
        u, _, vt = np.linalg.svd((x - mx).T @ (y - my))
        if np.linalg.det(u @ vt) < 0:
            u[:, -1] *= -1
        r = u @ vt
        w = np.vstack([r, (my - mx @ r)[None]])
    np.save(out, w.astype(np.float64).astype(np.float32))


if __name__ == "__main__":
    main()
