"""Bring vLLM's wheels to the GPU test machine, which reaches no package registry.

Each remote call carries at most 64 MiB, so the wheels travel in parts over consecutive calls and are joined
there. Subcommands: ``download`` (PyPI into ``.whl/``), ``pack`` (``.whl/`` into ``.whl-parts/part-NN``),
``join DIR`` (run remotely: reassemble chunks and check sha256) and ``remote-join-command``.
See ``docs/gpu-wheels.md`` for the whole procedure. Standard library only: the remote runs it with its own Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LIST = Path(__file__).with_name("gpu-wheels.txt")
WHL_DIR = REPO / ".whl"
PARTS_DIR = REPO / ".whl-parts"
MANIFEST = "manifest.json"
MIB = 1 << 20
# Room kept in every part for its copy of manifest.json.
MANIFEST_RESERVE_BYTES = 256 * 1024
# Beyond the list:
# NixlConnector, and the proxy's Quart with what the GPU machine's image lacks of its dependencies.
EXTRA_REQUIREMENTS = (
    "nixl==1.5.1", "nixl-cu13==1.5.1", "quart==0.22.0", "hypercorn==0.18.0", "blinker==1.9.0", "flask==3.1.3",
    "itsdangerous==2.2.0", "h2==4.4.1", "hpack==4.2.0", "hyperframe==6.1.0", "priority==2.0.0", "wsproto==1.3.2",
)  # fmt: skip
BASE_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
FALLBACK_PLATFORMS = tuple(f"manylinux_2_{n}_x86_64" for n in (24, 31, 34, 35, 39))
HASH_BLOCK_BYTES = 4 * MIB


class WheelError(Exception):
    """Any failure this tool reports; turned into exit status 1 with its message."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """One distribution to fetch; ``filename`` is the wheel named in the list, when the list names one."""

    name: str
    version: str
    filename: str | None

    @property
    def key(self) -> str:
        return canonical(self.name)

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True, slots=True)
class Piece:
    """A file that goes into one part: a whole wheel or one byte range of it."""

    file: str
    wheel: str
    offset: int
    size_bytes: int


def canonical(name: str) -> str:
    """PEP 503 name, so ``nixl_cu13`` and ``nixl-cu13`` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_filename(filename: str) -> tuple[str, str, list[str]]:
    """(name, version, platform tags) from ``name-version[-build]-python-abi-platform.whl``."""
    if not filename.endswith(".whl"):
        raise WheelError(f"not a wheel file name: {filename}")
    fields = filename[: -len(".whl")].split("-")
    if len(fields) not in (5, 6):
        raise WheelError(f"cannot parse wheel file name: {filename}")
    return fields[0], fields[1], fields[-1].split(".")


def parse_requirement(text: str) -> Wanted:
    """``name==version`` or ``name-version`` (as written in the list's ``+`` lines)."""
    text = text.strip()
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*?)(?:==|-)(\d[A-Za-z0-9.+!_-]*)", text)
    if match is None:
        raise WheelError(f"cannot parse requirement {text!r} (want name==version)")
    return Wanted(match.group(1), match.group(2), None)


