"""MLServer custom runtimes serving real face-embedding models over the Open Inference Protocol v2.

Models (see models/*/model-settings.json):

* ``SFaceRuntime`` - OpenCV Zoo's SFace (int8 block-quantised ONNX) through onnxruntime.
  input ``data`` FP32 [-1,3,112,112] (NCHW, BGR, raw 0..255: the ONNX graph's own input, passed straight
  through), output ``fc1`` FP32 [-1,128] (not normalised; compare by cosine).
  The file as shipped has its batch dimension fixed to 1 and 29 dangling graph inputs that onnxruntime
  then demands at run time; at load time the graph is repaired in memory: graph inputs that no node reads
  are dropped, initializers are no longer listed as inputs, and the batch dimension of ``data``/``fc1``
  is made symbolic, so a batch of B runs as one onnxruntime call.
* ``DlibRuntime`` - dlib's ResNet face recogniser (dlib_face_recognition_resnet_model_v1.dat from PyPI
  ``face-recognition-models``) through ``dlib.face_recognition_model_v1.compute_face_descriptor``.
  ``extra.input = "chip150"``: input ``image`` [-1,150,150,3] RGB 0..255 (NHWC), dlib's own aligned chip.
  ``extra.input = "crop112"``: input ``image`` [-1,112,112,3] RGB 0..255, an ArcFace-aligned crop; the
  server makes dlib's chip from it (chips.template_chip: one fixed similarity warp onto dlib's mean face).
  Input datatype FP32 (UINT8 also accepted); dlib needs uint8, so FP32 values are rounded and clipped to
  0..255. Output ``embedding`` FP32 [-1,128]; dlib descriptors are NOT L2-normalised (norm ~1.4).

Model files: environment variable (ZOOAUDIT_OIP_SFACE_MODEL / ZOOAUDIT_OIP_DLIB_MODEL) > model-settings
``parameters.uri`` (relative to the model-settings folder) > default (SFace: <repo>/../shared/zoo/models/
sface_2021dec_int8bq.onnx; dlib: the file inside the installed face_recognition_models package).

Threads: ZOOAUDIT_OIP_THREADS (default 1; 0 = onnxruntime's own default) for onnxruntime's intra-op pool.

Handling time: each response carries ``parameters.handling_ms`` (wall time spent inside ``predict``:
decoding the tensor, running the model, encoding the output) and every request is logged as
``zooaudit-oip model=... version=... batch=... handling_ms=...``.
"""
import asyncio
import importlib.util
import logging
import os
import sys
import time

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters

logger = logging.getLogger("mlserver")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # for chips.py
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DEFAULT_SFACE = os.path.join(REPO, "..", "shared", "zoo", "models", "sface_2021dec_int8bq.onnx")


def _model_path(settings, env_name, default):
    path = os.environ.get(env_name)
    if not path and settings.parameters is not None and settings.parameters.uri:
        # MLServer fills an unset uri with the model-settings folder itself: only a file counts.
        uri = settings.parameters.uri
        if not os.path.isabs(uri) and getattr(settings, "_source", None):
            uri = os.path.join(os.path.dirname(settings._source), uri)
        if not os.path.isdir(uri):
            path = uri
    if not path:
        path = default
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path} (set {env_name} or parameters.uri)")
    return path


def _extra(settings):
    if settings.parameters is not None and settings.parameters.extra:
        return settings.parameters.extra
    return {}


def _one_input(payload: InferenceRequest, name: str, shape_tail, datatypes):
    if len(payload.inputs) != 1:
        raise InferenceError(f"expected exactly one input tensor '{name}', got {len(payload.inputs)}")
    inp = payload.inputs[0]
    if inp.name != name:
        raise InferenceError(f"expected input tensor '{name}', got '{inp.name}'")
    if inp.datatype not in datatypes:
        raise InferenceError(f"input '{name}': datatype {inp.datatype} not accepted (use {'/'.join(datatypes)})")
    shape = list(inp.shape)
    if len(shape) != 1 + len(shape_tail) or list(shape[1:]) != list(shape_tail) or shape[0] < 1:
        raise InferenceError(f"input '{name}': shape {shape} does not match [-1,{','.join(map(str, shape_tail))}]")
    try:
        arr = NumpyCodec.decode_input(inp)
    except Exception as e:  # wrong element count and the like
        raise InferenceError(f"input '{name}': cannot decode data for shape {shape}: {e}")
    return arr


