#!/usr/bin/env python3
"""Classify images with a file `alexnet export --format onnx` wrote, preprocessing them
exactly as `alexnet classify` does, with OpenCV and NumPy only (the `onnx` package reads
the file's metadata; OpenCV's DNN runs it). One JSON object per image on stdout:
{"image": ..., "label": ..., "logits": [...]}; the tests hold its logits to `alexnet
classify --logits --precision fp32` within 1e-5.

    python3 scripts/onnx_reference.py alexnet.onnx photo.jpg [more images ...]

The rule, which the file's metadata ("alexnet.preprocessing": "decode", "resize_rule")
states too:
  1. Decode to 8-bit BGR. A JPEG is decoded at the largest reduced scale (1/8, 1/4 or
     1/2, libjpeg's DCT scaling: OpenCV's IMREAD_REDUCED_COLOR_n) that keeps its shorter
     side at least `resize`; other formats at full scale, 16-bit samples divided by 257.
  2. An image more than 4 times longer than wide (or the reverse) is cut to its central
     square. The shorter side is brought to `resize`, the longer to
     max(resize, (longer * resize + shorter // 2) // shorter), in uint8: INTER_AREA when
     shrinking, INTER_LINEAR (bilinear) when enlarging. The central resize x resize
     square is kept, and converted to RGB.
  3. The central crop x crop window, as float32, minus the mean image's same window
     (mean "image") or the channel means (mean "channels"), divided by std_rgb when given.
"""
import base64
import json
import sys

import cv2
import numpy as np
import onnx

REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def decode(path, side):
    """8-bit BGR pixels of the image at `path`, decoded as step 1 says."""
    data = np.fromfile(path, np.uint8)
    if data[:3].tobytes() == b"\xff\xd8\xff":  # JPEG
        shorter = min(cv2.imdecode(data, cv2.IMREAD_COLOR).shape[:2])
        flags = next((f for r, f in REDUCED if shorter >= r * side), cv2.IMREAD_COLOR)
        image = cv2.imdecode(data, flags)
    else:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if image is None:
        sys.exit(f"error: image '{path}': not a decodable image")
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1 / 257)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
    return image


def resize_square(image, side):
    """The central side x side RGB square of `image` brought to `side` (step 2)."""
    h, w = image.shape[:2]
    shorter = min(h, w)
    if max(h, w) > 4 * shorter:
        y, x = (h - shorter) // 2, (w - shorter) // 2
        image, h, w = image[y:y + shorter, x:x + shorter], shorter, shorter
    def scaled(n):
        return max(side, (n * side + shorter // 2) // shorter)
    nh = side if h == shorter else scaled(h)
    nw = side if w == shorter else scaled(w)
    if (nh, nw) != (h, w):
        interpolation = cv2.INTER_AREA if side < shorter else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interpolation)
    y, x = (nh - side) // 2, (nw - side) // 2
    return cv2.cvtColor(np.ascontiguousarray(image[y:y + side, x:x + side]), cv2.COLOR_BGR2RGB)


def preprocess(path, pre, mean_image):
    """The network's input for one image: float32 [3, crop, crop] (step 3)."""
    side, crop = pre["resize"], pre["crop"]
    o = (side - crop) // 2
    x = resize_square(decode(path, side), side).transpose(2, 0, 1)[:, o:o + crop, o:o + crop].astype(np.float32)
    if pre["mean"] == "image":
        x = x - mean_image[:, o:o + crop, o:o + crop]
    else:
        x = x - np.array(pre["mean_rgb"], np.float32)[:, None, None]
    if pre["std_rgb"]:
        x = x / np.array(pre["std_rgb"], np.float32)[:, None, None]
    return x


def main(argv):
    if len(argv) < 3:
        sys.exit("usage: onnx_reference.py MODEL.onnx IMAGE [IMAGE ...]")
    meta = {p.key: p.value for p in onnx.load(argv[1]).metadata_props}
    if "alexnet.preprocessing" not in meta:
        sys.exit(f"error: '{argv[1]}': no alexnet.preprocessing metadata (not written by alexnet export)")
    pre = json.loads(meta["alexnet.preprocessing"])
    mean_image = None
    if pre["mean"] == "image":
        side = pre["resize"]
        mean_image = np.frombuffer(base64.b64decode(meta["alexnet.mean_image"]), "<f4").reshape(3, side, side)
    net = cv2.dnn.readNetFromONNX(argv[1])
    for path in argv[2:]:
        net.setInput(preprocess(path, pre, mean_image)[None])
        logits = net.forward()[0].astype(np.float64)
        print(json.dumps({"image": path, "label": pre["classes"][int(logits.argmax())], "logits": logits.tolist()}))


if __name__ == "__main__":
    main(sys.argv)
