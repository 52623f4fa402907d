"""Developer tasks: ``nox -s lint typecheck tests`` (and ``docs``).

Each session installs what it needs into its own virtualenv, so a fresh machine needs only
``pip install nox``. The server tests start Dovecot, Postfix and Cyrus from the system
binaries (``apt-get install dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix cyrus-common
cyrus-caldav sasl2-bin``; tests/cyrus.py fetches Cyrus's imapd and pop3d itself), and the fleet
tests also start PostgreSQL and Redis (``apt-get install postgresql redis-server``); without
them those tests skip with the reason, except under CI, where they must run. The tests session also
checks the documentation: every code block of README.md and docs/ runs, the example notebook
executes, and the site builds with ``mkdocs build --strict`` (tests/test_docs.py); ``docs`` only
builds it.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (pass pytest arguments after --)."""
    session.install("-e", ".[dev,async]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")  # pinned: a new release must not turn CI red by itself
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[dev,async]")
    session.run("mypy", "--strict", "src/mailsync")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