def read_wanted(list_path: Path) -> list[Wanted]:
    """Wheels named in the list, then its ``+ a-1, b==2 (note)`` lines, then nixl; later entries replace earlier.

    A ``+`` line overrides a listed wheel of the same name (the list pins xgrammar 0.2.8 but adds 0.2.3 that way).
    """
    wanted: dict[str, Wanted] = {}
    for number, raw in enumerate(list_path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("+"):
            for item in line[1:].split("(")[0].split(","):
                if item.strip():
                    req = parse_requirement(item)
                    wanted[req.key] = req
            continue
        token = line.split()[0]
        try:
            name, version, _ = parse_wheel_filename(token)
        except WheelError as exc:
            raise WheelError(f"{list_path}:{number}: {exc}") from exc
        wanted[canonical(name)] = Wanted(name, version, token)
    for text in EXTRA_REQUIREMENTS:
        req = parse_requirement(text)
        if req.key not in wanted or wanted[req.key].version != req.version:
            wanted[req.key] = req
    return list(wanted.values())


def present_wheels(whl_dir: Path) -> dict[tuple[str, str], Path]:
    """Wheels already in ``whl_dir`` by (canonical name, version)."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(whl_dir.glob("*.whl")):
        name, version, _ = parse_wheel_filename(path.name)
        found[(canonical(name), version)] = path
    return found


def pip_download(req: Wanted, whl_dir: Path) -> str | None:
    """Download one wheel, widening the manylinux platforms on failure; returns None or pip's error tail."""
    own = [] if req.filename is None else [t for t in parse_wheel_filename(req.filename)[2] if "manylinux" in t]
    attempts = [list(BASE_PLATFORMS) + [t for t in own if t not in BASE_PLATFORMS]]
    attempts.append(attempts[0] + [t for t in FALLBACK_PLATFORMS if t not in attempts[0]])
    error = ""
    for platforms in attempts:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", "3.12", "--implementation", "cp"]
        for platform in platforms:
            command += ["--platform", platform]
        command += ["-d", str(whl_dir), req.requirement]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            return None
        error = "\n".join((done.stdout + done.stderr).strip().splitlines()[-4:])
    return error


def download(list_path: Path, whl_dir: Path, jobs: int) -> None:
    """Fetch every wanted wheel missing from ``whl_dir``, then check all are there and print the total size."""
    wanted = read_wanted(list_path)
    whl_dir.mkdir(parents=True, exist_ok=True)
    have = present_wheels(whl_dir)
    missing = [w for w in wanted if (w.key, w.version) not in have]
    print(f"{len(wanted)} wheels wanted, {len(wanted) - len(missing)} already in {whl_dir}, fetching {len(missing)}")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda w: pip_download(w, whl_dir), missing))
    errors = {w.requirement: error for w, error in zip(missing, results, strict=True)}
    for requirement, error in errors.items():
        print(f"  {'FAILED' if error else 'ok    '} {requirement}" + (f"\n{error}" if error else ""))
    have = present_wheels(whl_dir)
    absent = [w.requirement for w in wanted if (w.key, w.version) not in have]
    total_bytes = 0
    for w in wanted:
        path = have.get((w.key, w.version))
        if path is None:
            continue
        total_bytes += path.stat().st_size
        if w.filename is not None and path.name != w.filename:
            print(f"  note: {w.requirement} came as {path.name}, the list names {w.filename}")
    extra = sorted(set(have) - {(w.key, w.version) for w in wanted})
    for key in extra:
        print(f"  note: {have[key].name} is in {whl_dir} but not wanted; pack will include it")
    print(f"{len(wanted) - len(absent)}/{len(wanted)} wanted wheels present, {total_bytes / MIB:.1f} MiB")
    if absent:
        raise WheelError("missing after download: " + ", ".join(absent))


def sha256_of(paths: Iterable[Path]) -> str:
    """sha256 of the files' bytes read one after another."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(HASH_BLOCK_BYTES):
                digest.update(block)
    return digest.hexdigest()


def split_pieces(wheels: Sequence[Path], capacity_bytes: int) -> list[Piece]:
    """Whole wheels, and ``.chunk-NNN`` byte ranges of any wheel larger than one part."""
    pieces: list[Piece] = []
    for path in wheels:
        size = path.stat().st_size
        if size <= capacity_bytes:
            pieces.append(Piece(path.name, path.name, 0, size))
            continue
        for index, offset in enumerate(range(0, size, capacity_bytes)):
            length = min(capacity_bytes, size - offset)
            pieces.append(Piece(f"{path.name}.chunk-{index:03d}", path.name, offset, length))
    return pieces


def first_fit_decreasing(pieces: Sequence[Piece], capacity_bytes: int) -> list[list[Piece]]:
    """Bin-pack the pieces into as few parts as first-fit-decreasing finds."""
    parts: list[list[Piece]] = []
    used: list[int] = []
    for piece in sorted(pieces, key=lambda p: (-p.size_bytes, p.file)):
        for index, taken in enumerate(used):
            if taken + piece.size_bytes <= capacity_bytes:
                parts[index].append(piece)
                used[index] += piece.size_bytes
                break
        else:
            parts.append([piece])
            used.append(piece.size_bytes)
    return parts


def write_piece(piece: Piece, source: Path, target: Path) -> None:
    """Hard-link a whole wheel (copy across devices), or write a chunk's byte range."""
    if piece.offset == 0 and piece.size_bytes == source.stat().st_size:
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return
    with source.open("rb") as src, target.open("wb") as dst:
        src.seek(piece.offset)
        left = piece.size_bytes
        while left:
            block = src.read(min(HASH_BLOCK_BYTES, left))
            if not block:
                raise WheelError(f"{source} ended early while writing {target.name}")
            dst.write(block)
            left -= len(block)


