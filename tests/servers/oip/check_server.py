"""Hand check of a running OIP server (serve.sh) against direct runs of the same models.

    $ZOOAUDIT_OIP_VENV/bin/python check_server.py http://127.0.0.1:PORT [ZOO_DIR]

* metadata of every model (versions, inputs, outputs);
* SFace: 4 real aligned faces as BGR NCHW float 0..255, server `fc1` vs onnxruntime on the file as shipped
  (only the dangling graph inputs dropped, run one sample at a time, batch 1): max |diff| <= 1e-4;
* dlib: the same faces' 150x150 chips (chips.template_chip) vs dlib in-process; dlib112 (server makes the
  chip) vs dlib on the chip;
* timing: first and steady requests of batch 32 (client round trip and the server's handling_ms).
"""
import csv
import json
import os
import sys
import time
import urllib.request

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import chips  # noqa: E402


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def infer(base, model, name, x, datatype="FP32", version=None):
    body = {"id": f"check-{model}", "inputs": [{
        "name": name, "datatype": datatype, "shape": list(x.shape), "data": x.reshape(-1).tolist()}]}
    data = json.dumps(body).encode()
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        resp = json.loads(r.read())
    rt = (time.perf_counter() - t0) * 1e3
    return resp, rt, len(data)


def out_array(resp, name):
    (o,) = [o for o in resp["outputs"] if o["name"] == name]
    assert o["datatype"] == "FP32", o["datatype"]
    return np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])


def main():
    base = sys.argv[1].rstrip("/")
    zoo = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "..", "..", "..", "shared", "zoo")
    faces = os.path.join(zoo, "faces")
    rows = [r for r in csv.DictReader(open(os.path.join(faces, "faces.csv")))]
    lab = [r for r in rows if r["set"] == "labeled"]
    pick = [lab[0], lab[11], lab[22], lab[40]]
    rgb = np.stack([np.asarray(Image.open(os.path.join(faces, r["aligned112"])).convert("RGB")) for r in pick])
    print("faces:", [r["aligned112"] for r in pick])
    ok = True
    served = []
    for m in ("sface", "dlib", "dlib112"):
        try:
            md = get(f"{base}/v2/models/{m}")
            served.append(m)
            print(f"metadata {m}: {json.dumps(md)}")
        except Exception as e:
            print(f"metadata {m}: not served ({e})")

    if "sface" in served:
        import onnx
        import onnxruntime as ort
        path = os.environ.get("ZOOAUDIT_OIP_SFACE_MODEL", os.path.join(zoo, "models", "sface_2021dec_int8bq.onnx"))
        mo = onnx.load(path)
        read = {i for n in mo.graph.node for i in n.input}
        keep = [i for i in mo.graph.input if i.name in read]
        del mo.graph.input[:]
        mo.graph.input.extend(keep)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(mo.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = rgb[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)  # BGR NCHW 0..255
        ref = np.concatenate([sess.run(["fc1"], {"data": x[i:i + 1]})[0] for i in range(len(x))])
        resp, rt, nbytes = infer(base, "sface", "data", x)
        y = out_array(resp, "fc1")
        d = float(np.abs(y - ref).max())
        print(f"sface: response model_name={resp['model_name']} model_version={resp.get('model_version')} "
              f"id={resp.get('id')} outputs={[(o['name'], o['datatype'], o['shape']) for o in resp['outputs']]} "
              f"parameters={resp.get('parameters')}")
        print(f"sface: batch 4, max |server - onnxruntime per-sample| = {d:.3g} (request {nbytes} bytes, {rt:.1f} ms)")
        ok &= d <= 1e-4 and y.shape == (4, 128) and resp.get("model_version") == "1"
        resp2, _, _ = infer(base, "sface", "data", x[:1], version="1")
        ok &= float(np.abs(out_array(resp2, "fc1") - ref[:1]).max()) <= 1e-4
        n = y / np.linalg.norm(y, axis=1, keepdims=True)
        print("sface cosine matrix:\n", np.round(n @ n.T, 3))

    chip = np.stack([chips.template_chip(c) for c in rgb])
    if "dlib" in served or "dlib112" in served:
        import dlib
        import importlib.util
        spec = importlib.util.find_spec("face_recognition_models")
        mp = os.environ.get("ZOOAUDIT_OIP_DLIB_MODEL") or os.path.join(
            list(spec.submodule_search_locations)[0], "models", "dlib_face_recognition_resnet_model_v1.dat")
        net = dlib.face_recognition_model_v1(mp)
        ref = np.asarray([np.asarray(net.compute_face_descriptor(c)) for c in chip], dtype=np.float32)
        for m, inp in (("dlib", chip), ("dlib112", rgb)):
            if m not in served:
                continue
            for dt in ("FP32", "UINT8"):
                resp, rt, nbytes = infer(base, m, "image", inp.astype(np.float32 if dt == "FP32" else np.uint8), dt)
                y = out_array(resp, "embedding")
                d = float(np.abs(y - ref).max())
                print(f"{m} {dt}: shape {y.shape}, model_version={resp.get('model_version')}, "
                      f"max |server - dlib in-process| = {d:.3g}, descriptor norms {np.round(np.linalg.norm(y, axis=1), 3)}")
                ok &= d <= 1e-4 and y.shape == (4, 128)

    # timing, batch 32
    x32 = np.stack([np.asarray(Image.open(os.path.join(faces, r["aligned112"])).convert("RGB")) for r in rows[:32]])
    for m, name, arr in (("sface", "data", x32[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)),
                         ("dlib", "image", np.stack([chips.template_chip(c) for c in x32]).astype(np.float32)),
                         ("dlib112", "image", x32.astype(np.float32))):
        if m not in served:
            continue
        rts, hs = [], []
        for i in range(6):
            resp, rt, nbytes = infer(base, m, name, arr)
            rts.append(rt)
            hs.append(resp["parameters"]["handling_ms"])
        print(f"timing {m} batch 32 ({nbytes / 1e6:.1f} MB JSON): round trip ms {[round(v, 1) for v in rts]}; "
              f"server handling_ms {[round(v, 1) for v in hs]}")
    print("CHECK", "OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
