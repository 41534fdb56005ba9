"""Writes COUNT JPEGs (quality 90, 500x375 or 375x500: typical ImageNet sizes) made from the
real photographs Debian's python3-skimage ships, in OUT/<class>/, for the data benchmark."""
import os
import sys

from PIL import Image

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "motorcycle_right.png", "grass.png"]


def main():
    out, count = sys.argv[1], int(sys.argv[2])
    data = "/usr/lib/python3/dist-packages/skimage/data"
    sources = [Image.open(os.path.join(data, p)).convert("RGB") for p in PHOTOS
               if os.path.exists(os.path.join(data, p))]
    for i in range(count):
        photo = sources[i % len(sources)]
        size = (500, 375) if i % 4 else (375, 500)
        # A different window of the photo each time, so no two files are the same.
        w, h = photo.size
        shift = (i * 7) % 20
        image = photo.crop((shift, shift, w - 20 + shift, h - 20 + shift)).resize(size, Image.BICUBIC)
        folder = os.path.join(out, f"class{i % 4}")
        os.makedirs(folder, exist_ok=True)
        image.save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


if __name__ == "__main__":
    main()
