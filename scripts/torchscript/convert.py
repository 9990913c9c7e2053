#!/usr/bin/env python3
"""Converts a face-embedding ONNX model of the shared zoo to TorchScript for
zooaudit's torchscript adapter (plugins/torchscript), and checks the result.

Run it through scripts/torchscript/convert.sh (its pinned venv). Steps:

1. the ONNX file, checked against its sha256 pin (shared/zoo/SOURCES.md);
2. the batch dimension freed: graph inputs/outputs get a symbolic batch, and
   a Reshape whose constant target shape starts with the batch of 1 gets 0
   there ("copy the input's dimension") instead;
3. onnx2torch converts it to a torch.fx module; an operator it has no
   converter for is reported, all of them at once (SFace: DequantizeLinear);
4. torch.jit.trace on a batch of 2, then checked: batches of 1 and 7 give
   the same per-sample numbers as the eager module;
5. saved byte-reproducibly (see `reproducible_save`) as <out>/<model>.pt, its
   sha256 written beside it (<model>.pt.sha256) and compared with the pin
   below;
6. compared with onnxruntime on EVERY aligned face of the zoo (raw output,
   max abs diff <= 1e-4), and a reference file written for the adapter's
   Rust test: <out>/<model>.reference.json, ONNX Runtime's embeddings of a
   fixed list of faces.

Exit status 0 when every check passed, 1 otherwise, 2 when the converter
cannot convert the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    file: str
    sha256: str
    input: str
    output: str
    color: str  # channel order the model expects: "rgb" | "bgr"
    mean: float  # input = (pixel - mean) * scale
    scale: float
    pt_sha256: str | None  # the pinned digest of the converted file


MODELS = {
    "faceplugin": ModelSpec(
        file="faceplugin_fr_feature.onnx",
        sha256="87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
        input="input",
        output="output",
        color="rgb",
        mean=127.0,
        scale=1.0 / 128.0,
        pt_sha256="9a882dcd83ea6af022de1cba9f80ad7c40bcc4b456e0ecef13c6f543c8602e70",
    ),
    "sface": ModelSpec(
        file="sface_2021dec_int8bq.onnx",
        sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        input="data",
        output="fc1",
        color="bgr",
        mean=0.0,
        scale=1.0,
        pt_sha256=None,
    ),
}


def log(msg: str) -> None:
    print(f"convert: {msg}", file=sys.stderr, flush=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zoo_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("ZOOAUDIT_ZOO"):
        return Path(os.environ["ZOOAUDIT_ZOO"])
    if os.environ.get("ZOOAUDIT_SHARED"):
        return Path(os.environ["ZOOAUDIT_SHARED"]) / "zoo"
    return ROOT.parent / "shared" / "zoo"


# --- the ONNX graph ----------------------------------------------------------


def prepare(model: onnx.ModelProto, free_batch: bool = True) -> list[str]:
    """Drops graph inputs no node reads (or that are initializers: SFace as
    shipped has 174) and frees the batch dimension; returns what it changed,
    in words."""
    changes = []
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    read = {name for n in g.node for name in n.input}
    keep = [i for i in g.input if i.name in read and i.name not in inits]
    if len(keep) != len(g.input):
        changes.append(f"dropped {len(g.input) - len(keep)} graph inputs that are initializers or unread")
        del g.input[:]
        g.input.extend(keep)
    if not free_batch:
        return changes
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == 1:
            dims[0].Clear()
            dims[0].dim_param = "batch"
            changes.append(f"{vi.name}: batch dimension 1 -> free")
    users: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            users[name] = users.get(name, 0) + 1
    for n in g.node:
        if n.op_type != "Reshape" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        shape = onnx.numpy_helper.to_array(inits[n.input[1]]).copy()
        if shape.ndim != 1 or len(shape) < 2 or shape[0] != 1 or (shape[1:] <= 0).sum() == 0:
            continue  # a weight reshape, or no free dimension to absorb the batch
        if users[n.input[1]] != 1:
            raise SystemExit(f"convert: Reshape {n.name}'s shape {n.input[1]} is shared; not rewritten")
        shape[0] = 0
        inits[n.input[1]].CopyFrom(onnx.numpy_helper.from_array(shape, n.input[1]))
        changes.append(f"Reshape {n.name or n.output[0]}: target shape [1, ...] -> {shape.tolist()}")
    return changes


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Every operator (with its opset) onnx2torch has no converter for."""
    from onnx2torch.node_converters.registry import get_converter

    opsets = {o.domain or "": o.version for o in model.opset_import}
    missing = {}
    for n in model.graph.node:
        domain = n.domain or ""
        version = opsets.get(domain, opsets.get("ai.onnx", 1))
        try:
            get_converter(operation_type=n.op_type, version=version, domain=domain)
        except NotImplementedError:
            key = f"{n.op_type} (opset {version})"
            missing[key] = missing.get(key, 0) + 1
    return [f"{k} x{v}" for k, v in sorted(missing.items())]


