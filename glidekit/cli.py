"""The `glide` command: thin argument parsing over the library.

User errors (`GlidekitError`) print one line and exit with status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import GlidekitError


def _cmd_models(args: argparse.Namespace) -> int:
    from .download import cache_dir, list_models

    rows = list_models(args.cache_dir)
    print(f"official GLIDE (filtered) models; cache: {args.cache_dir or cache_dir()}")
    for r in rows:
        state = f"downloaded ({r['size'] / 2**20:.0f} MiB)" if r["path"] else "not downloaded"
        print(f"  {r['name']:<17} {r['description']:<48} {state}")
    print("fetch one with: glide download NAME")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .download import download

    path = download(args.name, dest_dir=args.cache_dir, force=args.force, progress=not args.quiet)
    print(path)
    return 0


def _openai_options(path: Path | None):
    """A GlideConfig from a JSON file of OpenAI `create_model_and_diffusion` keywords, or None."""
    if path is None:
        return None
    from .config import from_openai_options

    try:
        options = json.loads(Path(path).read_text())
    except OSError as e:
        raise GlidekitError(f"cannot read options file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise GlidekitError(f"options file {path} is not valid JSON: {e}") from None
    if not isinstance(options, dict):
        raise GlidekitError(f"options file {path} must hold a JSON object of GLIDE options")
    return from_openai_options(options)


def _cmd_info(args: argparse.Namespace) -> int:
    from .config import config_to_dict
    from .io import load_model

    model, kind, config = load_model(args.model, config=_openai_options(args.options))
    n = sum(p.numel() for p in model.parameters())
    info = {"model": str(args.model), "kind": kind, "parameters": n, "config": config_to_dict(config)}
    print(json.dumps(info, indent=2))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .io import convert_official

    dst = Path(args.output)
    if dst.suffix != ".safetensors":
        raise GlidekitError(f"output must end in .safetensors, got {dst.name}")
    kind = convert_official(args.checkpoint, dst, config=_openai_options(args.options))
    print(f"wrote {dst} ({kind})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(threads=args.threads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glide",
        description="glidekit: GLIDE text-guided diffusion, weight-compatible with OpenAI's released checkpoints.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("models", help="list the official models and whether they are downloaded")
    s.add_argument("--cache-dir", type=Path, default=None, help="download folder (default: $GLIDEKIT_CACHE or ~/.cache/glidekit)")
    s.set_defaults(func=_cmd_models)

    s = sub.add_parser("download", help="fetch an official checkpoint from OpenAI into the cache")
    s.add_argument("name", help="preset name (see `glide models`) or an http(s) URL")
    s.add_argument("--cache-dir", type=Path, default=None, help="download folder (default: $GLIDEKIT_CACHE or ~/.cache/glidekit)")
    s.add_argument("--force", action="store_true", help="download again even if a verified copy exists")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_download)

    s = sub.add_parser("info", help="identify a checkpoint (official .pt or glidekit .safetensors) and print its config")
    s.add_argument("model", help="a preset name (downloaded) or a checkpoint path")
    s.add_argument("--options", type=Path, default=None, metavar="JSON",
                   help="JSON file of OpenAI create_model_and_diffusion options, for a .pt that is not an official size")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("convert", help="convert an official .pt checkpoint to glidekit safetensors (config included)")
    s.add_argument("checkpoint", help="official checkpoint, e.g. base.pt")
    s.add_argument("output", help="destination .safetensors file")
    s.add_argument("--options", type=Path, default=None, metavar="JSON",
                   help="JSON file of OpenAI create_model_and_diffusion options, for a .pt that is not an official size")
    s.set_defaults(func=_cmd_convert)

    s = sub.add_parser("demo", help="build the official base model, report its size and time one guided step")
    s.add_argument("--threads", type=int, default=1, help="CPU threads for timing (default 1: stable on shared cores)")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GlidekitError as e:
        print(f"glide: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glide: interrupted", file=sys.stderr)
        return 130
