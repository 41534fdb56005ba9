"""The baseline for scripts/bench.sh: the same networks and steps in Python on Debian's
python3-torch (the same LibTorch 1.13). Prints one JSON object.

  baseline.py train|infer --arch paper|torchvision [--batch N] [--iterations N] [--threads N]
              [--device D] [--precision fp32|bf16|fp16] [--channels-last] [--tf32 0|1]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torchvision


class TowerLRN(nn.Module):
    """The paper's LRN (alpha on the sum, so LibTorch's alpha is 5 x 1e-4), per tower."""

    def __init__(self):
        super().__init__()
        self.lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

    def forward(self, x):
        n, c, h, w = x.shape
        return self.lrn(x.reshape(n * 2, c // 2, h, w)).reshape(n, c, h, w)


def paper_alexnet(num_classes=1000):
    """The paper's two towers as grouped convolutions (groups=2 at conv2, conv4, conv5)."""
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), TowerLRN(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), TowerLRN(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(9216, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, num_classes))


def seconds_per(step, iterations):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    step()
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync()
    return (time.perf_counter() - start) / iterations


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["train", "infer"])
    parser.add_argument("--arch", choices=["paper", "torchvision"], default="paper")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--tf32", type=int, choices=[0, 1], default=0,
                        help="CUDA: TensorFloat-32 convolutions and matrix products (set either way)")
    args = parser.parse_args()
    device_type = torch.device(args.device).type
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    autocast = lambda: torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # Stated, not left to PyTorch's defaults (TF32 convolutions on, matrix products off).
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)

    if args.arch == "paper":
        model, size = paper_alexnet(), 227
    else:
        model, size = torchvision.models.alexnet(), 224
    model.to(args.device)
    images = torch.randn(args.batch, 3, size, size).to(args.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch,)).to(args.device)
    if args.mode == "train":
        model.train()
        sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        fp16 = args.precision == "fp16"
        # torch.amp.GradScaler("cuda") from PyTorch 2.3 on; torch.cuda.amp's before (1.13).
        scaler = (torch.amp.GradScaler("cuda", enabled=fp16) if hasattr(torch.amp, "GradScaler")
                  else torch.cuda.amp.GradScaler(enabled=fp16))

        def step():
            sgd.zero_grad(set_to_none=True)  # PyTorch's tuning guide; the default from 2.0 on
            with autocast():
                logits = model(images)
            scaler.scale(nn.functional.cross_entropy(logits.float(), labels)).backward()
            scaler.step(sgd)
            scaler.update()
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                model(images)
    seconds = seconds_per(step, args.iterations)
    print(json.dumps({"figure": f"{args.mode}_images_per_s", "arch": args.arch,
                      "baseline": round(args.batch / seconds, 2), "threads": args.threads,
                      "device": args.device, "precision": args.precision,
                      "channels_last": args.channels_last, "tf32": bool(args.tf32)}))


if __name__ == "__main__":
    main()
