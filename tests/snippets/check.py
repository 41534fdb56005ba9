#!/usr/bin/env python3
"""Builds and runs every C++ snippet of README.md and docs/*.md as written, against the
installed library (find_package(AlexNet)), so that no snippet can drift from the code.

A snippet with `int main` is built as it stands; any other is a fragment: its #include
lines go first, then the library's umbrella headers, and its other lines become the body
of main(). Each runs, in the order of the pages, in one scratch folder that holds what
the snippets name: train/ and val/ (two classes of two photographs), photo.jpg and
alexnet-owt-7be5be79.pth (torchvision's AlexNet with random weights). A snippet that
cannot run here is marked in its page by the line before its fence,
`<!-- snippet: build only: REASON -->`; it is built, and the reason printed.
After the library snippet, `alexnet classify` must read the checkpoint it wrote.

    tests/snippets/check.py --source SRC --build BUILD --work DIR --cli BUILD/bin/alexnet
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys

PHOTOS = "/usr/lib/python3/dist-packages/skimage/data"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARK = re.compile(r"<!-- snippet: build only: (.+?) -->\s*$")


def snippets(source):
    found = []
    for where, code, before in blocks(source, ("cpp",)):
        mark = MARK.search(before)
        name = re.sub(r"[^A-Za-z0-9]", "_", where.replace(".md:", "_"))
        found.append({"name": name, "where": where, "code": code, "build_only": mark.group(1) if mark else None})
    return found


def program(code):
    if re.search(r"\bint main\s*\(", code):
        return code
    includes = [l for l in code.splitlines() if l.startswith("#include")]
    body = [l for l in code.splitlines() if not l.startswith("#include")]
    return ("\n".join(includes + ["#include <alexnet/network.h>", "#include <alexnet/train.h>", "", "int main() {"] +
                      ["  " + l if l else l for l in body] + ["}", ""]))


def run(command, cwd=None, what=None):
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.exit(f"{what or command[0]}: exit {result.returncode}\n{result.stdout[-6000:]}")
    return result.stdout


def fixtures(scratch):
    os.makedirs(scratch)
    for folder, photos in (("train", ("rocket.jpg", "coffee.png", "astronaut.png", "chelsea.png")),
                           ("val", ("retina.jpg", "coffee.png", "motorcycle_left.png", "chelsea.png"))):
        for i, photo in enumerate(photos):
            cls = os.path.join(scratch, folder, "one" if i < 2 else "two")
            os.makedirs(cls, exist_ok=True)
            shutil.copy(os.path.join(PHOTOS, photo), cls)
    shutil.copy(os.path.join(PHOTOS, "rocket.jpg"), os.path.join(scratch, "photo.jpg"))
    run([sys.executable, "-c", "import torch, torchvision; torch.manual_seed(0); "
         "torch.save(torchvision.models.alexnet().state_dict(), 'alexnet-owt-7be5be79.pth')"],
        cwd=scratch, what="torchvision's AlexNet with random weights")


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--source", required=True)
    a.add_argument("--build", required=True)
    a.add_argument("--work", required=True)
    a.add_argument("--cli", required=True)
    a.add_argument("--generator", default="Ninja")
    o = a.parse_args()
    o.source, o.build, o.work, o.cli = (os.path.abspath(p) for p in (o.source, o.build, o.work, o.cli))
    found = snippets(o.source)
    if len(found) < 5:
        sys.exit(f"only {len(found)} C++ snippets found in README.md and docs/*.md")
    shutil.rmtree(o.work, ignore_errors=True)
    project = os.path.join(o.work, "project")
    os.makedirs(project)
    cmake = ["cmake_minimum_required(VERSION 3.18)", "project(alexnet_snippets CXX)", "find_package(AlexNet REQUIRED)"]
    for s in found:
        open(os.path.join(project, s["name"] + ".cpp"), "w").write(f"// {s['where']}\n" + program(s["code"]))
        cmake.append(f"add_executable({s['name']} {s['name']}.cpp)")
        cmake.append(f"target_link_libraries({s['name']} PRIVATE alexnet::train)")
        if "opencv2/" in s["code"]:
            cmake.append("find_package(OpenCV REQUIRED COMPONENTS dnn)")
            cmake.append(f"target_link_libraries({s['name']} PRIVATE ${{OpenCV_LIBS}})")
    open(os.path.join(project, "CMakeLists.txt"), "w").write("\n".join(cmake) + "\n")
    prefix = os.path.join(o.work, "prefix")
    run(["cmake", "--install", o.build, "--prefix", prefix], what="cmake --install")
    run(["cmake", "-S", project, "-B", os.path.join(o.work, "build"), "-G", o.generator, "-DCMAKE_BUILD_TYPE=Release",
         f"-DCMAKE_PREFIX_PATH={prefix}"], what="cmake (snippets)")
    run(["cmake", "--build", os.path.join(o.work, "build")], what="building the snippets")
    print(f"built {len(found)} snippets")

    scratch = os.path.join(o.work, "scratch")
    fixtures(scratch)
    for s in found:
        if s["build_only"]:
            print(f"{s['where']}: built, not run: {s['build_only']}")
            continue
        out = run([os.path.join(o.work, "build", s["name"])], cwd=scratch, what=s["where"])
        print(f"{s['where']}: ran" + (": " + out.strip().splitlines()[-1] if out.strip() else ""))
        if "alexnet::save(" in s["code"] and "net.pt" in s["code"]:
            out = run([o.cli, "classify", "--weights", "net.pt", "photo.jpg"], cwd=scratch,
                      what=f"alexnet classify on the checkpoint {s['where']} wrote")
            top = next((l.strip() for l in out.splitlines() if "%" in l), "")
            print(f"  alexnet classify --weights net.pt photo.jpg: {top}")
        if "Run::resume" in s["code"] and not re.search(r"^epoch 3: ", out, re.M):
            sys.exit(f"{s['where']}: the training snippet printed no progress up to epoch 3:\n{out}")
    python_snippets(o, scratch)
    commands(o)
    print("every snippet built; every one not marked build-only ran; every alexnet command line names real flags")


def blocks(source, languages):
    """(page:line, code, the line before the fence) for each fenced block in `languages`
    of README.md and docs/*.md, in page order."""
    pages = [os.path.join(source, "README.md")] + sorted(glob.glob(os.path.join(source, "docs", "*.md")))
    for page in pages:
        text = open(page, encoding="utf-8").read()
        for m in FENCE.finditer(text):
            if m.group(1) in languages:
                before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
                yield f"{os.path.relpath(page, source)}:{text.count(chr(10), 0, m.start()) + 1}", m.group(2), before


def python_snippets(o, scratch):
    """The Python snippets, run in the scratch folder after the C++ ones (whose checkpoints
    they read, exported as the pages say), `images` a batch of zeros where they use it."""
    for fmt, source, out in (("torchvision", "alexnet-imagenet.pt", "tv.pth"), ("grouped", "net.pt", "paper.pth"),
                             ("torchscript", "net.pt", "alexnet.ts")):
        run([o.cli, "export", "--weights", source, "--format", fmt, "--out", out], cwd=scratch, what=f"export {out}")
    if not os.path.exists(os.path.join(scratch, "scripts")):
        os.symlink(os.path.join(o.source, "scripts"), os.path.join(scratch, "scripts"))
    count = 0
    for where, code, _ in blocks(o.source, ("python",)):
        prelude = "import torch\nimages = torch.zeros(2, 3, 227, 227)\n" if re.search(r"\bimages\b", code) else ""
        run([sys.executable, "-c", prelude + code], cwd=scratch, what=where)
        print(f"{where}: ran (Python)")
        count += 1
    if count < 3:
        sys.exit(f"only {count} Python snippets found")


def commands(o):
    """Every `alexnet SUBCOMMAND ...` line of the shell snippets names a subcommand and
    flags the tool has (its --help lists them): a renamed flag cannot linger in a page."""
    helps = {}
    checked = 0
    for where, code, _ in blocks(o.source, ("sh", "bash")):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0]
            words = line.split()
            at = next((i for i, w in enumerate(words) if w == "alexnet" or w.endswith("/alexnet")), None)
            if at is None or at + 1 >= len(words) or words[at + 1].startswith("-"):
                continue
            sub = [words[at + 1]]
            if sub[0] == "import" and at + 2 < len(words):
                sub.append(words[at + 2])
            key = " ".join(sub)
            if key not in helps:
                result = subprocess.run([o.cli, *sub, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
                if result.returncode != 0:
                    sys.exit(f"{where}: 'alexnet {key}' is not a subcommand: {result.stdout.strip()}")
                helps[key] = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", result.stdout))
            for flag in re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", " ".join(words[at + 1:])):
                if flag not in helps[key]:
                    sys.exit(f"{where}: 'alexnet {key}' has no flag {flag} (alexnet {key} --help)")
            checked += 1
    print(f"{checked} alexnet command lines name real subcommands and flags")
    if checked < 20:
        sys.exit(f"only {checked} alexnet command lines found")


if __name__ == "__main__":
    main()
