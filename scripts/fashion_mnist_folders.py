#!/usr/bin/python3
"""Fashion-MNIST (Debian's dataset-fashion-mnist) as an image folder: one folder per class,
the first N images of each as PNG files named by their index in the split.

  fashion_mnist_folders.py OUT {train|test} [--classes FIRST-LAST] [--per-class N]

Used by scripts/finetune_demo.sh and scripts/ablation_study.sh."""
import argparse
import gzip
import os

import cv2
import numpy as np

SOURCE = "/usr/share/datasets/fashion-mnist"
NAMES = ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def idx(name, offset):
    with gzip.open(os.path.join(SOURCE, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("split", choices=["train", "test"])
    parser.add_argument("--classes", default="0-9", help="labels FIRST-LAST, inclusive")
    parser.add_argument("--per-class", type=int, default=0, help="images of each class (0: all)")
    args = parser.parse_args()
    first, last = (int(x) for x in args.classes.split("-"))
    prefix = "train" if args.split == "train" else "t10k"
    images = idx(f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = idx(f"{prefix}-labels-idx1-ubyte.gz", 8)
    for label in range(first, last + 1):
        which = np.flatnonzero(labels == label)
        if args.per_class > 0:
            which = which[: args.per_class]
        folder = os.path.join(args.out, NAMES[label])
        os.makedirs(folder)
        for i in which:
            cv2.imwrite(os.path.join(folder, f"{i:05d}.png"), images[i])


if __name__ == "__main__":
    main()