# --- tracing and saving --------------------------------------------------------


def seeded(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Inputs in the models' range (-1..1 after preprocessing, roughly)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def reproducible_save(module: torch.jit.ScriptModule) -> bytes:
    """torch.jit.save's bytes, made independent of where things are.

    torch.jit.save alone is deterministic run to run (zip entries carry no
    time stamp, the serialization id is a hash of the records, tensors are
    numbered in order) but not across machines or checkouts: each
    `code/**/*.py.debug_pkl` records the source ranges the tracer saw, which
    name the absolute path of every Python file involved (torch's and
    onnx2torch's, i.e. the venv's location); and the archive's top folder is
    named after the output file. So: save to memory (top folder "archive"),
    drop the debug pickles, load that, and save again: the new debug pickles
    point into the archive's own code/ files. (Traced example inputs are not
    stored: trace runs with _store_inputs=False.)
    """
    first = io.BytesIO()
    torch.jit.save(module, first)
    src = zipfile.ZipFile(io.BytesIO(first.getvalue()))
    stripped = io.BytesIO()
    with zipfile.ZipFile(stripped, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if info.filename.endswith(".debug_pkl"):
                continue
            dst.writestr(info, src.read(info.filename))
    reloaded = torch.jit.load(io.BytesIO(stripped.getvalue()), map_location="cpu")
    out = io.BytesIO()
    torch.jit.save(reloaded, out)
    data = out.getvalue()
    for name in zipfile.ZipFile(io.BytesIO(data)).namelist():
        if name.split("/", 1)[0] != "archive":
            raise SystemExit(f"convert: unexpected archive entry {name}")
    return data


def write_atomic(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


# --- faces and onnxruntime -------------------------------------------------------


def face_files(zoo: Path) -> list[Path]:
    root = zoo / "faces" / "aligned112"
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    if not files:
        raise SystemExit(f"convert: no aligned faces under {root}")
    return files


def preprocess(path: Path, spec: ModelSpec) -> np.ndarray:
    """[3, 112, 112] float32 as the model expects it."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    if rgb.shape != (112, 112, 3):
        raise SystemExit(f"convert: {path} is {rgb.shape}, not an aligned 112x112 face")
    if spec.color == "bgr":
        rgb = rgb[:, :, ::-1]
    x = (rgb - np.float32(spec.mean)) * np.float32(spec.scale)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


# --- main ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="faceplugin")
    ap.add_argument("--zoo", help="the shared zoo (default $ZOOAUDIT_ZOO, $ZOOAUDIT_SHARED/zoo, ../shared/zoo)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / ".zooaudit" / "torch")
    ap.add_argument("--reference-faces", type=int, default=24, help="faces in the reference file (spread evenly)")
    ap.add_argument("--no-pin", action="store_true", help="report a digest that differs from the pin instead of failing")
    args = ap.parse_args()

    spec = MODELS[args.model]
    zoo = zoo_dir(args.zoo)
    onnx_path = zoo / "models" / spec.file
    raw = onnx_path.read_bytes()
    if sha256(raw) != spec.sha256:
        log(f"{onnx_path} has sha256 {sha256(raw)}, expected {spec.sha256}")
        return 1
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    log(f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}")

    original = onnx.load_from_string(raw)  # for onnxruntime: batch 1, as shipped
    prepare(original, free_batch=False)
    model = onnx.load_from_string(raw)
    for change in prepare(model):
        log(change)

    import onnx2torch

    missing = unsupported_ops(model)
    if missing:
        from importlib.metadata import version

        log(f"onnx2torch {version('onnx2torch')} cannot convert {onnx_path.name}: "
            f"no converter for {', '.join(missing)}")
        return 2
    eager = onnx2torch.convert(model).eval()

    example = seeded((2, 3, 112, 112), seed=1)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(eager, example, check_trace=True, _store_inputs=False)
    tracer = sorted({str(w.message).split(".")[0] for w in caught})
    if tracer:
        log(f"tracer warnings (shape-independent here; the batch check below decides): {len(caught)}")

    # Batch check: per-sample numbers of batches of 1 and 7 against eager.
    x7 = seeded((7, 3, 112, 112), seed=2)
    with torch.no_grad():
        want = eager(x7)
        got7 = traced(x7)
        got1 = torch.cat([traced(x7[i : i + 1]) for i in range(7)])
        got2 = traced(example)
        want2 = eager(example)
    if got7.shape != want.shape or got7.dim() != 2:
        log(f"traced module gives {tuple(got7.shape)} for a batch of 7, expected {tuple(want.shape)}")
        return 1
    batch_diff = max(
        (got7 - want).abs().max().item(),
        (got1 - want).abs().max().item(),
        (got2 - want2).abs().max().item(),
    )
    log(f"batch check: batches of 1, 2 and 7 vs eager, max abs diff {batch_diff:.3g}")
    if batch_diff > 1e-5:
        log("the traced module does not generalise over the batch dimension")
        return 1

    data = reproducible_save(traced)
    again = reproducible_save(traced)
    if data != again:
        log("two saves in one process differ: the output is not reproducible")
        return 1
    digest = sha256(data)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    pt = args.out_dir / f"{Path(spec.file).stem}.pt"
    write_atomic(pt, data)
    write_atomic(pt.with_name(pt.name + ".sha256"), f"{digest}  {pt.name}\n".encode())
    log(f"wrote {pt} ({len(data)} bytes), sha256 {digest}")
    status = 0
    if spec.pt_sha256 and digest != spec.pt_sha256:
        log(f"sha256 differs from the pin {spec.pt_sha256}" + ("" if args.no_pin else " (fails)"))
        status = 0 if args.no_pin else 1

    # Every aligned face: the saved file (as loaded back) against onnxruntime.
    loaded = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    sess = ort_session(original)
    files = face_files(zoo)
    t0 = time.time()
    inputs = np.stack([preprocess(f, spec) for f in files])
    ref = np.concatenate([sess.run([spec.output], {spec.input: inputs[i : i + 1]})[0] for i in range(len(files))])
    t_ort = time.time() - t0
    t0 = time.time()
    with torch.no_grad():
        outs = [loaded(torch.from_numpy(inputs[i : i + 32])).numpy() for i in range(0, len(files), 32)]
    got = np.concatenate(outs)
    t_pt = time.time() - t0
    diff = np.abs(got - ref)
    worst = int(diff.max(axis=1).argmax())
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    log(f"{len(files)} aligned faces: max abs diff {diff.max():.3g} (at {files[worst].relative_to(zoo)}), "
        f"mean {diff.mean():.3g}, min cosine {cos.min():.9f}, |output| max {np.abs(ref).max():.3g}; "
        f"onnxruntime (batch 1) {t_ort:.1f} s, TorchScript (batches of 32) {t_pt:.1f} s")
    if not diff.max() <= TOLERANCE:
        log(f"max abs diff over {TOLERANCE}: fails")
        status = 1

    n = max(1, min(args.reference_faces, len(files)))
    picks = sorted({round(i * (len(files) - 1) / max(1, n - 1)) for i in range(n)})
    aligned = zoo / "faces" / "aligned112"
    reference = {
        "format": "zooaudit-torchscript-reference 1",
        "model": args.model,
        "onnx": spec.file,
        "onnx_sha256": spec.sha256,
        "pt_sha256": digest,
        "onnxruntime": ort.__version__,
        "input_shape": [3, 112, 112],
        "preprocess": {"color": spec.color, "mean": spec.mean, "scale": spec.scale, "layout": "nchw"},
        "max_abs_diff_all_faces": float(diff.max()),
        "faces": [
            {"path": files[i].relative_to(aligned).as_posix(), "embedding": [float(v) for v in ref[i]]}
            for i in picks
        ],
    }
    ref_path = args.out_dir / f"{Path(spec.file).stem}.reference.json"
    write_atomic(ref_path, (json.dumps(reference, indent=1) + "\n").encode())
    log(f"wrote {ref_path} ({len(picks)} faces)")
    print(digest)
    return status


if __name__ == "__main__":
    sys.exit(main())