class _TimedRuntime(MLModel):
    """Serialises calls to the model, runs them off the event loop, times and logs them."""

    async def _timed(self, payload: InferenceRequest, fn):
        t0 = time.perf_counter()
        async with self._lock:
            outputs, batch = await asyncio.get_running_loop().run_in_executor(None, fn, payload)
        ms = (time.perf_counter() - t0) * 1e3
        logger.info(f"zooaudit-oip model={self.name} version={self.version} batch={batch} handling_ms={ms:.2f}")
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=outputs,
            parameters=Parameters(handling_ms=round(ms, 3)),
        )


class SFaceRuntime(_TimedRuntime):
    async def load(self) -> bool:
        import onnx
        import onnxruntime as ort

        path = _model_path(self.settings, "ZOOAUDIT_OIP_SFACE_MODEL", DEFAULT_SFACE)
        m = onnx.load(path)
        g = m.graph
        read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        inits = {i.name for i in g.initializer}
        keep = [i for i in g.input if i.name in read and i.name not in inits]
        dropped = len(g.input) - len(keep)
        del g.input[:]
        g.input.extend(keep)
        for vi in list(g.input) + list(g.output):
            dims = vi.type.tensor_type.shape.dim
            if len(dims) > 0:
                dims[0].ClearField("dim_value")
                dims[0].dim_param = "batch"
        del g.value_info[:]
        names = [i.name for i in g.input]
        if names != ["data"] or [o.name for o in g.output] != ["fc1"]:
            raise RuntimeError(f"unexpected SFace graph: inputs {names}, outputs {[o.name for o in g.output]}")

        so = ort.SessionOptions()
        threads = int(os.environ.get("ZOOAUDIT_OIP_THREADS", _extra(self.settings).get("threads", 1)))
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self._sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self._lock = asyncio.Lock()
        logger.info(f"zooaudit-oip loaded sface from {path} (dropped {dropped} graph inputs, batch dim freed, "
                    f"onnxruntime {ort.__version__}, intra-op threads {threads})")
        return True

    def _run(self, payload):
        x = _one_input(payload, "data", [3, 112, 112], ("FP32", "FP64", "UINT8"))
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = self._sess.run(["fc1"], {"data": x})[0].astype(np.float32, copy=False)
        return [NumpyCodec.encode_output("fc1", y)], x.shape[0]

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return await self._timed(payload, self._run)


class DlibRuntime(_TimedRuntime):
    async def load(self) -> bool:
        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        default = ""
        if spec is not None and spec.submodule_search_locations:
            default = os.path.join(list(spec.submodule_search_locations)[0], "models",
                                   "dlib_face_recognition_resnet_model_v1.dat")
        path = _model_path(self.settings, "ZOOAUDIT_OIP_DLIB_MODEL", default)
        self._mode = _extra(self.settings).get("input", "chip150")
        if self._mode not in ("chip150", "crop112"):
            raise ValueError(f"extra.input must be chip150 or crop112, not {self._mode}")
        self._side = 150 if self._mode == "chip150" else 112
        self._net = dlib.face_recognition_model_v1(path)
        self._lock = asyncio.Lock()
        logger.info(f"zooaudit-oip loaded dlib resnet from {path} (input {self._mode}, dlib {dlib.__version__})")
        return True

    def _run(self, payload):
        x = _one_input(payload, "image", [self._side, self._side, 3], ("FP32", "FP64", "UINT8"))
        if x.dtype != np.uint8:
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if self._mode == "crop112":
            import chips

            imgs = [chips.template_chip(c) for c in x]
        else:
            imgs = [np.ascontiguousarray(c) for c in x]
        vecs = self._net.compute_face_descriptor(imgs)
        y = np.asarray([np.asarray(v) for v in vecs], dtype=np.float32).reshape(len(imgs), 128)
        return [NumpyCodec.encode_output("embedding", y)], len(imgs)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return await self._timed(payload, self._run)
