"""A model folder to serve with ``--load-format dummy``: a real architecture's ``config.json`` (``configs/``) and
the suite's tiny tokenizer, so nothing is downloaded and prompts are token ids below that tokenizer's vocabulary
(``plugin.load.workload.vocab_range`` reads it).
Usage: ``python -m plugin.serving.shape_model configs/llama-3.1-8b OUT``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from plugin.options import default_cache_dir
from plugin.serving.tiny_model import ensure_tiny_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def build_shape_model(config_dir: Path, out: Path, cache_dir: Path) -> Path:
    if not (config_dir / "config.json").is_file():
        raise FileNotFoundError(f"{config_dir} has no config.json")
    tiny = ensure_tiny_model(cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(config_dir / "config.json", out / "config.json")
    for name in TOKENIZER_FILES:
        shutil.copy(tiny / name, out / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m plugin.serving.shape_model", description=__doc__)
    parser.add_argument("config_dir", type=Path, help="a folder with the architecture's config.json")
    parser.add_argument("out", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="where the tiny model is")
    args = parser.parse_args()
    print(build_shape_model(args.config_dir, args.out, args.cache_dir))


if __name__ == "__main__":
    main()
