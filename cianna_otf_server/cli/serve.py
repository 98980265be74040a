"""``cianna-otf serve``: the job service as a standalone server (shared GPU node, container)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from typing import TYPE_CHECKING

from traitlets import Bool, Float, Int, List, Type

from ._common import add_common_options, info
from ..errors import StorageError, UnknownModelError, UserInputError
from ..models import DEFAULT_MODEL, ModelRegistry

if TYPE_CHECKING:
    from ..server import ServiceConfig

NAME = "serve"
TOKEN_ENV = "CIANNA_OTF_TOKEN"


#: Options kept from earlier releases, and the setting each sets (``scale`` converts the value).
LEGACY_OPTIONS: dict[str, tuple[str, float | None]] = {
    "data_dir": ("--data-dir", None),
    "root_path": ("--root-path", None),
    "default_model": ("--default-model", None),
    "data_roots": ("--data-root", None),
    "models_dirs": ("--models-dir", None),
    "allow_http_images": ("--no-http-images", None),
    "max_upload_bytes": ("--max-upload-mb", 1024.0 * 1024.0),
    "max_wait_seconds": ("--max-wait", None),
    "max_wait": ("--max-wait-ms", 1e-3),
    "compile_networks": ("--compile", None),
    "device": ("--device", None),
    "workers": ("--workers", None),
    "executor": ("--executor", None),
    "batch_size": ("--batch-size", None),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the command line: its options are the service's settings (`ServiceConfig`)."""
    from ..server import ServiceConfig

    parser = subparsers.add_parser(
        NAME,
        help="run the detection job service (IVOA UWS) as a standalone server",
        description="Serve the detection jobs over HTTP (IVOA UWS 1.1 at /async, /sync, /models, "
        "/metrics) with bearer-token authentication. Stops cleanly on SIGTERM or SIGINT; jobs that "
        "were running are queued again at the next start. Every setting of the service can be given "
        "as an option below or in a config file (--config; c.ServiceConfig.NAME = VALUE), options "
        "winning over the file.",
        epilog="example:\n  cianna-otf serve --port 8750 --data-dir /srv/cianna-otf --token SECRET\n"
        "  then: curl -H 'Authorization: Bearer SECRET' http://127.0.0.1:8750/models\n"
        "  on a Ray cluster: cianna-otf serve --executor ray --ray-address HEAD:6379",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8750, help="port to listen on (default: 8750)")
    parser.add_argument("--token", default=None,
                        help=f"the one accepted token (also ${TOKEN_ENV}); without it and without "
                        "--tokens-file a random token is made and printed")
    parser.add_argument("--tokens-file", default=None, metavar="FILE",
                        help="'TOKEN USER' lines: one token per user of a shared server")
    parser.add_argument("--auth", choices=["tokens", "hub"], default="tokens",
                        help="who the users are: 'tokens' (--token / --tokens-file, the default) or 'hub', the "
                        "users of the JupyterHub this service is registered with (JUPYTERHUB_API_TOKEN, "
                        "JUPYTERHUB_API_URL and JUPYTERHUB_SERVICE_NAME from the Hub; needs jupyterhub)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="a traitlets config file (.py or .json) setting c.ServiceConfig.NAME")
    settings = parser.add_argument_group("service settings (defaults from ServiceConfig)")
    traits = ServiceConfig.class_traits(config=True)
    settings.add_argument("--data-dir", dest="data_dir", default=None, metavar="DIR",
                          help=f"{traits['data_dir'].help}")
    settings.add_argument("--root-path", dest="root_path", default=None, help=traits["root_path"].help)
    settings.add_argument("--default-model", dest="default_model", default=None, metavar="NAME",
                          help=f"{traits['default_model'].help} (default: {DEFAULT_MODEL})")
    settings.add_argument("--models-dir", dest="models_dirs", action="append", default=None, metavar="DIR",
                          help=f"{traits['models_dirs'].help} (repeatable)")
    settings.add_argument("--data-root", dest="data_roots", action="append", default=None, metavar="DIR",
                          help=f"{traits['data_roots'].help} (repeatable)")
    settings.add_argument("--http-images", dest="allow_http_images", action="store_true", default=None,
                          help="fetch IMAGE given as an http(s) URL (see --image-url-allow; default: off)")
    settings.add_argument("--no-http-images", dest="allow_http_images", action="store_false", default=None,
                          help="refuse IMAGE given as an http(s) URL (the default)")
    settings.add_argument("--max-upload-mb", dest="max_upload_bytes", type=float, default=None,
                          help="largest upload in MB (default: 1024)")
    settings.add_argument("--max-wait", dest="max_wait_seconds", type=float, default=None,
                          help=f"{traits['max_wait_seconds'].help} (default: 300)")
    settings.add_argument("--max-wait-ms", dest="max_wait", type=float, default=None,
                          help="how long a ready patch may wait for a fuller batch, ms (default: 20)")
    settings.add_argument("--compile", dest="compile_networks", action="store_true", default=None,
                          help=traits["compile_networks"].help)
    settings.add_argument("--device", dest="device", default=None, help=f"{traits['device'].help} (default: auto)")
    settings.add_argument("--workers", dest="workers", type=int, default=None, help=f"{traits['workers'].help} (default: 1)")
    settings.add_argument("--executor", dest="executor", choices=["batching", "pool", "ray"], default=None,
                          help=f"{traits['executor'].help} (default: batching)")
    settings.add_argument("--batch-size", dest="batch_size", type=int, default=None, help=traits["batch_size"].help)
    for name, trait in traits.items():  # every other setting, named as its trait
        if name in LEGACY_OPTIONS:
            continue
        flag = "--" + name.replace("_", "-")
        default_text = f" (default: {trait.default_value!r})" if not isinstance(trait, Type) else ""
        if isinstance(trait, Bool):
            settings.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                  help=trait.help + default_text)
        elif isinstance(trait, List):
            settings.add_argument(flag, dest=name, action="append", default=None, metavar=name.upper(),
                                  help=trait.help + " (repeatable)")
        else:
            kind = {Int: int, Float: float}.get(type(trait), str)
            settings.add_argument(flag, dest=name, type=kind, default=None, metavar=name.upper(),
                                  help=trait.help + default_text)
    add_common_options(parser)
    parser.set_defaults(handler=run)


