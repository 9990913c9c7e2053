"""Turning a 112x112 ArcFace-aligned face crop (RGB, HxWx3) into the 150x150 chip that dlib's ResNet expects.

dlib's chip (get_face_chip(img, shape, size=150, padding=0.25)) places the face by a similarity transform
onto dlib's mean face shape (dlib/image_transforms/interpolation.h, get_face_chip_details). The 112 crops
were aligned onto the ArcFace 5-point template instead. ``template_chip`` maps the ArcFace template points
onto the matching points of dlib's mean face (eye centres = mean of landmarks 36-41 / 42-47, nose tip =
30, mouth corners = 48 / 54) with padding 0.25 at size 150, and warps the crop with that fixed transform.
Conventions: landmark coordinates count pixel centres at integers (OpenCV and dlib); PIL's affine sampler
counts them at +0.5, which ``_pil_affine`` accounts for.
"""
import numpy as np
from PIL import Image

ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)

# dlib mean face shape (unit square), landmarks 17..67 (interpolation.h, get_face_chip_details).
_MX = [0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
       0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
       0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
       0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
       0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
       0.42689]
_MY = [0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
       0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
       0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
       0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
       0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
       0.831803, 0.824182]


def _lm(i):
    return np.array([_MX[i - 17], _MY[i - 17]])


def dlib_points(size=150, padding=0.25):
    """The five ArcFace points as they sit on dlib's mean face, in chip pixels."""
    unit = np.array([
        np.mean([_lm(i) for i in range(36, 42)], axis=0),  # eye on the image's left (subject's right)
        np.mean([_lm(i) for i in range(42, 48)], axis=0),
        _lm(30),                                           # nose tip
        _lm(48), _lm(54),                                  # mouth corners
    ])
    return (padding + unit) / (2 * padding + 1) * size


def similarity(src, dst):
    """Least-squares similarity transform (Umeyama, no reflection) taking src points to dst: 2x3 matrix."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    scale = np.trace(np.diag(sig) @ e) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = md - scale * r @ ms
    return m


# crop (112) pixel -> chip (150) pixel
CROP_TO_CHIP = similarity(ARCFACE_112, dlib_points(150, 0.25))


def _pil_affine(img, m_out_to_in, size):
    """Warp with a 2x3 matrix mapping output pixel coords to input pixel coords (integer-centred)."""
    a = m_out_to_in[:, :2]
    t = m_out_to_in[:, 2] + 0.5 - a @ np.array([0.5, 0.5])
    data = (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1])
    return img.transform((size, size), Image.AFFINE, data=data, resample=Image.BILINEAR)


def _invert(m):
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, (-a @ m[:, 2])[:, None]])


def template_chip(crop, border="black", size=150, padding=0.25):
    """112x112x3 uint8 RGB crop -> size x size x3 uint8 chip framed like dlib.get_face_chip(size, padding).

    The chip's bottom ~18 rows lie below the 112 crop; they are filled with black (border="black", as dlib's
    extract_image_chip does outside an image) or by repeating the crop's edge (border="edge").
    """
    crop = np.asarray(crop, dtype=np.uint8)
    m = similarity(ARCFACE_112, dlib_points(size, padding)) if (size, padding) != (150, 0.25) else CROP_TO_CHIP
    inv = _invert(m)
    pad = 0
    if border == "edge":
        pad = 64
        crop = np.pad(crop, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        inv = inv.copy()
        inv[:, 2] += pad
    out = _pil_affine(Image.fromarray(crop), inv, size)
    return np.asarray(out, dtype=np.uint8)


def resize_112_to_150(crop):
    return np.asarray(Image.fromarray(np.asarray(crop, np.uint8)).resize((150, 150), Image.BILINEAR))


def pad_then_resize(crop, padding=0.25):
    crop = np.asarray(crop, np.uint8)
    p = int(round(crop.shape[0] * padding))
    big = np.pad(crop, ((p, p), (p, p), (0, 0)), mode="constant")
    return np.asarray(Image.fromarray(big).resize((150, 150), Image.BILINEAR))
