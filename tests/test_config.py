"""URL parsing, options, secrets and the scheme registry."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync import _registry
from mailsync._config import Secret, Timeout, TokenProvider, parse_url


def test_user_with_at_sign_and_default_ports() -> None:
    ep = parse_url("imap://alice@example.test@mail.example.test")
    assert (ep.scheme, ep.username, ep.host, ep.port, ep.tls) == (
        "imap",
        "alice@example.test",
        "mail.example.test",
        143,
        "starttls",
    )
    assert parse_url("imaps://h").port == 993
    assert parse_url("imaps://h").tls == "ssl"
    assert parse_url("pop3s://h").port == 995
    assert parse_url("pop3://h").port == 110
    assert parse_url("smtps://h").port == 465
    assert parse_url("smtp://h").port == 587
    assert parse_url("smtp://h", tls="none").port == 25
    assert parse_url("imap://h", tls="ssl").port == 993


def test_explicit_port_and_ipv6() -> None:
    assert parse_url("imap://u@127.0.0.1:10143").port == 10143
    ep = parse_url("imaps://u@[::1]:1993")
    assert (ep.host, ep.port) == ("::1", 1993)


def test_password_in_url_is_decoded_and_hidden() -> None:
    ep = parse_url("imaps://alice@example.test:p%40ss%3Aword@host")
    assert ep.password is not None
    assert ep.password.reveal() == "p@ss:word"
    for text in (repr(ep), str(ep), ep.url, ep.display, ep.account_key):
        assert "p@ss" not in text
        assert "p%40ss" not in text


def test_password_keyword_wins_over_url() -> None:
    ep = parse_url("imaps://u:fromurl@host", password="fromkw")
    assert ep.password is not None
    assert ep.password.reveal() == "fromkw"


def test_secret_never_shows() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"


def test_token_callable_is_called_per_connection() -> None:
    calls = []

    def token() -> str:
        calls.append(1)
        return f"tok{len(calls)}"

    provider = TokenProvider(token)
    assert provider.fresh() == "tok1"
    assert provider.get() == "tok1"  # cached
    assert provider.fresh() == "tok2"
    assert "tok" not in repr(provider)
    with pytest.raises(mailsync.ConfigError):
        TokenProvider(lambda: "").fresh()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty"),
        ("nonsense", "scheme"),
        ("imap://", "no host"),
        ("imap://user@host:99999", "port"),
        ("imap://user@host:abc", "port"),
        ("imap:host", "expected"),
        ("maildir:", "path"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, fragment: str) -> None:
    with pytest.raises(mailsync.ConfigError, match=fragment):
        parse_url(url)


def test_bad_url_message_hides_password() -> None:
    with pytest.raises(mailsync.ConfigError) as info:
        parse_url("imap://alice:topsecret@host:notaport")
    assert "topsecret" not in str(info.value)


def test_bad_tls_and_verify() -> None:
    with pytest.raises(mailsync.ConfigError, match="tls must be"):
        parse_url("imap://h", tls="maybe")
    with pytest.raises(mailsync.ConfigError, match="implicit TLS"):
        parse_url("imaps://h", tls="none")
    with pytest.raises(mailsync.ConfigError, match="verify"):
        parse_url("imap://h", verify="yes")  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="scheme"):
        mailsync.connect("nonsense")


def test_timeouts() -> None:
    assert Timeout.of(5).read == 5.0
    assert Timeout.of(5).connect_timeout == 5.0
    assert Timeout(read=30, connect=3).connect_timeout == 3
    assert Timeout.of(None).read is None
    with pytest.raises(mailsync.ConfigError):
        Timeout.of(-1)
    with pytest.raises(mailsync.ConfigError):
        Timeout.of("fast")  # type: ignore[arg-type]


def test_ssl_context_verifies_by_default() -> None:
    ctx = parse_url("imaps://h").ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    off = parse_url("imaps://h", verify=False).ssl_context()
    assert off.verify_mode == ssl.CERT_NONE
    mine = ssl.create_default_context()
    assert parse_url("imaps://h", verify=mine).ssl_context() is mine


def test_local_paths(tmp_path: object) -> None:
    assert parse_url("maildir:///var/mail/x").path == "/var/mail/x"
    assert parse_url("maildir:/var/mail/x").path == "/var/mail/x"
    assert parse_url("mbox:~/inbox").path.endswith("/inbox")
    assert not parse_url("mbox:~/inbox").path.startswith("~")
    assert parse_url("maildir:relative/dir").path == "relative/dir"


def test_account_key_is_stable_and_secret_free() -> None:
    a = parse_url("imaps://Alice@Example.test:pw@HOST.example")
    b = parse_url("imaps://Alice@Example.test@host.example", password="other")
    assert a.account_key == b.account_key
    assert "pw" not in a.account_key


def test_registry_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(mailsync.ConfigError, match="imaps"):
        mailsync.connect("ftp://host")


def test_registry_planned_backends_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # A scheme of its own: the planned built-in ones get backends one after the other.
    monkeypatch.setitem(_registry._BUILTIN, "future", _registry.BackendSpec(planned=True))
    with pytest.raises(mailsync.Unsupported, match="planned"):
        mailsync.connect("future://me")


def test_registry_roles_a_scheme_lacks() -> None:
    with pytest.raises(mailsync.Unsupported, match="no sender"):
        mailsync.sender("imap://host")
    with pytest.raises(mailsync.Unsupported, match="no retriever"):
        mailsync.connect("smtp://host")


def test_registry_missing_extra_names_the_install() -> None:
    spec = mailsync.BackendSpec(
        retriever="mailsync_no_such_module:Retriever", extras=(("retriever", "fancy"),)
    )
    _registry.register("x-missing", spec)
    try:
        with pytest.raises(mailsync.ConfigError, match=r'pip install "mailsync\[fancy\]"'):
            mailsync.connect("x-missing://host")
    finally:
        _registry._registered.pop("x-missing")


def test_async_imap_is_in_the_async_extra() -> None:
    spec = _registry._BUILTIN["imap"]
    assert dict(spec.extras)["async_retriever"] == "async"


def test_registry_plugins_can_add_schemes() -> None:
    spec = mailsync.BackendSpec(retriever="mailsync.backends.maildir:MaildirRetriever")
    _registry.register("x-test", spec)
    try:
        assert "x-test" in _registry.schemes()
        assert _registry.load("x-test", "retriever").__name__ == "MaildirRetriever"
    finally:
        _registry._registered.pop("x-test")


def test_retriever_repr_has_no_secret(tmp_path: object) -> None:
    box = mailsync.connect("maildir:/tmp/x", state=":memory:")
    assert "maildir" in repr(box)


def test_builtin_schemes_do_not_scan_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """connect("imap://...") must not pay for (or be hijacked by) an entry-point scan."""
    monkeypatch.setattr(_registry, "_entry_points_loaded", False)

    def boom() -> dict[str, mailsync.BackendSpec]:
        raise AssertionError("entry points scanned for a built-in scheme")

    monkeypatch.setattr(_registry, "_plugins", boom)
    assert _registry.load("imaps", "retriever").__name__ == "IMAPRetriever"
    assert _registry.load("maildir", "sender").__name__ == "MaildirSender"


def test_plugins_may_fill_planned_schemes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = mailsync.BackendSpec(retriever="mailsync.backends.maildir:MaildirRetriever")
    monkeypatch.setitem(_registry._BUILTIN, "future", _registry.BackendSpec(planned=True))
    monkeypatch.setattr(_registry, "_plugins", lambda: {"future": fake, "imap": fake})
    assert _registry.load("future", "retriever").__name__ == "MaildirRetriever"
    assert _registry.load("imap", "retriever").__name__ == "IMAPRetriever"


# -- unknown options are errors that suggest the closest valid one -----------------------------


@pytest.mark.parametrize(
    ("make", "typo", "suggestion"),
    [
        (lambda **kw: mailsync.connect("maildir:/tmp/x", **kw), "timout", "timeout"),
        (lambda **kw: mailsync.connect("imaps://u@h", **kw), "verfy", "verify"),
        (lambda **kw: mailsync.connect("imaps://u@h", **kw), "batchsize", "batch_size"),
        (lambda **kw: mailsync.connect_async("pop3s://u@h", **kw), "apopp", "apop"),
        (lambda **kw: mailsync.sender("smtp://h", **kw), "retires", "retries"),
        (lambda **kw: mailsync.sender_async("smtp://h", **kw), "pipelinig", "pipelining"),
        (lambda **kw: mailsync.connect("maildir:/tmp/x", **kw), "sate", "state"),
    ],
)
def test_unknown_keyword_options_name_the_closest_valid_one(
    make: Any, typo: str, suggestion: str
) -> None:
    with pytest.raises(mailsync.ConfigError) as info:
        make(**{typo: 5})
    text = str(info.value)
    assert repr(typo) in text
    assert f"did you mean {suggestion!r}" in text


def test_unknown_url_query_parameters_are_errors_too() -> None:
    with pytest.raises(mailsync.ConfigError, match=r"batchsize.*batch_size") as info:
        mailsync.connect("imaps://u@h?batchsize=5")
    assert "imaps://u@h" in str(info.value)
    assert mailsync.connect("imaps://u@h?batch_size=5").endpoint.params["batch_size"] == "5"


def test_backend_options_stay_per_scheme() -> None:
    """Each scheme takes only what its backend declares: apop is POP3's, not IMAP's."""
    mailsync.connect("pop3s://u@h", apop=True)
    with pytest.raises(mailsync.ConfigError, match="'apop' for imap"):
        mailsync.connect("imaps://u@h", apop=True)


def test_specs_that_declare_no_options_accept_any() -> None:
    spec = mailsync.BackendSpec(retriever="mailsync.backends.maildir:MaildirRetriever")
    assert spec.options is None
    _registry.register("x-anything", spec)
    try:
        box = mailsync.connect("x-anything://h", whatever=1)
        assert box.endpoint.params == {"whatever": 1}
    finally:
        _registry._registered.pop("x-anything")


# -- verify= takes the path of a private CA -----------------------------------------------------


def test_verify_takes_a_ca_file_path(tmp_path: Path) -> None:
    bundle = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
    if not bundle or not Path(bundle).is_file():
        pytest.skip("no system CA bundle file to load")
    context = parse_url("imaps://h", verify=bundle).verify
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.get_ca_certs()
    assert isinstance(parse_url("imaps://h", verify=Path(bundle)).verify, ssl.SSLContext)


def test_verify_path_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(mailsync.ConfigError, match="no CA certificate file") as info:
        mailsync.connect("imaps://h", verify=str(tmp_path / "missing.pem"))
    assert "missing.pem" in str(info.value)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(mailsync.ConfigError, match=r"junk\.pem"):
        mailsync.sender("smtps://h", verify=junk)
    with pytest.raises(mailsync.ConfigError, match="verify must be"):
        parse_url("imaps://h", verify=3)  # type: ignore[arg-type]


def test_api_backends_declare_in_the_registry_what_their_api_reads() -> None:
    """The registry spells out a MailAPI's options (importing none): they must agree."""
    import importlib

    for scheme, (module, name) in {
        "graph": ("mailsync.protocol.graph", "GraphAPI"),
        "gmail": ("mailsync.protocol.gmail", "GmailAPI"),
        "jmap": ("mailsync.protocol.jmap", "JMAPAPI"),
    }.items():
        api = getattr(importlib.import_module(module), name)
        assert _registry.spec_for(scheme).options == api.options
