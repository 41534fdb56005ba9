"""References from Python's PyTorch and torchvision (Debian's 1.13) for test_pytorch.cpp.

    pytorch_reference.py make DIR [zip legacy half wrapped views photo]
    pytorch_reference.py check-torchvision STATE.pth IO.pth
    pytorch_reference.py check-grouped STATE.pth IO.pth paper|caffe
    pytorch_reference.py check-classify CLASSIFY.json PROBS.pth
    pytorch_reference.py check-torchscript MODULE IO.pth
    pytorch_reference.py check-onnx MODEL.onnx IO.pth towers|one|across
    pytorch_reference.py check-pytorch-onnx DIR paper|caffe

Exit status 0 when the check holds; otherwise a message on stderr and 1.
"""
import collections
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))


def error(a, b):
    """||a - b|| / ||b||, as the C++ tests measure."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def torchvision_net():
    import torchvision
    torch.manual_seed(1)
    return torchvision.models.alexnet(weights=None).eval()


def make(out, what):
    net = torchvision_net()
    state = collections.OrderedDict((k, v.clone()) for k, v in net.state_dict().items())
    torch.manual_seed(2)
    x = torch.randn(2, 3, 224, 224)
    io = collections.OrderedDict(input=x)
    with torch.no_grad():
        io["logits"] = net(x)
    if "zip" in what:
        torch.save(state, os.path.join(out, "tv-zip.pth"))
    if "legacy" in what:
        torch.save(state, os.path.join(out, "tv-legacy.pth"), _use_new_zipfile_serialization=False)
    if "half" in what:
        half = collections.OrderedDict((k, v.half()) for k, v in state.items())
        torch.save(half, os.path.join(out, "tv-half.pth"))
        net.load_state_dict(collections.OrderedDict((k, v.float()) for k, v in half.items()))
        with torch.no_grad():
            io["logits_half"] = net(x)
        net.load_state_dict(state)
    if "wrapped" in what:
        # A training checkpoint: the state dict of a DataParallel model among other things.
        wrapped = {"epoch": 3, "arch": "alexnet", "best_acc1": 0.5,
                   "state_dict": collections.OrderedDict(("module." + k, v) for k, v in state.items()),
                   "optimizer": {"param_groups": [{"lr": 0.01, "momentum": 0.9}]}}
        torch.save(wrapped, os.path.join(out, "tv-wrapped.pth"), _use_new_zipfile_serialization=False)
    if "views" in what:
        # Every tensor a view into one storage; the 4-D ones non-contiguous (channels last).
        flat = torch.empty(sum(v.numel() for v in state.values()))
        views, at = collections.OrderedDict(), 0
        for k, v in state.items():
            region = flat[at:at + v.numel()]
            if v.dim() == 4:
                region = region.view(v.permute(0, 2, 3, 1).shape)
                region.copy_(v.permute(0, 2, 3, 1))
                views[k] = region.permute(0, 3, 1, 2)
            else:
                views[k] = region.view(v.shape).copy_(v)
            at += v.numel()
        assert not views["features.0.weight"].is_contiguous()
        torch.save(views, os.path.join(out, "tv-views.pth"))
    if "photo" in what:
        # A real photograph at 256x256, and torchvision's documented pipeline on it.
        import skimage.data
        from PIL import Image
        from torchvision import transforms
        photo = Image.fromarray(skimage.data.astronaut()).resize((256, 256), Image.BILINEAR)
        photo.save(os.path.join(out, "photo.png"))
        pipeline = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                       transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
        with torch.no_grad():
            probs = net(pipeline(photo).unsqueeze(0)).softmax(1)[0]
        torch.save({"probabilities": probs}, os.path.join(out, "probs.pth"))
        with open(os.path.join(out, "classes.txt"), "w") as f:
            f.writelines(f"class {i:04d}\n" for i in range(1000))
    torch.save(io, os.path.join(out, "io.pth"))


def check_torchvision(path, io_path):
    import torchvision
    net = torchvision.models.alexnet(weights=None).eval()
    # weights_only: what torch.load does by default since PyTorch 2.6; a state dict
    # written by torch::pickle_save would be refused here (its type tag is no weight).
    net.load_state_dict(torch.load(path, weights_only=True), strict=True)
    io = torch.load(io_path)
    with torch.no_grad():
        e = error(net(io["input"]), io["logits"])
    print(f"torchvision logits vs ours: relative error {e:.3g}")
    if not e < 1e-5:
        fail(f"logits differ: relative error {e:.3g}")


def check_grouped(path, io_path, lrn, activation="relu", pool="3,2"):
    from alexnet_pytorch import GroupedAlexNet
    z, s = (int(v) for v in pool.split(","))
    net = GroupedAlexNet.load(path, lrn=lrn, activation=activation, pool=(z, s)).eval()
    io = torch.load(io_path)
    logits = net(io["input"])
    e = error(logits, io["logits"])
    print(f"grouped PyTorch logits vs ours: relative error {e:.3g}")
    if not e < 1e-5:
        fail(f"logits differ: relative error {e:.3g}")
    F.cross_entropy(logits, io["labels"]).backward()
    worst = 0.0
    for name, p in net.named_parameters():
        e = error(p.grad, io["grad." + name])
        worst = max(worst, e)
        if not e < 1e-4:
            fail(f"gradient of {name} differs: relative error {e:.3g}")
    print(f"gradients: worst relative error {worst:.3g} over {len(list(net.parameters()))} tensors")


def check_classify(json_path, probs_path):
    ref = torch.load(probs_path)["probabilities"]
    with open(json_path) as f:
        results = [json.loads(line) for line in f if line.strip()]
    if len(results) != 1:
        fail(f"expected one JSON object, got {len(results)}")
    ours = torch.zeros_like(ref)
    for entry in results[0]["top"]:
        ours[entry["index"]] = entry["probability"]
    order = [entry["index"] for entry in results[0]["top"]]
    if order[:5] != ref.topk(5).indices.tolist():
        fail(f"top-5 differ: ours {order[:5]}, torchvision {ref.topk(5).indices.tolist()}")
    e = error(ours, ref)
    print(f"classify --json vs torchvision's pipeline: relative error {e:.3g}, top-1 {order[0]}")
    if not e < 1e-5:
        fail(f"probabilities differ: relative error {e:.3g}")


def check_torchscript(path, io_path):
    files = {"alexnet.json": ""}
    net = torch.jit.load(path, _extra_files=files)
    io = torch.load(io_path)
    with torch.no_grad():
        e = error(net(io["input"]), io["logits"])
    pre = json.loads(files["alexnet.json"])
    print(f"torch.jit.load: logits relative error {e:.3g}; preprocessing crop {pre['crop']}, mean {pre['mean']}")
    if not e < 1e-5:
        fail(f"logits differ: relative error {e:.3g}")
    if pre["crop"] != io["input"].shape[-1] or not pre["classes"]:
        fail(f"alexnet.json does not describe the input: {pre}")


def check_onnx(path, io_path, lrn):
    """onnx.checker on the file, its operators, and OpenCV's DNN (Python) running it."""
    import collections as c
    import onnx
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    ops = c.Counter(n.op_type for n in model.graph.node)
    opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    expected = {"towers": {"Split": 2, "LRN": 4, "Concat": 2}, "across": {"LRN": 2}, "one": {"LRN": 0}}[lrn]
    for op, n in expected.items():
        if ops.get(op, 0) != n:
            fail(f"expected {n} {op} nodes, got {dict(ops)}")
    meta = {p.key: p.value for p in model.metadata_props}
    pre = json.loads(meta["alexnet.preprocessing"])
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if batch != "batch":
        fail(f"the batch dimension is not dynamic: {model.graph.input[0]}")
    print(f"onnx.checker: valid, opset {opset}, IR {model.ir_version}, {dict(ops)}, metadata {sorted(meta)}")
    if pre["mean"] == "image":
        import base64
        import numpy as np
        image = np.frombuffer(base64.b64decode(meta["alexnet.mean_image"]), dtype="<f4")
        if image.size != 3 * pre["resize"] ** 2:
            fail(f"mean image of {image.size} numbers for resize {pre['resize']}")
    io = torch.load(io_path)
    import cv2
    net = cv2.dnn.readNetFromONNX(path)
    net.setInput(io["input"].numpy())
    e = error(torch.from_numpy(net.forward()), io["logits"])
    print(f"OpenCV {cv2.__version__} (Python) running it: logits relative error {e:.3g}")
    if not e < 1e-5:
        fail(f"logits differ: relative error {e:.3g}")


