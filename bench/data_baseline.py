"""The data benchmark's baseline: torchvision's transforms on PIL and a PyTorch DataLoader
(Debian's python3-torchvision) over the same folder. Prints one JSON object."""
import json
import sys
import time

import torch
import torchvision
from torchvision import transforms


def main():
    folder, workers, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    transform = transforms.Compose([
        transforms.Resize(256), transforms.RandomCrop(224), transforms.RandomHorizontalFlip(),
        transforms.PILToTensor()])
    dataset = torchvision.datasets.ImageFolder(folder, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    seen, start = 0, None
    for epoch in range(100):
        for i, (images, _) in enumerate(loader):
            if start is None:
                start = time.perf_counter()  # after the first batch: workers are up
                continue
            seen += images.shape[0]
            if seen >= batches * 32:
                break
        if seen >= batches * 32:
            break
    seconds = time.perf_counter() - start
    print(json.dumps({"baseline": round(seen / seconds, 1), "workers": workers}))


if __name__ == "__main__":
    main()
