"""``folders``: list the folders of an account."""

from __future__ import annotations

import argparse
import json

from mailsync._cli._common import Commands, Output, add_command, open_retriever

__all__ = ["register"]


def register(commands: Commands) -> None:
    """Add ``folders``."""
    parser = add_command(
        commands,
        "folders",
        summary="List the folders of an account, with their special use (\\Sent, \\Trash...).",
        examples=[
            ("mailsync folders work", "one folder per line"),
            ("mailsync folders maildir:~/Mail --json", "name, delimiter and special use"),
        ],
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(run=run_folders)


def run_folders(args: argparse.Namespace, out: Output) -> int:
    """``mailsync folders``."""
    with open_retriever(args) as box:
        for folder in box.folders():
            if args.json:
                found = {
                    "name": folder.name,
                    "delimiter": folder.delimiter,
                    "special_use": folder.special_use,
                }
                out.line(json.dumps(found, ensure_ascii=False))
            else:
                out.line(folder.name + (f"  {folder.special_use}" if folder.special_use else ""))
    return 0