def pack(whl_dir: Path, parts_dir: Path, part_mib: float) -> None:
    """Rebuild ``parts_dir`` as ``part-NN`` folders of at most ``part_mib`` MiB each, manifest copy included."""
    wheels = sorted(whl_dir.glob("*.whl"))
    if not wheels:
        raise WheelError(f"no wheels in {whl_dir}: run download first")
    by_name: dict[str, list[str]] = {}
    for path in wheels:
        by_name.setdefault(canonical(parse_wheel_filename(path.name)[0]), []).append(path.name)
    clashes = [names for names in by_name.values() if len(names) > 1]
    if clashes:
        raise WheelError(f"several versions of one project in {whl_dir}, remove all but one: {clashes}")
    part_bytes = int(part_mib * MIB)
    capacity_bytes = part_bytes - MANIFEST_RESERVE_BYTES
    if capacity_bytes <= 0:
        raise WheelError(f"--part-mib {part_mib} is too small")
    parts = first_fit_decreasing(split_pieces(wheels, capacity_bytes), capacity_bytes)
    part_names = [f"part-{index:02d}" for index in range(1, len(parts) + 1)]
    part_of = {piece.file: name for name, part in zip(part_names, parts, strict=True) for piece in part}
    pieces_of: dict[str, list[Piece]] = {}
    for part in parts:
        for piece in part:
            pieces_of.setdefault(piece.wheel, []).append(piece)

    manifest: dict[str, Any] = {"format": 1, "part_bytes": part_bytes, "parts": [], "wheels": []}
    for name, part in zip(part_names, parts, strict=True):
        files = sorted(piece.file for piece in part)
        manifest["parts"].append({"name": name, "bytes": sum(p.size_bytes for p in part), "files": files})
    for path in wheels:
        own = sorted(pieces_of[path.name], key=lambda p: p.offset)
        whole = len(own) == 1 and own[0].file == path.name
        manifest["wheels"].append(
            {
                "wheel": path.name,
                "size_bytes": path.stat().st_size,
                "sha256": sha256_of([path]),
                "part": part_of[path.name] if whole else None,
                "chunks": [] if whole else [{"file": p.file, "part": part_of[p.file]} for p in own],
            }
        )
    manifest_text = json.dumps(manifest, indent=1) + "\n"
    if len(manifest_text.encode()) > MANIFEST_RESERVE_BYTES:
        raise WheelError(f"manifest is {len(manifest_text)} bytes, more than the {MANIFEST_RESERVE_BYTES} reserved")

    if parts_dir.exists():
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True)
    (parts_dir / MANIFEST).write_text(manifest_text)
    for name, part in zip(part_names, parts, strict=True):
        folder = parts_dir / name
        folder.mkdir()
        for piece in part:
            write_piece(piece, whl_dir / piece.wheel, folder / piece.file)
        (folder / MANIFEST).write_text(manifest_text)
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{name}: {size / MIB:6.2f} MiB, {len(part)} files   carry .whl-parts/{name}")
    total = sum(p.stat().st_size for p in wheels)
    print(f"{len(wheels)} wheels, {total / MIB:.1f} MiB, in {len(parts)} parts of at most {part_mib} MiB")