def service_config(args: argparse.Namespace) -> "ServiceConfig":
    """The configuration `args` ask for: the config file's, then the options given on the command line."""
    from traitlets.config import Config
    from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

    from ..server import ServiceConfig

    base = Config()
    if args.config:
        path = Path(args.config).expanduser()
        if not path.is_file():
            raise UserInputError(f"--config: no such file {args.config}")
        loader = JSONFileConfigLoader if path.suffix == ".json" else PyFileConfigLoader
        try:
            base = loader(path.name, str(path.parent)).load_config()
        except Exception as exc:  # a config file with an error: one line, the file named
            raise UserInputError(f"--config {args.config}: {exc}") from None
    given: dict[str, object] = {}
    for name in ServiceConfig.class_trait_names(config=True):
        value = getattr(args, name, None)
        if value is None:
            continue
        scale = LEGACY_OPTIONS.get(name, ("", None))[1]
        if scale is not None:
            value = type(ServiceConfig.class_traits()[name].default_value)(value * scale)
        given[name] = value
    try:
        return ServiceConfig(config=base, **given)
    except Exception as exc:  # traitlets' validation errors: say which setting, and why
        raise UserInputError(f"bad setting: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Build the configuration, check it, then serve until a signal arrives."""
    from ..server import default_tokens, serve

    if not 0 < args.port < 65536:
        raise UserInputError(f"--port must be between 1 and 65535, not {args.port}")
    config = service_config(args)
    for root in config.data_roots:
        if not Path(root).expanduser().is_dir():
            raise UserInputError(f"data root {root} is not a directory")
    for folder in config.models_dirs:
        if not Path(folder).expanduser().is_dir():
            raise UserInputError(f"models directory {folder} is not a directory")
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserInputError("--device cuda was asked for but no CUDA GPU is available")
    registry = ModelRegistry(config.model_paths)
    try:  # a default that does not exist would fail every job that names no model
        registry.get(config.default_model)
    except UnknownModelError as exc:
        raise UserInputError(f"--default-model: {exc}") from None
    auth = None
    tokens: dict[str, str] | None = None
    generated = False
    if args.auth == "hub":
        from ..server._hub_auth import HubAuthenticator

        auth = HubAuthenticator()
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "")
        if args.root_path is None and prefix and config.root_path == "/":  # behind the Hub's proxy at /services/NAME/
            config.root_path = "/" + prefix.strip("/") + "/"
    else:
        token = args.token or os.environ.get(TOKEN_ENV) or None
        try:
            tokens, generated = default_tokens(token, args.tokens_file)
        except (OSError, ValueError) as exc:
            raise UserInputError(f"cannot read the tokens file: {exc}") from None
    check_job_database(config)
    info(f"serving at http://{args.host}:{args.port}{config.root_path} (data in {config.data_path}, "
         f"device {config.resolved_device()})")
    if auth is not None:
        info(f"users: those of the JupyterHub at {auth.hub.api_url} (service {auth.service_name!r})")
    if generated and tokens:
        info(f"token (send as 'Authorization: Bearer TOKEN'): {next(iter(tokens))}")
    try:
        asyncio.run(serve(config, tokens, host=args.host, port=args.port, auth=auth))
    except StorageError as exc:
        raise UserInputError(str(exc)) from None
    except OSError as exc:
        raise UserInputError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    info("stopped")
    return 0


def check_job_database(config: "ServiceConfig") -> None:
    """Open the job database once (making it if absent) and check it, before anything is served.

    A damaged file (``PRAGMA quick_check``) or an unwritable one ends the command with a message
    naming it and saying what to do, and exit status 2: serving on it would accept jobs and lose them.
    """
    from ..server._context import open_job_store

    try:
        open_job_store(config).close()
    except StorageError as exc:
        raise UserInputError(str(exc)) from None
    except OSError as exc:  # the data folder itself cannot be made
        raise UserInputError(f"cannot use the data folder {config.data_path}: {exc.strerror or exc}") from None