def check_pytorch_onnx(out, lrn):
    """scripts/alexnet_pytorch.py exported by torch.onnx.export: one Split and one LRN per
    tower's normalisation, no shape arithmetic, and OpenCV 4.6 loads and runs it."""
    import collections as c
    import cv2
    import onnx
    from alexnet_pytorch import GroupedAlexNet
    torch.manual_seed(3)
    net = GroupedAlexNet(num_classes=10, lrn=lrn).eval()
    x = torch.randn(2, 3, 227, 227) * 50
    path = os.path.join(out, f"pytorch-{lrn}.onnx")
    torch.onnx.export(net, x, path, opset_version=11, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    model = onnx.load(path)
    onnx.checker.check_model(model)
    ops = c.Counter(n.op_type for n in model.graph.node)
    expected = {"Split": 2, "LRN": 4, "Concat": 2} if lrn == "paper" else {"LRN": 2}
    for op in ("Split", "LRN", "Concat", "Pad", "AveragePool", "Shape", "Gather", "Slice"):
        if ops.get(op, 0) != expected.get(op, 0):
            fail(f"torch.onnx.export wrote {dict(ops)}; expected {expected} and no shape arithmetic")
    dnn = cv2.dnn.readNetFromONNX(path)
    dnn.setInput(x.numpy())
    with torch.no_grad():
        e = error(torch.from_numpy(dnn.forward()), net(x))
    print(f"GroupedAlexNet ({lrn}) via torch.onnx.export: {dict(ops)}; OpenCV logits relative error {e:.3g}")
    if not e < 1e-5:
        fail(f"logits differ: relative error {e:.3g}")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    checks = {"check-torchvision": check_torchvision, "check-grouped": check_grouped,
              "check-classify": check_classify, "check-torchscript": check_torchscript,
              "check-onnx": check_onnx, "check-pytorch-onnx": check_pytorch_onnx}
    if mode == "make":
        make(args[0], set(args[1:]))
    elif mode in checks:
        checks[mode](*args)
    else:
        fail(f"unknown mode {mode}")