def join(directory: Path) -> None:
    """Reassemble chunked wheels in ``directory`` from its manifest, delete the chunks, check every sha256."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise WheelError(f"{manifest_path} is missing: copy manifest.json from any part first")
    manifest = json.loads(manifest_path.read_text())
    entries: list[dict[str, Any]] = manifest["wheels"]
    absent: set[str] = set()
    for entry in entries:
        if entry["chunks"]:
            target = directory / entry["wheel"]
            have_all = all((directory / c["file"]).is_file() for c in entry["chunks"])
            if not have_all and not target.is_file():
                absent.update(c["part"] for c in entry["chunks"] if not (directory / c["file"]).is_file())
        elif not (directory / entry["wheel"]).is_file():
            absent.add(entry["part"])
    if absent:
        raise WheelError(f"files of {', '.join(sorted(absent))} are missing from {directory}: copy those parts in")
    bad: list[str] = []
    for entry in entries:
        target = directory / entry["wheel"]
        chunks = [directory / c["file"] for c in entry["chunks"]]
        if chunks and all(c.is_file() for c in chunks):
            partial = target.with_name(target.name + ".joining")
            with partial.open("wb") as out:
                for chunk in chunks:
                    with chunk.open("rb") as handle:
                        shutil.copyfileobj(handle, out, HASH_BLOCK_BYTES)
            partial.replace(target)
            for chunk in chunks:
                chunk.unlink()
        if target.stat().st_size != entry["size_bytes"] or sha256_of([target]) != entry["sha256"]:
            bad.append(entry["wheel"])
    listed = {entry["wheel"] for entry in entries}
    strays = sorted(p.name for p in directory.glob("*.whl") if p.name not in listed)
    if strays:
        print(f"warning: wheels in {directory} that the manifest does not list: {strays}", file=sys.stderr)
    if bad:
        raise WheelError(f"sha256 or size mismatch in {directory}: {bad}")
    print(f"joined and verified {len(entries)} wheels in {directory}")


def remote_join_command(directory: str, site: str, last_part: str | None) -> str:
    """The shell command for the last remote call: optionally copy the last part, then join and install."""
    copy = f"mkdir -p {directory} && cp .whl-parts/{last_part}/* {directory}/ && " if last_part else ""
    return (
        f"{copy}python3 tools/gpu_wheels.py join {directory} && python3 -m pip install -q --no-index --no-deps "
        f"--no-compile --no-cache-dir --target {site} {directory}/*.whl"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="gpu_wheels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_download = commands.add_parser("download", help="fetch the listed wheels from PyPI into .whl/")
    p_download.add_argument("--list", type=Path, default=DEFAULT_LIST, help="wheel list (default: %(default)s)")
    p_download.add_argument("--whl-dir", type=Path, default=WHL_DIR, help="download folder (default: %(default)s)")
    p_download.add_argument("--jobs", type=int, default=4, help="parallel pip downloads (default: %(default)s)")
    p_pack = commands.add_parser("pack", help="pack .whl/ into .whl-parts/part-NN folders")
    p_pack.add_argument("--part-mib", type=float, default=56.0, help="largest part in MiB (default: %(default)s)")
    p_pack.add_argument("--whl-dir", type=Path, default=WHL_DIR, help="wheel folder (default: %(default)s)")
    p_pack.add_argument("--parts-dir", type=Path, default=PARTS_DIR, help="output folder (default: %(default)s)")
    p_join = commands.add_parser("join", help="remotely: reassemble and verify the wheels in DIR")
    p_join.add_argument("dir", type=Path)
    p_command = commands.add_parser("remote-join-command", help="print the join + install command")
    p_command.add_argument("--dir", default="/tmp/wheels", help="remote wheel folder (default: %(default)s)")
    p_command.add_argument("--site", default="/tmp/site", help="remote install target (default: %(default)s)")
    p_command.add_argument("--last-part", metavar="part-NN", help="also copy this part in first")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            download(args.list, args.whl_dir, args.jobs)
        elif args.command == "pack":
            pack(args.whl_dir, args.parts_dir, args.part_mib)
        elif args.command == "join":
            join(args.dir)
        else:
            print(remote_join_command(args.dir, args.site, args.last_part))
    except WheelError as exc:
        print(f"gpu_wheels {args.command}: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
