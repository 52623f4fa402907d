"""The documentation works as written: every code block of README.md and docs/ runs, and the
site builds with ``mkdocs build --strict``.

Blocks are found with Sybil. Each page runs top to bottom in one namespace, like a reader
pasting the blocks into one Python session (or, for ``await`` at top level, one notebook kernel):

- ``python``: run. Top-level ``await``/``async with`` run on the page's own event loop.
- ``sh``/``bash``/``console``: each ``mailsync`` (or ``python -m mailsync``) command runs
  through the CLI's ``main()`` and must exit 0; any other command must be marked skipped.
- ``toml``: becomes the page's accounts file (``$MAILSYNC_CONFIG``) and must load.
- other languages (``text``, output samples) are not code.

The marker convention, HTML comments the rendered page does not show:

- ``<!-- skip: next "why" -->`` before a block that cannot run here: it needs a real provider
  (Gmail, Outlook, an OAuth2 app), runs forever, or installs packages. The reason is required.
- ``<!-- invisible-code-block: python ... -->`` defines what the reader brings (a ``handle()``
  function, a file to attach) without showing it. There, ``__docs__`` offers
  ``setenv(name, value)``, ``write_ca(path)`` (the test CA, for a block with a private CA),
  ``accounts_file(text)`` (an accounts file the reader has) and ``install_plugin(module)`` (a
  backend plugin from docs/examples).
- ``<!-- clear-namespace -->`` starts afresh.
- ``<!-- notebook-cells -->``: from here on, blocks run inside a running event loop, as the
  cells of a Jupyter notebook do (top-level ``await`` works, and so must the sync API).

Every page runs in a fresh home, data and config directory and a temp working directory.
Server URLs in the docs use documentation hosts (``imap.example.com``, ``smtp.example.net``,
``mail.corp.internal``...): they are pointed at the test Dovecot and Postfix, each user in a URL
gets a fresh test account (seeded with two messages, one with an attachment, with plain
imaplib), the placeholder passwords ``"..."`` and ``"app-password"`` become its real password
(any other is kept: a block may show a wrong one on purpose), and a certificate is checked
against the test CA unless the block brings its own ``SSLContext``. Nothing else in a block is
changed.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import os
import re
import shlex
import ssl
import subprocess
import sys
import unittest
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

import mailsync
from mailsync import _facade
from tests.servers import Account, MailServers

sybil = pytest.importorskip("sybil")
from sybil import Document, Example, Region  # noqa: E402
from sybil.parsers.markdown import (  # noqa: E402
    ClearNamespaceParser,
    CodeBlockParser,
    SkipParser,
)
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
DOC_HOST = re.compile(r"(^|\.)(example\.(com|net|org)|[a-z0-9-]+\.internal)$", re.IGNORECASE)
PORTS = {
    "imaps": "imaps_port",
    "imap": "imap_port",
    "pop3s": "pop3s_port",
    "pop3": "pop3_port",
    "smtps": "smtps_port",
    "smtp": "submission_port",
}


# -- evaluators ------------------------------------------------------------------------------


SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.MULTILINE)


def _snippet(match: re.Match[str]) -> str:
    """What pymdownx.snippets puts in the page: the file, from docs/."""
    return (ROOT / "docs" / match.group(1)).read_text(encoding="utf-8")


def page_loop(document: Document) -> asyncio.AbstractEventLoop:
    """The page's event loop (a notebook kernel's), made on first use."""
    loop: asyncio.AbstractEventLoop | None = getattr(document, "mailsync_loop", None)
    if loop is None:
        loop = asyncio.new_event_loop()
        document.mailsync_loop = loop  # type: ignore[attr-defined]
    return loop


def run_python(example: Example) -> None:
    """Run a block. Top-level ``await`` runs on the page's loop; after ``<!-- notebook-cells
    -->`` every block runs inside that running loop, as a Jupyter cell does."""
    __tracebackhide__ = True
    text = SNIPPET.sub(_snippet, str(example.parsed))
    source = "\n" * (example.line + example.parsed.line_offset - 1) + text
    code = compile(
        source, str(example.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )

    async def cell() -> None:
        result = eval(code, example.namespace)  # noqa: S307 - the docs' own code, on purpose
        if asyncio.iscoroutine(result):
            await result

    if getattr(example.document, "notebook_cells", False):
        page_loop(example.document).run_until_complete(cell())
    else:
        result = eval(code, example.namespace)  # noqa: S307
        if asyncio.iscoroutine(result):
            page_loop(example.document).run_until_complete(result)
    example.namespace.pop("__builtins__", None)


class NotebookCellsParser:
    """``<!-- notebook-cells -->``: the blocks after it run as Jupyter cells do."""

    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer("notebook-cells")

    @staticmethod
    def evaluate(example: Example) -> None:
        example.document.notebook_cells = True  # type: ignore[attr-defined]

    def __call__(self, document: Document) -> Iterator[Region]:
        for lexed in self.lexer(document):
            yield Region(lexed.start, lexed.end, None, self.evaluate)


def _commands(text: str) -> Iterator[list[str]]:
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            yield words


def run_shell(example: Example) -> None:
    """Run the ``mailsync`` commands of a block through the CLI; anything else is an error."""
    from mailsync._cli import main

    for words in _commands(str(example.parsed)):
        if words[:3] == ["python", "-m", "mailsync"] or words[:3] == ["python3", "-m", "mailsync"]:
            words = ["mailsync", *words[3:]]
        if words[0] != "mailsync":
            raise AssertionError(
                f"{example.path}:{example.line}: cannot run {words[0]!r} here; mark the block "
                '<!-- skip: next "why" --> if it must stay'
            )
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            status = main(words[1:])
        assert status == 0, f"{shlex.join(words)} exited {status}:\n{printed.getvalue()}"


def load_config(example: Example) -> None:
    """A TOML block is an accounts file: it becomes ``$MAILSYNC_CONFIG`` and must load."""
    Path(os.environ["MAILSYNC_CONFIG"]).write_text(str(example.parsed), encoding="utf-8")
    assert mailsync.accounts()


PARSERS = [
    CodeBlockParser("python", run_python),
    *(CodeBlockParser(language, run_shell) for language in ("sh", "bash", "console")),
    CodeBlockParser("toml", load_config),
    SkipParser(),
    ClearNamespaceParser(),
    NotebookCellsParser(),
]


# -- the documentation hosts are the test servers ---------------------------------------------


class DocServers:
    """Maps the documentation's server URLs onto the test servers, lazily."""

    def __init__(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        self._request = request
        self._monkeypatch = monkeypatch
        self._accounts: dict[str, Account] = {}
        self.used = False

    @property
    def servers(self) -> MailServers:
        servers: MailServers = self._request.getfixturevalue("mail_servers")
        return servers

    def account(self, user: str) -> Account:
        key = user.lower()
        if key not in self._accounts:
            prefix = re.sub(r"[^a-z0-9]", "", key.split("@")[0])[:10] or "doc"
            account = self.servers.new_account(prefix)
            self.servers.append_many(account, _seed_mail(account.email))
            self._accounts[key] = account
        return self._accounts[key]

    def setenv(self, name: str, value: str) -> None:
        """For an invisible block: an environment variable the reader would have set."""
        self._monkeypatch.setenv(name, value)

    def install_plugin(self, module: str) -> None:
        """For an invisible block: a backend plugin from docs/examples, as if pip-installed."""
        import importlib.util

        from mailsync import _registry

        location = ROOT / "docs" / "examples" / f"{module}.py"
        spec = importlib.util.spec_from_file_location(module, location)
        assert spec is not None
        assert spec.loader is not None
        loaded = importlib.util.module_from_spec(spec)
        self._monkeypatch.setitem(sys.modules, module, loaded)
        spec.loader.exec_module(loaded)
        scheme = module.removeprefix("mailsync_")
        self._monkeypatch.setitem(_registry._registered, scheme, loaded.SPEC)

    def accounts_file(self, text: str) -> None:
        """For an invisible block: the accounts file the reader already has (the ``work``
        account of the CLI examples); documentation hosts in it reach the test servers."""
        config = Path(os.environ["MAILSYNC_CONFIG"])
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(text, encoding="utf-8")

    def write_ca(self, path: str) -> None:
        """For a block that brings its own CA file (``corp-ca.pem``): the test servers' CA."""
        path = os.path.expanduser(path)
        Path(path).write_bytes(Path(self.servers.cafile).read_bytes())

    def parse_url(self, url: str, **options: Any) -> Any:
        parts = urlsplit(url)
        if parts.scheme not in PORTS or not DOC_HOST.search(parts.hostname or ""):
            return _real_parse_url(url, **options)
        self.used = True
        user = unquote(parts.netloc.rpartition("@")[0].split(":")[0]) or "anonymous"
        account = self.account(user)
        port = getattr(self.servers, PORTS[parts.scheme])
        mapped = f"{parts.scheme}://{account.user}@{self.servers.host}:{port}"
        if options.get("password") in (None, "...", "app-password"):  # the docs' placeholders
            options["password"] = account.password
        if not isinstance(options.get("verify"), ssl.SSLContext):
            options["verify"] = self.servers.ssl_context()
        return _real_parse_url(mapped, **options)


_real_parse_url = _facade.parse_url


def _seed_mail(recipient: str) -> list[bytes]:
    first = EmailMessage()
    first["From"] = "Bob <bob@example.com>"
    first["To"] = recipient
    first["Subject"] = "Notes from Monday"
    first["Message-ID"] = "<doc-seed-1@example.com>"
    first.set_content("The notes are attached.\n")
    first.add_attachment(b"- ship it\n", "text", "plain", filename="notes.txt")
    second = EmailMessage()
    second["From"] = "Carol <carol@example.net>"
    second["To"] = recipient
    second["Subject"] = "Lunch?"
    second["Message-ID"] = "<doc-seed-2@example.net>"
    second.set_content("Noon?\n")
    return [bytes(first), bytes(second)]


@pytest.fixture
def doc_world(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> DocServers:
    """A fresh home, data dir, config file and working directory; doc hosts -> test servers."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("MAILSYNC_DATA_DIR", str(home / ".local" / "share" / "mailsync"))
    monkeypatch.setenv("MAILSYNC_CONFIG", str(home / ".config" / "mailsync" / "config.toml"))
    (home / ".config" / "mailsync").mkdir()
    monkeypatch.chdir(work)
    world = DocServers(request, monkeypatch)
    monkeypatch.setattr(_facade, "parse_url", world.parse_url)
    return world


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_code_block_runs_or_says_why_not(page: Path, doc_world: DocServers) -> None:
    document = sybil.Sybil(PARSERS).parse(page)
    document.namespace["__docs__"] = doc_world  # invisible blocks: write_ca, setenv...
    try:
        for example in document.examples():
            try:
                example.evaluate()
            except unittest.SkipTest:
                continue
            except Exception as exc:
                raise AssertionError(
                    f"{page.relative_to(ROOT)}:{example.line}: this block fails ({exc!r}). Make "
                    "it run here (see tests/test_docs.py) or mark it "
                    '<!-- skip: next "why it cannot run" -->'
                ) from exc
    finally:
        _close_everything(document.namespace, getattr(document, "mailsync_loop", None))


def _close_everything(namespace: dict[str, Any], loop: asyncio.AbstractEventLoop | None) -> None:
    for value in namespace.values():
        if isinstance(value, mailsync.Retriever | mailsync.Sender):
            with contextlib.suppress(Exception):
                value.close()
    if loop is not None:
        for value in namespace.values():
            if isinstance(value, mailsync.AsyncRetriever | mailsync.AsyncSender):
                with contextlib.suppress(Exception):
                    loop.run_until_complete(value.aclose())
        loop.close()


SKIP = re.compile(r"<!--\s*skip:\s*(\w+)(.*?)-->", re.DOTALL)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_skipped_block_says_why(page: Path) -> None:
    for action, reason in SKIP.findall(page.read_text(encoding="utf-8")):
        if action in ("next", "start"):
            assert re.fullmatch(r'\s*"[^"]{10,}"\s*', reason), f"{page}: skip: {action}{reason}"


def test_the_marker_convention_catches_what_it_should() -> None:
    """A block that would fail is reported, and the skip marker really skips it."""
    page = "Text.\n\n```python\nraise RuntimeError('boom')\n```\n"
    marked = 'Text.\n\n<!-- skip: next "needs a real Gmail account" -->\n' + page.split("\n\n")[1]
    for text, fails in ((page, True), (marked, False)):
        document = sybil.Document(text, "page.md")
        for parser in PARSERS:
            for region in parser(document):
                document.add(region)
        outcomes = []
        for example in document.examples():
            try:
                example.evaluate()
                outcomes.append("ran")
            except unittest.SkipTest:
                outcomes.append("skipped")
            except RuntimeError:
                outcomes.append("failed")
        assert outcomes[-1] == ("failed" if fails else "skipped")


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "examples" / "mailbox-tour" / "index.html").exists()
