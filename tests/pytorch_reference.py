"""References from Python's PyTorch and torchvision (Debian's 1.13) for test_pytorch.cpp.

    pytorch_reference.py make DIR [zip legacy half wrapped views photo]
    pytorch_reference.py check-torchvision STATE.pth IO.pth
    pytorch_reference.py check-grouped STATE.pth IO.pth paper|caffe
    pytorch_reference.py check-classify CLASSIFY.json PROBS.pth

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
    net.load_state_dict(torch.load(path), strict=True)
    io = torch.load(io_path)
    with torch.no_grad():
        e = error(net(io["input"]), io["logits"])
    print(f"torchvision logits vs ours: relative error {e:.3g}")
    if not e < 1e-5:
        fail(f"logits differ: relative error {e:.3g}")


def check_grouped(path, io_path, lrn):
    from alexnet_pytorch import GroupedAlexNet
    net = GroupedAlexNet.load(path, lrn=lrn).eval()
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


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "make":
        make(args[0], set(args[1:]))
    elif mode == "check-torchvision":
        check_torchvision(*args)
    elif mode == "check-grouped":
        check_grouped(*args)
    elif mode == "check-classify":
        check_classify(*args)
    else:
        fail(f"unknown mode {mode}")
