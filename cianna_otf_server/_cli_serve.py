"""``cianna-otf serve``: the job service as a standalone server (shared GPU node, container)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from ._cli_common import add_common_options, add_models_dir_option, info, registry_from_args
from .errors import UnknownModelError, UserInputError
from .models import DEFAULT_MODEL

NAME = "serve"
TOKEN_ENV = "CIANNA_OTF_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the command line."""
    parser = subparsers.add_parser(
        NAME,
        help="run the detection job service (IVOA UWS) as a standalone server",
        description="Serve the detection jobs over HTTP (IVOA UWS 1.1 at /async, /sync, /models, "
        "/metrics) with bearer-token authentication. Stops cleanly on SIGTERM or SIGINT; jobs that "
        "were running are queued again at the next start.",
        epilog="example:\n  cianna-otf serve --port 8750 --data-dir /srv/cianna-otf --token SECRET\n"
        "  then: curl -H 'Authorization: Bearer SECRET' http://127.0.0.1:8750/models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8750, help="port to listen on (default: 8750)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="jobs database and job files (default: ~/.local/share/cianna-otf/service)")
    parser.add_argument("--token", default=None,
                        help=f"the one accepted token (also ${TOKEN_ENV}); without it and without "
                        "--tokens-file a random token is made and printed")
    parser.add_argument("--tokens-file", default=None, metavar="FILE",
                        help="'TOKEN USER' lines: one token per user of a shared server")
    parser.add_argument("--data-root", action="append", default=[], metavar="DIR",
                        help="directory from which IMAGE may be given as a path (repeatable)")
    parser.add_argument("--no-http-images", action="store_true", help="refuse IMAGE given as an http(s) URL")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--workers", type=int, default=1, help="jobs run at once (default: 1)")
    parser.add_argument("--default-model", default=DEFAULT_MODEL, metavar="NAME",
                        help=f"model of the jobs that name none (default: {DEFAULT_MODEL})")
    parser.add_argument("--max-upload-mb", type=float, default=1024.0, help="largest upload in MB (default: 1024)")
    parser.add_argument("--max-wait", type=float, default=300.0,
                        help="cap of blocking WAIT in seconds (default: 300; pyvo gives up at 600)")
    parser.add_argument("--executor", choices=["batching", "pool"], default="batching",
                        help="batching scheduler (default) or one job per worker thread")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="patches per batch (default: 2 on a CPU, 64 on a GPU)")
    parser.add_argument("--max-wait-ms", type=float, default=20.0,
                        help="how long a ready patch may wait for a fuller batch (default: 20 ms)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks on GPUs: about 1.8x faster once each batch size "
                        "has compiled (the first batches of each size take a minute)")
    parser.add_argument("--root-path", default="/", help="URL path of the service root behind a proxy (default: /)")
    add_models_dir_option(parser)
    add_common_options(parser)
    parser.set_defaults(handler=run)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cianna-otf" / "service"


def _device(name: str) -> str:
    if name != "auto":
        if name.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UserInputError("--device cuda was asked for but no CUDA GPU is available")
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(args: argparse.Namespace) -> int:
    """Build the settings, then serve until a signal arrives."""
    from .server import ServiceSettings, default_tokens, serve

    if not 0 < args.port < 65536:
        raise UserInputError(f"--port must be between 1 and 65535, not {args.port}")
    if args.workers < 1:
        raise UserInputError("--workers must be at least 1")
    for root in args.data_root:
        if not Path(root).is_dir():
            raise UserInputError(f"data root {root} is not a directory")
    registry = registry_from_args(args)  # checks the --models-dir folders
    models_dirs = [Path(d).expanduser() for d in getattr(args, "models_dir", None) or []]
    try:  # a default that does not exist would fail every job that names no model
        registry.get(args.default_model)
    except UnknownModelError as exc:
        raise UserInputError(f"--default-model: {exc}") from None
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        tokens, generated = default_tokens(token, args.tokens_file)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read the tokens file: {exc}") from None
    settings = ServiceSettings(
        data_dir=Path(args.data_dir).expanduser() if args.data_dir else default_data_dir(),
        root_path=args.root_path,
        models_dirs=models_dirs,
        data_roots=[Path(p).expanduser() for p in args.data_root],
        allow_http_images=not args.no_http_images,
        device=_device(args.device),
        workers=args.workers,
        default_model=args.default_model,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_wait_seconds=args.max_wait,
        executor=args.executor,
        batch_size=args.batch_size,
        max_wait=args.max_wait_ms / 1000.0,
        compile_networks=args.compile,
    )
    info(f"serving at http://{args.host}:{args.port}{settings.root_path} (data in {settings.data_dir}, "
         f"device {settings.device})")
    if generated:
        info(f"token (send as 'Authorization: Bearer TOKEN'): {next(iter(tokens))}")
    try:
        asyncio.run(serve(settings, tokens, host=args.host, port=args.port))
    except OSError as exc:
        raise UserInputError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    info("stopped")
    return 0
