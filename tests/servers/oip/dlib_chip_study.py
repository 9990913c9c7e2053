"""Which way of turning a 112x112 ArcFace-aligned crop into dlib's 150x150 chip works best?

Measures genuine-vs-impostor cosine separation of dlib's ResNet descriptors on the labelled faces of
../shared/zoo (faces.csv, set == labeled; identity = directory name) for several chip makers, plus
dlib's own pipeline on the raw photos (HOG detector + 5-point shape predictor + get_face_chip(150, 0.25))
as the reference. Run with the OIP venv's python:  python dlib_chip_study.py [ZOO_DIR]
"""
import csv
import itertools
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chips  # noqa: E402

import dlib  # noqa: E402


def stats(emb, ids):
    e = np.asarray(emb, dtype=np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    s = e @ e.T
    gen, imp = [], []
    for i, j in itertools.combinations(range(len(ids)), 2):
        (gen if ids[i] == ids[j] else imp).append(s[i, j])
    gen, imp = np.array(gen), np.array(imp)
    # EER: threshold sweep over all scores
    best = (1.0, None)
    for t in np.unique(np.concatenate([gen, imp])):
        frr = np.mean(gen < t)
        far = np.mean(imp >= t)
        d = abs(frr - far)
        if d < best[0]:
            best = (d, (frr + far) / 2)
    dprime = (gen.mean() - imp.mean()) / np.sqrt(0.5 * (gen.var() + imp.var()))
    overlap = int(np.sum(imp >= gen.min()) + np.sum(gen <= imp.max()))
    return gen, imp, best[1], dprime, overlap


def main():
    zoo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "shared", "zoo")
    faces = os.path.join(zoo, "faces")
    rows = [r for r in csv.DictReader(open(os.path.join(faces, "faces.csv"))) if r["set"] == "labeled"]
    import face_recognition_models as frm
    mdir = os.path.dirname(frm.face_recognition_model_location())
    rec = dlib.face_recognition_model_v1(os.path.join(mdir, "dlib_face_recognition_resnet_model_v1.dat"))
    crops = [np.asarray(Image.open(os.path.join(faces, r["aligned112"])).convert("RGB")) for r in rows]
    ids = [r["identity"] for r in rows]
    print(f"{len(rows)} labelled faces, {len(set(ids))} identities")

    methods = {
        "resize112to150": chips.resize_112_to_150,
        "pad0.25_then_resize": chips.pad_then_resize,
        "template_black": lambda c: chips.template_chip(c, border="black"),
        "template_edge": lambda c: chips.template_chip(c, border="edge"),
    }
    results = {}
    for name, fn in methods.items():
        emb = [np.array(rec.compute_face_descriptor(np.ascontiguousarray(fn(c)))) for c in crops]
        results[name] = (emb, ids)

    # Reference: dlib's own pipeline on the raw photos.
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(os.path.join(mdir, "shape_predictor_5_face_landmarks.dat"))
    emb, rids, miss = [], [], 0
    for r in rows:
        img = np.asarray(Image.open(os.path.join(faces, r["raw"])).convert("RGB"))
        dets = det(img, 1)
        if len(dets) == 0:
            miss += 1
            continue
        # several faces in one photo: take the one whose chip best matches the aligned crop (largest box)
        d = max(dets, key=lambda b: b.area())
        chip = dlib.get_face_chip(img, sp(img, d), size=150, padding=0.25)
        emb.append(np.array(rec.compute_face_descriptor(chip)))
        rids.append(r["identity"])
    native = f"dlib_native_raw (detected {len(rids)}/{len(rows)})"
    results[native] = (emb, rids)

    print(f"{'method':42s} {'genuine mean±sd':>18s} {'impostor mean±sd':>18s} {'EER':>6s} {'d-prime':>7s} {'overlap':>7s}")
    for name, (emb, ii) in results.items():
        gen, imp, eer, dp, ov = stats(emb, ii)
        print(f"{name:42s} {gen.mean():8.3f} ± {gen.std():.3f}   {imp.mean():8.3f} ± {imp.std():.3f}   "
              f"{eer:5.3f}  {dp:6.2f}  {ov:6d}")
        e = np.asarray(emb)
        d = np.linalg.norm(e[:, None, :] - e[None, :, :], axis=2)
        iu = np.triu_indices(len(ii), 1)
        same = np.array([ii[a] == ii[b] for a, b in zip(*iu)])
        dg, di = d[iu][same], d[iu][~same]
        print(f"{'':42s} raw descriptor L2 norm {np.linalg.norm(e, axis=1).mean():.3f} (not normalised); "
              f"Euclidean genuine {dg.mean():.3f}±{dg.std():.3f}, impostor {di.mean():.3f}±{di.std():.3f}, "
              f"impostors < 0.6: {np.sum(di < 0.6)}, genuine >= 0.6: {np.sum(dg >= 0.6)}; "
              f"pairs {len(gen)} genuine / {len(imp)} impostor")
    if len(results[native][0]) == len(crops):
        nat = np.asarray(results[native][0])
        for name in methods:
            e = np.asarray(results[name][0])
            c = np.sum(e * nat, 1) / np.linalg.norm(e, axis=1) / np.linalg.norm(nat, axis=1)
            print(f"cosine to dlib's native chip, same face, {name:22s}: {c.mean():.3f} ± {c.std():.3f} (min {c.min():.3f})")


if __name__ == "__main__":
    main()
