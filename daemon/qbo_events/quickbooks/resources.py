"""The 22 Open Connectors resources, their QuickBooks entities, and the name rules between them."""

from __future__ import annotations

import re
from typing import Final

import msgspec


class Resource(msgspec.Struct, frozen=True):
    name: str  # the Open Connectors resource name, e.g. "bill-payments"
    entity: str  # the canonical QuickBooks entity, e.g. "BillPayment"
    cdc: bool  # False: Change Data Capture refuses it, so it is polled with Query


RESOURCES: Final[tuple[Resource, ...]] = (
    Resource("bill-payments", "BillPayment", True),
    Resource("bills", "Bill", True),
    Resource("classes", "Class", True),
    Resource("credit-memos", "CreditMemo", True),
    Resource("credit-terms", "Term", True),
    Resource("currencies", "CompanyCurrency", True),
    Resource("customers", "Customer", True),
    Resource("employees", "Employee", True),
    Resource("invoices", "Invoice", True),
    Resource("journal-entries", "JournalEntry", True),
    Resource("ledger-accounts", "Account", True),
    Resource("payment-methods", "PaymentMethod", True),
    Resource("payments", "Payment", True),
    Resource("products", "Item", True),
    Resource("purchase-orders", "PurchaseOrder", True),
    Resource("refund-receipts", "RefundReceipt", True),
    Resource("sales-receipts", "SalesReceipt", True),
    Resource("tax-codes", "TaxCode", False),
    Resource("tax-rates", "TaxRate", False),
    Resource("time-activities", "TimeActivity", False),
    Resource("vendor-credits", "VendorCredit", True),
    Resource("vendors", "Vendor", True),
)

BY_NAME: Final = {r.name: r for r in RESOURCES}
BY_ENTITY: Final = {r.entity: r for r in RESOURCES}

# Entities QuickBooks sends webhooks for beyond the 22, so CloudEvents' lower-case names
# ("journalentry") can be given back their PascalCase.
_OTHER_ENTITIES: Final = (
    "Budget",
    "ChangeOrder",
    "Department",
    "Deposit",
    "Estimate",
    "JournalCode",
    "Preferences",
    "Purchase",
    "TaxAgency",
    "Transfer",
)
_CANONICAL: Final = {e.lower(): e for e in (*BY_ENTITY, *_OTHER_ENTITIES)}
_ALIASES: Final = {"currency": "CompanyCurrency"}
# Also splits an acronym from the word after it: "CDCResponse" -> "CDC-Response".
_WORD_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def canonical_entity(name: str) -> str:
    """`journalentry` -> `JournalEntry`; webhook `Currency` and REST `CompanyCurrency` agree."""
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key in _CANONICAL:
        return _CANONICAL[key]
    return name[:1].upper() + name[1:]


def object_type(entity: str) -> str:
    """The Open Connectors resource of an entity; others get their kebab-case plural."""
    canonical = canonical_entity(entity)
    resource = BY_ENTITY.get(canonical)
    if resource is not None:
        return resource.name
    kebab = _WORD_BOUNDARY.sub("-", canonical).lower()
    if kebab.endswith("es"):  # already plural: Preferences
        return kebab
    if kebab.endswith(("s", "x", "z", "ch", "sh")):
        return kebab + "es"
    if len(kebab) > 1 and kebab[-1] == "y" and kebab[-2] not in "aeiou":
        return kebab[:-1] + "ies"
    return kebab + "s"


_SEPARATORS: Final = re.compile(r"[|,\s]+")
_LONGEST_FIRST: Final = sorted(BY_NAME, key=len, reverse=True)


def parse_resource_list(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Accept a list, or the Open Connectors string form, even run together without separators.

    Raises ValueError naming the first fragment that is no known resource.
    """
    pieces = value if isinstance(value, list | tuple) else _SEPARATORS.split(value)
    names: list[str] = []
    for piece in pieces:
        text = piece.strip().lower()
        while text:
            if text[0] in "|, \t\r\n":
                text = text[1:]
                continue
            match = next((n for n in _LONGEST_FIRST if text.startswith(n)), None)
            if match is None:
                raise ValueError(f"unknown resource {text!r}; known: {', '.join(sorted(BY_NAME))}")
            if match not in names:
                names.append(match)
            text = text[len(match) :]
    return tuple(names)
