"""A GGUF file already on this machine, copied into the models directory (so removing or
moving the original later does not break the agents)."""

from __future__ import annotations

import shutil
from pathlib import Path

from agents.models.install import (
    HashingWriter,
    PullError,
    PullProgress,
    PullResult,
    check_space,
    disk_error,
    exclusive_pull,
    install,
)


def pull_local(home: Path, name: str, source: Path, progress: PullProgress) -> PullResult:
    from agents.errors import ModelError
    from agents.inference.model import check_gguf

    try:
        check_gguf(source)
    except ModelError as err:  # without its advice on --model, which is not the question here
        raise PullError(str(err).split(" — ")[0], exit_code=2) from None
    with exclusive_pull(home, name) as directory:
        copy = HashingWriter(directory / f"{name}.gguf.partial")
        try:
            progress.note(check_space(directory, source.stat().st_size))
            progress.start(f"copying {source.name}", source.stat().st_size)
            with source.open("rb") as f:
                copy.copy_from(f, progress)
            sha256 = copy.finish()
            model = install(home, name, copy.path, size=copy.size, sha256=sha256, source=f"local:{source}")
        except KeyboardInterrupt:
            copy.discard()
            raise PullError(f"{name}: interrupted; nothing installed", exit_code=130) from None
        except OSError as err:
            copy.discard()
            raise PullError(f"{name}: {disk_error(err, directory)}; nothing installed") from None
        except BaseException:
            copy.discard()
            raise
        finally:
            progress.stop()
    shutil.rmtree(directory, ignore_errors=True)
    return PullResult(model=model, path=str(home / "models" / model.file), fetched=1)
