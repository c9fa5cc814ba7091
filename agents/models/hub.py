"""A GGUF from a Hugging Face repository, `REPO/FILE.gguf`, through huggingface_hub
(which honours HF_ENDPOINT, HF_TOKEN and the proxy settings, and resumes an interrupted
download itself from `<home>/models/.partial/NAME/`). The hub's ETag of a large file is
its sha256: when it is one, the download must match it before it is moved into place."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from agents.models.install import (
    PullError,
    PullProgress,
    PullResult,
    check_space,
    disk_error,
    exclusive_pull,
    install,
    mismatch,
    sha256_of,
)

METADATA_TIMEOUT_S = 30.0  # the HEAD request; each read of the download has its own timeout
READ_TIMEOUT_S = "60"  # HF_HUB_DOWNLOAD_TIMEOUT, seconds without a byte before giving up
HUB_SPEC = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)/(?P<file>[\w.-]+(?:/[\w.-]+)*\.gguf)")
SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_hub_spec(text: str) -> tuple[str, str] | None:
    """(repo, filename) of `OWNER/REPO/FILE.gguf`, else None."""
    match = HUB_SPEC.fullmatch(text)
    return (match["repo"], match["file"]) if match else None


def _first_line(err: BaseException) -> str:
    text = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class _Bar:
    """What huggingface_hub needs of a `tqdm_class`, drawn by our progress instead."""

    progress: PullProgress

    def __init__(self, **kwargs: Any) -> None:
        self.progress.start(f"downloading {kwargs.get('desc') or 'model'}", int(kwargs.get("total") or 0))
        self.progress.advance(int(kwargs.get("initial") or 0))

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.progress.advance(int(n))

    def close(self) -> None:
        self.progress.stop()


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def pull_hub(home: Path, name: str, repo: str, filename: str, progress: PullProgress,
             revision: str = "main") -> PullResult:
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", READ_TIMEOUT_S)  # read when imported
    try:
        import huggingface_hub as hub
    except ImportError as err:
        raise PullError(f"{name}: huggingface_hub is not installed ({err}); run `make run` "
                        "to install agentdeck's dependencies") from None
    where = f"{repo}/{filename} from {_endpoint() or 'huggingface.co'}"
    with exclusive_pull(home, name) as directory:
        local = directory / "hf"
        kept = (f"nothing installed; the partial download is kept in {directory} and "
                f"`agentdeck models pull {repo}/{filename}` resumes it")
        try:
            url = hub.hf_hub_url(repo, filename, revision=revision, endpoint=_endpoint())
            try:
                meta = hub.get_hf_file_metadata(url, timeout=METADATA_TIMEOUT_S, endpoint=_endpoint())
            except Exception as err:  # no network, no such repo or file, refused: one line
                raise PullError(f"{name}: cannot reach {where}: {_first_line(err)}; "
                                "nothing downloaded") from None
            size = int(meta.size or 0)
            progress.note(check_space(directory, size))
            bar = type("Bar", (_Bar,), {"progress": progress})
            try:
                path = Path(hub.hf_hub_download(
                    repo, filename, revision=revision, local_dir=local, endpoint=_endpoint(),
                    etag_timeout=METADATA_TIMEOUT_S, tqdm_class=bar))
            except OSError as err:
                raise PullError(f"{name}: {disk_error(err, directory)}; {kept}") from None
            except Exception as err:
                raise PullError(f"{name}: downloading {where} failed: {_first_line(err)}; {kept}") from None
            progress.start(f"verifying {name}", path.stat().st_size)
            try:
                sha256 = sha256_of(path, progress)
            finally:
                progress.stop()
            etag = (meta.etag or "").lower()
            wrong = mismatch(name, path.stat().st_size, sha256, size or None,
                             etag if SHA256.fullmatch(etag) else None)
            if wrong:
                shutil.rmtree(local, ignore_errors=True)
                raise PullError(f"{wrong} (the hub's size and ETag); the download was discarded; "
                                "nothing installed")
            commit = meta.commit_hash or revision
            model = install(home, name, path, size=path.stat().st_size, sha256=sha256,
                            source=f"hf:{repo}/{filename}@{commit}")
        except KeyboardInterrupt:
            raise PullError(f"{name}: interrupted; {kept}", exit_code=130) from None
        except OSError as err:
            raise PullError(f"{name}: {disk_error(err, directory)}; {kept}") from None
    shutil.rmtree(directory, ignore_errors=True)
    return PullResult(model=model, path=str(home / "models" / model.file), fetched=1)
