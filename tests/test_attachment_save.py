"""``Attachment.save`` never writes outside its directory, whatever the sender named the file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mailsync
from mailsync import Attachment, Message
from mailsync._mime import safe_filename

DATA = b"attachment bytes"


def snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def save(directory: Path, filename: str | None, content_type: str = "application/pdf") -> Path:
    """Save into ``directory`` (under a sandbox root) and check nothing escaped."""
    sandbox = directory.parent
    before = snapshot(sandbox)
    path = Attachment(filename, content_type, DATA).save(directory)
    created = snapshot(sandbox) - before
    assert created == {path}, f"{filename!r} wrote {created}"
    assert path.parent == directory.resolve()
    assert path.is_absolute()
    assert path.read_bytes() == DATA
    assert not path.is_symlink()
    assert not path.name.startswith(".")
    assert not path.name.endswith((".", " "))
    assert len(path.name.encode("utf-8")) <= 255
    assert all(ord(ch) >= 32 and ch not in "/\\" for ch in path.name)
    return path


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    directory = tmp_path / "inbox"
    directory.mkdir()
    return directory


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("/etc/passwd", "passwd"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.dll", "evil.dll"),
        ("C:\\Users\\bob\\report.pdf", "report.pdf"),
        ("dir/sub/", "attachment.pdf"),
        ("..", "attachment.pdf"),
        (".", "attachment.pdf"),
        ("...", "attachment.pdf"),
        (" . . . ", "attachment.pdf"),
        ("   ", "attachment.pdf"),
        ("", "attachment.pdf"),
        (None, "attachment.pdf"),
        (".bashrc", "bashrc"),
        ("..hidden.txt", "hidden.txt"),
        (". .hidden", "hidden"),
        ("report.pdf.", "report.pdf"),
        ("report.pdf   ", "report.pdf"),
        ("con", "_con"),
        ("CON.txt", "_CON.txt"),
        ("nul.tar.gz", "_nul.tar.gz"),
        ("lpt1", "_lpt1"),
        ("aux.", "_aux"),
        ("console.txt", "console.txt"),
        ('a:b?c*d|e<f>g"h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("new\nline\r.txt", "newline.txt"),
        ("nul\x00byte.txt", "nulbyte.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override dropped
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ("\u2024\u2024/\u2024\u2024/etc/passwd", "passwd"),  # one-dot leaders become dots
        ("..\uff0f..\uff0fetc\uff0fpasswd", "passwd"),  # fullwidth solidus becomes a slash
        ("\uff43\uff4f\uff4e", "_con"),  # fullwidth "con"
        ("\udce9t\udce9.txt", "t.txt"),  # lone surrogates from undecodable bytes
        ("résumé.pdf", "résumé.pdf"),
        ("cafe\u0301.txt", "café.txt"),  # normalised to NFC
    ],
)
def test_hostile_names(inbox: Path, filename: str | None, expected: str) -> None:
    assert save(inbox, filename).name == expected


@pytest.mark.parametrize(
    "filename",
    [
        "a" * 300 + ".pdf",
        "日" * 300 + ".pdf",
        "x." + "e" * 300,
        "😀" * 100,
        "é" * 250 + ".tar.gz",
    ],
)
def test_very_long_names_are_cut_to_fit(inbox: Path, filename: str) -> None:
    first = save(inbox, filename)
    second = save(inbox, filename)  # the " (1)" suffix must still fit
    assert len(first.name.encode("utf-8")) <= 200
    assert second.name != first.name
    if filename.endswith(".pdf"):
        assert first.name.endswith(".pdf")
        assert second.name.endswith(" (1).pdf")


def test_collisions_are_suffixed_never_overwritten(inbox: Path) -> None:
    (inbox / "report.pdf").write_bytes(b"precious")
    paths = [save(inbox, "report.pdf") for _ in range(3)]
    assert [p.name for p in paths] == ["report (1).pdf", "report (2).pdf", "report (3).pdf"]
    assert (inbox / "report.pdf").read_bytes() == b"precious"
    assert save(inbox, "README").name == "README"
    assert save(inbox, "README").name == "README (1)"


def test_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"untouched")
    (inbox / "report.pdf").symlink_to(outside)
    (inbox / "dangling.pdf").symlink_to(tmp_path / "does-not-exist")
    assert save(inbox, "report.pdf").name == "report (1).pdf"
    assert save(inbox, "dangling.pdf").name == "dangling (1).pdf"
    assert outside.read_bytes() == b"untouched"
    assert not (tmp_path / "does-not-exist").exists()


def test_directory_given_as_a_string_and_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rel").mkdir()
    monkeypatch.chdir(tmp_path)
    path = Attachment("x.txt", "text/plain", DATA).save("rel")
    assert path == tmp_path.resolve() / "rel" / "x.txt"


def test_a_missing_directory_is_created(tmp_path: Path) -> None:
    path = Attachment("x.txt", "text/plain", DATA).save(tmp_path / "new" / "deeper")
    assert path == tmp_path.resolve() / "new" / "deeper" / "x.txt"
    assert path.read_bytes() == DATA


def test_a_directory_that_cannot_be_made_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"in the way")
    with pytest.raises(mailsync.StorageError) as info:
        Attachment("x.txt", "text/plain", DATA).save(tmp_path / "file" / "sub")
    assert isinstance(info.value, OSError)  # ``except OSError`` keeps working
    assert str(tmp_path / "file" / "sub") in str(info.value)


def test_delivery_report_parts_are_named_by_what_they_are(tmp_path: Path) -> None:
    raw = (
        b"From: MAILER-DAEMON@example.test\r\nSubject: Undelivered Mail\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n"
        b"--r\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.test\r\n\r\nFinal-Recipient: rfc822; x@example.test\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--r\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: a@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
        b"--r--\r\n"
    )
    names = [a.save(tmp_path).name for a in Message(raw).attachments]
    assert names == ["delivery-status.txt", "original-message.eml"]


def test_extension_follows_the_content_type_when_there_is_no_name(inbox: Path) -> None:
    assert save(inbox, None, "text/plain").name == "attachment.txt"
    assert save(inbox, None, "message/rfc822").name == "original-message.eml"
    assert save(inbox, None, "text/rfc822-headers").name == "original-headers.txt"
    assert save(inbox, None, "application/x-unknown-thing").name == "attachment.bin"
    assert save(inbox, None, "garbage").name == "attachment (1).bin"


def test_attachments_parsed_from_a_hostile_message_save_safely(inbox: Path) -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment;"
        b' filename="../../../../tmp/evil.sh"\r\n\r\necho pwned\r\n'
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment;"
        b" filename*=utf-8''%2E%2E%2F%2E%2E%2F.profile\r\n\r\nexport X=1\r\n"
        b"--b--\r\n"
    )
    names = [save_attachment.save(inbox).name for save_attachment in Message(raw).attachments]
    assert names == ["evil.sh", "profile"]
    assert sorted(p.name for p in inbox.iterdir()) == ["evil.sh", "profile"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_any_name_stays_inside(filename: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        directory = Path(root) / "inbox"
        directory.mkdir()
        save(directory, filename)
        assert os.listdir(root) == ["inbox"]


@given(st.text(max_size=300))
def test_safe_filename_is_idempotent(filename: str) -> None:
    once = safe_filename(filename)
    assert safe_filename(once) == once
