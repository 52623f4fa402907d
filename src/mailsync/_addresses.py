"""Address header fields read into :class:`~mailsync.Address` values, tolerant of junk and
bounded whatever the input: the number of addresses per field is capped, most items take a
regex fast path, and only a budget of characters goes to the stdlib's character-by-character
parser (past it, addr-specs are picked out of the text).

Apart from the message model so that the modules that build messages
(:mod:`mailsync._compose`) read addresses the same way without importing it. Nothing here
does I/O; it must not import the message model.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence

from mailsync._mime import decode_header_value, unfold
from mailsync._types import Address

__all__ = ["MAX_ADDRESSES", "iter_addresses", "parse_addresses"]

#: At most this many addresses are read from one address field (all its header lines
#: together). Mail sent by mistake to 20,000 people in To exists; a million addresses is an
#: attack, and each address costs some 150 bytes: a 50 MB To header must not cost gigabytes.
MAX_ADDRESSES = 100_000
# Characters of address-list items handed to the stdlib's parser (~1 us each) per call; past
# this, and for any single item longer than _MAX_PARSED_ITEM, addr-specs are picked out with
# a regex instead. Real headers have a few short items the fast path below cannot take.
_PARSE_BUDGET = 512 * 1024
_MAX_PARSED_ITEM = 16 * 1024
_CALL_COST = 64  # a call costs as much as some 64 characters: "a, a, a, ..." is no cheaper
# Items longer than this skip the fast path's regex, whose backtracking state grows with the
# number of words it has matched (megabytes of "a a a ..." would cost gigabytes).
_MAX_SIMPLE_ITEM = 1024
# List items looked at per call: those that give no address ("(), (), ...") count too.
_MAX_ITEMS = 2 * MAX_ADDRESSES

# One item of an address list: everything up to a comma outside quoted strings and comments
# (nested comments included: an open parenthesis inside one is an item piece of its own).
_LIST_ITEM = re.compile(r'(?:[^",(]+|"(?:\\.|[^"\\])*"?|\((?:\\.|[^()\\])*\)?|\()+')
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_SPEC = rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*"
_PHRASE_WORD = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
# The items most mail is made of, which the stdlib's character-by-character parser would
# read to the same result: "a@b", "Name Words <a@b>", "\"Quoted\" <a@b>".
_SIMPLE_ITEM = re.compile(
    rf'[ \t]*(?:({_SIMPLE_SPEC})|(?:"([^"\\\r\n]*)"|({_PHRASE_WORD}(?:[ \t]+{_PHRASE_WORD})*))?'
    rf"[ \t]*<({_SIMPLE_SPEC})>)[ \t]*"
)
# An addr-spec in junk: starts where a run of address characters starts (the lookbehind
# keeps the search linear on megabytes without an "@").
_ADDR_SPEC = re.compile(r'(?<![^\s<>()\[\],;:"])[^\s<>()\[\],;:"@]+@[^\s<>()\[\],;:"]+')


def parse_addresses(values: Sequence[str], *, limit: int = MAX_ADDRESSES) -> tuple[Address, ...]:
    """Parse address header values into :class:`Address` tuples, tolerant of junk.

    Values may be raw (encoded words, 8-bit) or decoded. Each value is split into addresses
    first and the display names are decoded after, so an encoded name holding a comma stays
    one address. Groups are flattened; empty entries are dropped. At most ``limit``
    addresses are read (:data:`MAX_ADDRESSES` by default); the cost is linear in the input
    and bounded whatever it holds (see ``docs/reliability.md``).
    """
    return tuple(itertools.islice(iter_addresses(values), max(limit, 0)))


def iter_addresses(values: Sequence[str]) -> Iterator[Address]:
    """The addresses :func:`parse_addresses` reads, one at a time, without its limit on the
    number of addresses (the work per call is bounded all the same: at most
    ``2 * MAX_ADDRESSES`` list items are looked at)."""
    budget = _PARSE_BUDGET
    items = _MAX_ITEMS
    for value in values:
        for match in _LIST_ITEM.finditer(unfold(str(value))):
            item = match.group(0)
            if item.isspace():
                continue
            items -= 1
            if items < 0:
                return
            simple = _SIMPLE_ITEM.fullmatch(item) if len(item) <= _MAX_SIMPLE_ITEM else None
            if simple is not None:
                yield _simple_address(*simple.groups())
                continue
            budget -= len(item) + _CALL_COST
            pairs = _stdlib_pairs(item) if budget >= 0 and len(item) <= _MAX_PARSED_ITEM else None
            if pairs is None:
                pairs = [("", found) for found in _ADDR_SPEC.findall(item)]
            for name, addr in pairs:
                decoded_name = decode_header_value(name)
                decoded_addr = "".join(decode_header_value(addr).split())
                if decoded_name or decoded_addr:
                    yield Address(decoded_name, decoded_addr)


def _simple_address(
    bare: str | None, quoted: str | None, words: str | None, spec: str | None
) -> Address:
    address = bare or spec or ""
    if "=?" in address:  # an encoded word where none belongs: decoded as the stdlib path does
        address = "".join(decode_header_value(address).split())
    if quoted is not None:
        return Address(decode_header_value(quoted), address)
    return Address(decode_header_value(" ".join(words.split())) if words else "", address)


def _stdlib_pairs(item: str) -> list[tuple[str, str]] | None:
    from email.utils import getaddresses  # the stdlib email package loads only when used

    try:
        return getaddresses([item])
    except Exception:  # the stdlib address parser can fail on junk: salvage addr-specs
        return None
